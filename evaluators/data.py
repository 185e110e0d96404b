"""Image-classification data for accuracy proxies and short training runs.

Sources are chosen by name from a registry (``register_dataset``): ``fashion-mnist`` (default),
``cifar10``, ``cifar100`` and ``imagefolder:PATH``. A source returns a ``DataSplits`` of two
splits, ``train`` and ``val`` (the official test split serves as validation for Fashion-MNIST and
CIFAR). Small datasets are held in memory as uint8 ``(N, C, H, W)`` tensors with int64 labels, so
they can be moved to the GPU once; an image folder is read lazily (PIL) but yields the same format.

Batches are made on the device, per batch: uint8 -> float, resize to the model's resolution
(bilinear, antialiased when shrinking), grayscale expanded to 3 channels, ImageNet normalisation
(timm's data config). Shuffling and subsets use seeded ``torch.Generator`` objects only.

A missing or malformed dataset raises one ``DatasetError`` (a ``ValueError``) that says what was
expected where and how to install it or point to it.

    >>> from evaluators.data import load_dataset, BatchLoader
    >>> data = load_dataset("fashion-mnist")                 # doctest: +SKIP
    >>> loader = BatchLoader(data.train, batch_size=64, resolution=64, device="cpu", seed=0)  # doctest: +SKIP
    >>> images, labels = next(iter(loader))                  # (64, 3, 64, 64) float, (64,) int64  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import gzip
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from search_spaces.config import as_resolution

if TYPE_CHECKING:
    from .augment import Augment
    from .composed import ComposedStream

__all__ = [
    "DatasetError", "ImageData", "ImageFolderData", "StreamData", "DataSplits", "BatchLoader", "DATASETS",
    "register_dataset", "list_datasets", "load_dataset", "normalization", "prepare_images", "sample_batch",
    "FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
SPLITS = ("train", "val")

DeviceLike = Union[str, torch.device, None]


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message says what was expected where and how to fix it."""


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def _check_subset(n: Optional[int], total: int, name: str) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}={n!r} must be a positive integer (number of images)")
    if n > total:
        raise ValueError(f"{name}={n} exceeds the {total} images of the split")


def subset_indices(total: int, n: int, *, seed: int) -> torch.Tensor:
    """The first ``n`` of a seeded permutation of ``range(total)`` (int64, CPU)."""
    _check_subset(n, total, "subset")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=g)[:n]


@dataclass(frozen=True)
class ImageData:
    """One split held in memory: uint8 images ``(N, C, H, W)`` and int64 labels, on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    split: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"{self.name}/{self.split}: images must be uint8 (N, C, H, W), got "
                               f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.name}/{self.split}: labels must be int64 (N,) matching the images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: DeviceLike) -> "ImageData":
        """The same split with images and labels on ``device`` (copied once; no-op when already there)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        if self.images.device == device:
            return self
        return ImageData(self.images.to(device), self.labels.to(device), self.classes, self.name, self.split,
                         self.source)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels at ``indices`` (on this split's device)."""
        idx = indices.to(self.images.device)
        return self.images[idx], self.labels[idx]

    def subset(self, n: Optional[int], *, seed: int = 0) -> "ImageData":
        """``n`` images chosen by a seeded permutation (all of them when ``n`` is None)."""
        if n is None or n == len(self):
            _check_subset(n, len(self), "subset")
            return self
        idx = subset_indices(len(self), n, seed=seed).to(self.images.device)
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.name, self.split, self.source)


@dataclass(frozen=True)
class ImageFolderData:
    """One split of an ImageNet-style folder, read lazily with PIL.

    Each image is converted to RGB, its shorter side resized to ``image_size`` and centre-cropped
    to ``image_size`` x ``image_size`` when loaded, so batches are uint8 ``(B, 3, S, S)`` like the
    in-memory sources; the batch is then resized to the model's resolution on the device.
    """

    paths: tuple[str, ...]
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    split: str
    source: str = ""
    image_size: int = 224
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return 3

    def to(self, device: DeviceLike) -> "ImageFolderData":
        device = torch.device(device) if device is not None else torch.device("cpu")
        return ImageFolderData(self.paths, self.labels.to(device), self.classes, self.name, self.split, self.source,
                               self.image_size, device)

    def _load(self, path: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        s = self.image_size
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                scale = s / min(w, h)
                nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
                img = img.resize((nw, nh), Image.Resampling.BILINEAR)
                left, top = (nw - s) // 2, (nh - s) // 2
                img = img.crop((left, top, left + s, top + s))
                return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DatasetError(f"{self.name}/{self.split}: cannot read image {path}: {e}") from None

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = indices.cpu().tolist()
        arr = np.stack([self._load(self.paths[i]) for i in idx]) if idx else np.zeros((0, 3, self.image_size,
                                                                                      self.image_size), np.uint8)
        images = torch.from_numpy(arr).to(self.device)
        return images, self.labels[indices.to(self.labels.device)]

    def subset(self, n: Optional[int], *, seed: int = 0) -> "ImageFolderData":
        if n is None or n == len(self):
            _check_subset(n, len(self), "subset")
            return self
        idx = subset_indices(len(self), n, seed=seed)
        return ImageFolderData(tuple(self.paths[i] for i in idx.tolist()), self.labels[idx.to(self.labels.device)],
                               self.classes, self.name, self.split, self.source, self.image_size, self.device)


@dataclass(frozen=True)
class StreamData:
    """A training split drawn afresh for every batch (``evaluators.composed.ComposedStream``).

    ``len`` is a nominal epoch, so epochs and steps mean what they mean for a fixed set of that
    size; ``BatchLoader`` asks the stream for new images with its own seeded device generator
    instead of indexing. ``subset(n)`` sets the nominal epoch to ``n`` images.
    """

    stream: ComposedStream
    nominal: int
    classes: tuple[str, ...]
    name: str
    split: str
    source: str = ""

    def __len__(self) -> int:
        return self.nominal

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return 1

    @property
    def image_size(self) -> tuple[int, int]:
        return self.stream.spec.canvas, self.stream.spec.canvas

    @property
    def device(self) -> torch.device:
        return self.stream.device

    def to(self, device: DeviceLike) -> "StreamData":
        device = torch.device(device) if device is not None else torch.device("cpu")
        return StreamData(self.stream.to(device), self.nominal, self.classes, self.name, self.split, self.source)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` new images and labels (on this split's device; ``generator`` must live there too)."""
        return self.stream.draw(n, generator)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{self.name}/{self.split} is drawn afresh for every batch: it has no images to index "
                        f"(use BatchLoader, which draws from it)")

    def subset(self, n: Optional[int], *, seed: int = 0) -> "StreamData":
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"subset={n!r} must be a positive integer (number of images)")
        return StreamData(self.stream, n, self.classes, self.name, self.split, self.source)


Split = Union[ImageData, ImageFolderData, StreamData]


@dataclass(frozen=True)
class DataSplits:
    """The ``train`` and ``val`` splits of one dataset."""

    name: str
    train: Split
    val: Split

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    def to(self, device: DeviceLike) -> "DataSplits":
        """Both splits on ``device`` (in-memory images are copied there once)."""
        return DataSplits(self.name, self.train.to(device), self.val.to(device))

    def summary(self) -> str:
        t = self.train
        size = (f"{t.image_size}x{t.image_size}" if isinstance(t, ImageFolderData)
                else f"{t.image_size[0]}x{t.image_size[1]}")
        train = (f"{len(t)} train" if not isinstance(t, StreamData)
                 else f"train drawn afresh per batch (epoch = {len(t)})")
        return (f"{self.name}: {train} / {len(self.val)} val images, {self.num_classes} classes, "
                f"{t.channels}x{size} uint8")


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
#: name -> loader(arg, *, data_dir, download, image_size) -> DataSplits. ``arg`` is the text after
#: ``name:`` (e.g. the path of ``imagefolder:PATH``), or None.
DATASETS: dict[str, Callable[..., DataSplits]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DataSplits]], Callable[..., DataSplits]]:
    """Register a loader ``fn(arg, *, data_dir, download, image_size) -> DataSplits`` under ``name``."""
    def deco(fn: Callable[..., DataSplits]) -> Callable[..., DataSplits]:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    """Registered source names (``imagefolder`` is used as ``imagefolder:PATH``)."""
    return sorted(DATASETS)


def load_dataset(name: str = "fashion-mnist", *, data_dir: Union[str, Path, None] = None, download: bool = False,
                 image_size: int = 224) -> DataSplits:
    """Load a dataset's train and val splits (on the CPU; move them with ``.to(device)``).

    Args:
        name: ``fashion-mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:PATH``.
        data_dir: folder holding the files (see each source); default: the source's standard place.
        download: allow a torchvision download when the files are missing (needs the internet).
        image_size: side of the square that lazily loaded images (``imagefolder``) are cropped to.

    Raises:
        DatasetError: the files are missing or malformed (one message, with what to do).
        ValueError: unknown name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"data={name!r} must be a dataset name; known: {', '.join(list_datasets())}")
    key, _, arg = name.partition(":")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())} (imagefolder:PATH)")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive integer")
    return DATASETS[key](arg or None, data_dir=Path(data_dir) if data_dir is not None else None,
                         download=bool(download), image_size=image_size)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# ---------------------------------------------------------------------------------------------
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes with ``ndim`` dimensions, checked for size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"malformed IDX file {path}: cannot read it ({e}); reinstall or re-download it") from None
    expected_magic = _IDX_MAGIC[ndim]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"malformed IDX file {path}: only {len(raw)} bytes (truncated header)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise DatasetError(f"malformed IDX file {path}: wrong magic number 0x{magic:08x} "
                           f"(expected 0x{expected_magic:08x} for {ndim}-d unsigned-byte data)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    header = 4 + 4 * ndim
    want = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != want:
        raise DatasetError(f"malformed IDX file {path}: {len(raw)} bytes but the header {list(dims)} needs {want} "
                           f"(truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, filename: str) -> Optional[Path]:
    for name in (filename, filename[:-3]):  # .gz, or unpacked as torchvision leaves it
        p = folder / name
        if p.is_file():
            return p
    return None


def _require_idx(folder: Path, filename: str) -> Path:
    """The IDX file ``filename`` (gzipped or not) in ``folder``; DatasetError when it has gone."""
    path = _find_idx(folder, filename)
    if path is None:
        raise DatasetError(f"Fashion-MNIST in {folder}: {filename} (or {filename[:-3]}) is missing; "
                           f"reinstall or re-download it")
    return path


def _fashion_mnist_help(where: str) -> str:
    files = ", ".join(FASHION_MNIST_FILES["train"] + FASHION_MNIST_FILES["val"])
    return (f"Fashion-MNIST not found: looked for {files} in {where}. Install it with "
            f"`apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_DIR}/), or pass "
            f"--data-dir DIR (data_dir=DIR) for a folder containing those 4 files (or a torchvision "
            f"root with FashionMNIST/raw/), or download=True (--download) where the internet is reachable")


def _fashion_mnist_folder(data_dir: Optional[Path]) -> tuple[Optional[Path], str]:
    candidates = [data_dir, data_dir / "FashionMNIST" / "raw"] if data_dir is not None else [FASHION_MNIST_DIR]
    for folder in candidates:
        if folder.is_dir() and all(_find_idx(folder, f) for s in SPLITS for f in FASHION_MNIST_FILES[s]):
            return folder, ""
    return None, " or ".join(str(c) for c in candidates)


def _torchvision_download(kind: str, root: Path) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise DatasetError(f"download=True needs torchvision ({e})") from None
    cls = {"fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[kind]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # network, disk or checksum problems: one message
        raise DatasetError(f"could not download {kind} to {root}: {type(e).__name__}: {e}") from None


def _default_download_root() -> Path:
    return Path.home() / ".cache" / "nas" / "data"


@register_dataset("fashion-mnist")
def _fashion_mnist(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """Fashion-MNIST: 60k train / 10k test 28x28 grayscale, 10 classes (IDX files)."""
    splits = _fashion_mnist_splits(data_dir, download)
    return DataSplits("fashion-mnist", splits["train"], splits["val"])


def _fashion_mnist_splits(data_dir: Optional[Path], download: bool) -> dict[str, ImageData]:
    """Fashion-MNIST's ``train`` and ``val`` splits, in memory (typed as such for the composed tasks)."""
    folder, where = _fashion_mnist_folder(data_dir)
    if folder is None and download:
        root = data_dir if data_dir is not None else _default_download_root()
        _torchvision_download("fashion-mnist", root)
        folder, where = _fashion_mnist_folder(root)
    if folder is None:
        raise DatasetError(_fashion_mnist_help(where))
    splits: dict[str, ImageData] = {}
    for split, (img_file, lbl_file) in FASHION_MNIST_FILES.items():
        ipath, lpath = _require_idx(folder, img_file), _require_idx(folder, lbl_file)
        images = read_idx(ipath, ndim=3)
        labels = read_idx(lpath, ndim=1)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"malformed Fashion-MNIST in {folder}: {ipath.name} has {images.shape[0]} images but "
                               f"{lpath.name} has {labels.shape[0]} labels")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"malformed IDX file {lpath}: label {int(labels.max())} outside 0-9")
        splits[split] = ImageData(torch.from_numpy(images.copy()).unsqueeze(1),
                                  torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES, "fashion-mnist",
                                  split, str(folder))
    return splits


# ---------------------------------------------------------------------------------------------
# composed relational tasks (evaluators.composed): the ground-truth task family
# ---------------------------------------------------------------------------------------------
#: images per split of a composed task (validation from Fashion-MNIST's test items)
COMPOSED_SIZES = {"train": 40_000, "val": 10_000}
COMPOSED_SEEDS = {"train": 0, "val": 1}
#: ``train=stream``: canvases drawn afresh for every batch; an epoch is still COMPOSED_SIZES["train"] images
STREAM = "stream"
COMPOSED_KEYS = ("canvas", "grid", "items", "train")


def parse_composed_arg(name: str, arg: Optional[str]) -> dict[str, Union[int, str]]:
    """Options of ``fmnist-<task>:ARG``: ``ARG`` is the canvas side (``fmnist-odd:96``) or
    ``key=value`` pairs, e.g. ``fmnist-odd:canvas=128,grid=4,items=5,train=stream``.

    Keys: ``canvas`` (px, default 64), ``grid`` (cells per side, default 2), ``items`` (per
    canvas, default the task's), ``train`` (training images: a number, or ``stream`` to draw every
    batch afresh). Each bad value is refused naming the key, the value and the rule.
    """
    opts: dict[str, Union[int, str]] = {"canvas": 64, "grid": 2}
    if not arg:
        return opts
    if arg.isdigit():
        opts["canvas"] = int(arg)
        return opts
    seen: set[str] = set()
    for part in arg.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in COMPOSED_KEYS:
            raise ValueError(f"data={name}:{arg}: the part after ':' is the canvas side in pixels, e.g. {name}:96, "
                             f"or key=value pairs of {', '.join(COMPOSED_KEYS)}, e.g. "
                             f"{name}:canvas=128,grid=4,items=5,train=stream ({part!r} is neither)")
        if key in seen:
            raise ValueError(f"data={name}:{arg}: {key} is given twice")
        seen.add(key)
        if key == "train" and value == STREAM:
            opts[key] = STREAM
        elif value.isdigit() and int(value) > 0:
            opts[key] = int(value)
        else:
            rule = "a positive number of images or 'stream'" if key == "train" else "a positive integer"
            raise ValueError(f"data={name}:{arg}: {key}={value!r} must be {rule}")
    return opts


def _composed(task: str, arg: Optional[str], data_dir: Optional[Path], download: bool) -> DataSplits:
    """A composed task over Fashion-MNIST items; ``arg`` as in ``parse_composed_arg``.

    Built once per process and kept (a few seconds on the CPU; the tensors are never written to).
    """
    return _composed_cached(task, arg, data_dir, download)


@functools.lru_cache(maxsize=4)
def _composed_cached(task: str, arg: Optional[str], data_dir: Optional[Path], download: bool) -> DataSplits:
    from .composed import ComposedStream, ComposeSpec, class_names, compose_split

    name = f"fmnist-{task}" + (f":{arg}" if arg else "")
    opts = parse_composed_arg(f"fmnist-{task}", arg)
    canvas, grid = int(opts["canvas"]), int(opts["grid"])
    items = int(opts["items"]) if "items" in opts else None
    train_n = opts.get("train", COMPOSED_SIZES["train"])

    def compose_spec(n: int, split: str) -> ComposeSpec:
        return ComposeSpec(task, n, seed=COMPOSED_SEEDS[split], canvas=canvas, grid=grid, items=items)

    source = _fashion_mnist_splits(data_dir, download)
    src_train, src_val = source["train"], source["val"]
    classes = class_names(task, src_train.classes)
    val_spec = compose_spec(COMPOSED_SIZES["val"], "val")
    images, labels = compose_split(src_val.images, src_val.labels, val_spec)
    val = ImageData(images, labels, classes, name, "val", f"composed from {src_val.source} ({val_spec})")
    if train_n == STREAM:
        spec = compose_spec(COMPOSED_SIZES["train"], "train")
        stream = ComposedStream(src_train.images, src_train.labels, spec)
        train: Split = StreamData(stream, COMPOSED_SIZES["train"], classes, name, "train",
                                  f"drawn afresh per batch from {src_train.source} ({spec})")
    else:
        spec = compose_spec(int(train_n), "train")
        images, labels = compose_split(src_train.images, src_train.labels, spec)
        train = ImageData(images, labels, classes, name, "train", f"composed from {src_train.source} ({spec})")
    return DataSplits(name, train, val)


@register_dataset("fmnist-odd")
def _fmnist_odd(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """Odd one out: 3 Fashion-MNIST items on a 2x2 grid (64 px; options: ``parse_composed_arg``);
    label = class of the odd item."""
    return _composed("odd", arg, data_dir, download)


@register_dataset("fmnist-pairs")
def _fmnist_pairs(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """Same or different: 2 Fashion-MNIST items on a 2x2 grid (64 px); label = same class."""
    return _composed("pairs", arg, data_dir, download)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision's pickled batches)
# ---------------------------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files: only numpy arrays, dtypes and builtin containers.

    The CIFAR files are Python pickles; refusing every other global means a doctored file
    cannot run code when read.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name} (a CIFAR batch holds only arrays and lists)")


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"malformed CIFAR file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"malformed CIFAR file {path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


@dataclass(frozen=True)
class _CifarLayout:
    """Where torchvision keeps one CIFAR variant: folder, batch files per split, meta file and keys."""

    folder: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    meta: str
    names: str  # key of the class names in the meta file
    labels: str  # key of the labels in a batch file
    classes: int

    def files(self, split: str) -> tuple[str, ...]:
        """The batch files of ``split`` (``train`` or ``val``)."""
        return self.train if split == "train" else self.val


_CIFAR = {
    "cifar10": _CifarLayout(folder="cifar-10-batches-py", train=tuple(f"data_batch_{i}" for i in range(1, 6)),
                            val=("test_batch",), meta="batches.meta", names="label_names", labels="labels",
                            classes=10),
    "cifar100": _CifarLayout(folder="cifar-100-python", train=("train",), val=("test",), meta="meta",
                             names="fine_label_names", labels="fine_labels", classes=100),
}


def _cifar_help(kind: str, where: str) -> str:
    spec = _CIFAR[kind]
    files = ", ".join((*spec.train, *spec.val, spec.meta))
    tv = "CIFAR10" if kind == "cifar10" else "CIFAR100"
    return (f"{kind} not found: expected the torchvision layout {where} with {files}. Pass --data-dir DIR "
            f"(data_dir=DIR) where DIR/{spec.folder}/ holds them (python -c \"import torchvision; "
            f"torchvision.datasets.{tv}('DIR', download=True)\" makes it), or download=True (--download) where the "
            f"internet is reachable")


def _cifar_folder(kind: str, data_dir: Optional[Path]) -> Optional[Path]:
    spec = _CIFAR[kind]
    if data_dir is None:
        return None
    for folder in (data_dir / spec.folder, data_dir):
        if folder.is_dir() and all((folder / f).is_file() for f in (*spec.train, *spec.val)):
            return folder
    return None


def _cifar(kind: str, data_dir: Optional[Path], download: bool) -> DataSplits:
    spec = _CIFAR[kind]
    folder = _cifar_folder(kind, data_dir)
    if folder is None and download:
        root = data_dir if data_dir is not None else _default_download_root()
        _torchvision_download(kind, root)
        folder = _cifar_folder(kind, root)
    if folder is None:
        where = (f"{data_dir / spec.folder}/" if data_dir is not None
                 else f"<data_dir>/{spec.folder}/ (no --data-dir given)")
        raise DatasetError(_cifar_help(kind, where))
    classes: tuple[str, ...] = tuple(str(i) for i in range(spec.classes))
    meta_path = folder / spec.meta
    if meta_path.is_file():
        meta = _load_pickle(meta_path)
        names = meta.get(spec.names)
        if not isinstance(names, (list, tuple)) or len(names) != spec.classes:
            raise DatasetError(f"malformed CIFAR file {meta_path}: {spec.names!r} must list {spec.classes} names")
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    splits: dict[str, ImageData] = {}
    for split in SPLITS:
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for fname in spec.files(split):
            path = folder / fname
            d = _load_pickle(path)
            data, raw_labels = d.get("data"), d.get(spec.labels)
            if (not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32
                    or data.dtype != np.uint8):
                got = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
                raise DatasetError(f"malformed CIFAR file {path}: 'data' must be uint8 (N, 3072), got {got}")
            lab = np.asarray(raw_labels, dtype=np.int64) if raw_labels is not None else None
            if lab is None or lab.shape != (data.shape[0],):
                raise DatasetError(f"malformed CIFAR file {path}: {spec.labels!r} must hold one label per image")
            if lab.size and (lab.min() < 0 or lab.max() >= spec.classes):
                raise DatasetError(f"malformed CIFAR file {path}: labels outside 0-{spec.classes - 1}")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(lab)
        splits[split] = ImageData(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                                  classes, kind, split, str(folder))
    return DataSplits(kind, splits["train"], splits["val"])


@register_dataset("cifar10")
def _cifar10(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """CIFAR-10: 50k train / 10k test 32x32 RGB, 10 classes (DIR/cifar-10-batches-py/)."""
    return _cifar("cifar10", data_dir, download)


@register_dataset("cifar100")
def _cifar100(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """CIFAR-100: 50k train / 10k test 32x32 RGB, 100 fine classes (DIR/cifar-100-python/)."""
    return _cifar("cifar100", data_dir, download)


# ---------------------------------------------------------------------------------------------
# ImageNet-style folder
# ---------------------------------------------------------------------------------------------
def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@register_dataset("imagefolder")
def _imagefolder(arg: Optional[str], *, data_dir: Optional[Path], download: bool, image_size: int) -> DataSplits:
    """PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg (classes from train/, sorted)."""
    if arg:
        root = Path(arg)
    elif data_dir is not None:
        root = data_dir
    else:
        raise DatasetError("imagefolder needs a path: use --data imagefolder:PATH (PATH/train/<class>/*.jpg, "
                           "PATH/val/<class>/*.jpg)")
    layout = f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg"
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder; expected {layout}")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DatasetError(f"imagefolder: {root / split}/ is missing; expected {layout}")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise DatasetError(f"imagefolder: {root / 'train'}/ has no class folders; expected {layout}")
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in SPLITS:
        paths, labels = [], []
        for cdir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if cdir.name not in index:
                raise DatasetError(f"imagefolder: class folder {cdir} has no counterpart in {root / 'train'}/ "
                                   f"(known classes: {', '.join(classes)})")
            files = _list_images(cdir)
            paths += [str(p) for p in files]
            labels += [index[cdir.name]] * len(files)
        if not paths:
            raise DatasetError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root / split}/; "
                               f"expected {layout}")
        splits[split] = ImageFolderData(tuple(paths), torch.tensor(labels, dtype=torch.int64), classes, "imagefolder",
                                        split, str(root), image_size)
    return DataSplits(f"imagefolder:{root}", splits["train"], splits["val"])


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------
def normalization(model: Optional[torch.nn.Module] = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel from timm's data config of ``model`` (ImageNet defaults without one)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config

    if model is None:
        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    cfg = resolve_data_config({}, model=model)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def _affine(mean: Union[Sequence[float], torch.Tensor], std: Union[Sequence[float], torch.Tensor],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with uint8/255 normalisation folded in: x_u8 * scale + shift = (x/255 - mean) / std."""
    m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return (1.0 / (255.0 * s)).to(device), (-m / s).to(device)


def prepare_images(images: torch.Tensor, *, resolution: Union[int, Sequence[int]], device: DeviceLike = None,
                   mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                   channels: int = 3, affine: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 ``(B, channels, *resolution)`` on ``device``, normalised.

    Resizing is bilinear, antialiased when shrinking; grayscale is expanded to ``channels``.
    Three kernels per batch (convert, resize, fused scale-and-shift); ``affine`` passes the
    precomputed ``(scale, shift)`` tensors on the device so no host copy happens per batch.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    res = as_resolution(resolution)
    x = images.to(device) if device is not None else images
    if x.shape[1] != channels and x.shape[1] != 1:
        raise ValueError(f"images have {x.shape[1]} channels; the model takes {channels}")
    x = x.float()
    if tuple(x.shape[-2:]) != res:
        shrink = res[0] < x.shape[-2] or res[1] < x.shape[-1]
        x = F.interpolate(x, size=res, mode="bilinear", align_corners=False, antialias=shrink)
    if x.shape[1] == 1 and channels != 1:
        x = x.expand(-1, channels, -1, -1)
    scale, shift = affine if affine is not None else _affine(mean, std, x.device)
    return torch.addcmul(shift, x, scale)


class BatchLoader:
    """Batches ``(images float (B, 3, R, R) normalised, labels int64)`` of one split, on a device.

    Each ``iter()`` is one epoch: a permutation drawn from a ``torch.Generator`` seeded once with
    ``seed`` (so epoch k is the same for equal seeds), or the split's order without ``shuffle``.
    In-memory uint8 data already on ``device`` is indexed there (no host copies). ``augment``
    (``evaluators.augment.Augment``) translates/flips each uint8 batch on the device first, from
    its own generator seeded with ``seed``.
    """

    def __init__(self, data: Split, *, batch_size: int, resolution: Union[int, Sequence[int]],
                 device: DeviceLike = None, shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, channels: int = 3,
                 augment: Optional["Augment"] = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if drop_last and batch_size > len(data):
            raise ValueError(f"batch_size={batch_size} exceeds the {len(data)} images of {data.name}/{data.split} "
                             f"(with drop_last no batch would be made)")
        self.data = data
        self.batch_size = batch_size
        self.resolution = as_resolution(resolution)
        self.device = torch.device(device) if device is not None else data.device
        self.shuffle = shuffle
        self.drop_last = drop_last
        dmean, dstd = normalization()
        self.mean = tuple(mean) if mean is not None else dmean
        self.std = tuple(std) if std is not None else dstd
        self.channels = channels
        self.affine = _affine(self.mean, self.std, self.device)  # on the device once, not per batch
        self.generator = torch.Generator().manual_seed(int(seed))
        self.augment = augment if augment is not None and augment.active else None
        self.aug_generator: Optional[torch.Generator] = None
        if self.augment is not None:  # on the batch's device, so augmentation never syncs with the host
            self.aug_generator = torch.Generator(device=self.device).manual_seed(int(seed) + 7919)
        self.stream_generator: Optional[torch.Generator] = None
        if isinstance(data, StreamData):  # where the stream's items live, so drawing never syncs either
            self.stream_generator = torch.Generator(device=data.device).manual_seed(int(seed) + 104729)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        """The index order of the next epoch (advances the generator when shuffling)."""
        n = len(self.data)
        return torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch at ``indices`` (for a ``StreamData`` split: ``len(indices)`` images drawn afresh)."""
        if isinstance(self.data, StreamData) and self.stream_generator is not None:  # set together in __init__
            images, labels = self.data.draw(len(indices), self.stream_generator)
        else:
            images, labels = self.data.take(indices)
        if self.augment is not None and self.aug_generator is not None:  # set together in __init__
            images = self.augment(images.to(self.device, non_blocking=True), self.aug_generator)
        x = prepare_images(images, resolution=self.resolution, device=self.device, channels=self.channels,
                           affine=self.affine)
        return x, labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        if isinstance(self.data, ImageData):
            order = order.to(self.data.device)
        for i in range(len(self)):
            yield self.batch(order[i * self.batch_size:(i + 1) * self.batch_size])


def sample_batch(data: Split, *, batch_size: int, resolution: Union[int, Sequence[int]], seed: int = 0,
                 device: DeviceLike = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of ``batch_size`` images chosen by a seeded permutation (for zero-cost proxies)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size > len(data):
        raise ValueError(f"batch_size={batch_size} exceeds the {len(data)} images of {data.name}/{data.split}")
    loader = BatchLoader(data, batch_size=batch_size, resolution=resolution, device=device, shuffle=True, seed=seed,
                         mean=mean, std=std)
    return loader.batch(subset_indices(len(data), batch_size, seed=seed))
