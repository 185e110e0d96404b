"""Datasets: Fashion-MNIST from the Debian path, CIFAR and image folders made here, batches, errors."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from evaluators.data import (
    FASHION_MNIST_DIR, FASHION_MNIST_FILES, BatchLoader, DatasetError, DataSplits, ImageData, list_datasets,
    load_dataset, normalization, prepare_images, sample_batch,
)


@pytest.fixture(scope="module")
def fmnist() -> DataSplits:
    return load_dataset("fashion-mnist")


# ------------------------------------------------------------------------------ Fashion-MNIST
def test_fashion_mnist_loads_from_debian_path(fmnist):
    assert fmnist.train.source == str(FASHION_MNIST_DIR)
    assert tuple(fmnist.train.images.shape) == (60000, 1, 28, 28)
    assert tuple(fmnist.val.images.shape) == (10000, 1, 28, 28)
    assert fmnist.train.images.dtype == torch.uint8 and fmnist.train.labels.dtype == torch.int64
    assert set(fmnist.train.labels.unique().tolist()) == set(range(10))
    assert fmnist.num_classes == 10 and fmnist.classes[0] == "T-shirt/top" and fmnist.classes[9] == "Ankle boot"
    # the classic dataset is balanced: 6000 training images per class
    assert torch.bincount(fmnist.train.labels).tolist() == [6000] * 10


def test_batches_are_3_channel_resized_and_normalised(fmnist):
    mean, std = normalization()
    loader = BatchLoader(fmnist.train, batch_size=16, resolution=48, device="cpu", seed=0)
    assert len(loader) == 60000 // 16
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 48, 48) and x.dtype == torch.float32 and y.shape == (16,)
    # channels are the same gray image, normalised per channel: undo and compare
    raw = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # a black pixel (0) maps to -mean/std in each channel
    zero = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    z = prepare_images(zero, resolution=28, mean=mean, std=std)
    assert torch.allclose(z[0, :, 0, 0], -torch.tensor(mean) / torch.tensor(std))


def test_shuffling_is_seeded(fmnist):
    def first(seed):
        return next(iter(BatchLoader(fmnist.train, batch_size=8, resolution=28, device="cpu", seed=seed)))[1]
    assert torch.equal(first(3), first(3))
    assert not torch.equal(first(3), first(4))
    loader = BatchLoader(fmnist.train, batch_size=8, resolution=28, device="cpu", seed=3)
    assert not torch.equal(next(iter(loader))[1], next(iter(loader))[1])  # next epoch, new order
    a, la = sample_batch(fmnist.train, batch_size=8, resolution=32, seed=1)
    b, lb = sample_batch(fmnist.train, batch_size=8, resolution=32, seed=1)
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_subset_and_unshuffled_order(fmnist):
    sub = fmnist.train.subset(100, seed=0)
    assert len(sub) == 100 and torch.equal(sub.labels, fmnist.train.subset(100, seed=0).labels)
    loader = BatchLoader(sub, batch_size=30, resolution=28, device="cpu", shuffle=False, drop_last=False)
    assert len(loader) == 4
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(labels, sub.labels)
    with pytest.raises(ValueError, match="subset=70000 exceeds"):
        fmnist.train.subset(70000)


def test_prepare_images_shrinks_with_antialias_and_checks_input():
    img = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    img[..., ::4, :] = 255  # one white row in four: plain bilinear at 1/4 samples only black rows
    out = prepare_images(img, resolution=4, mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (1, 3, 4, 4)
    inner = out[..., 1:3, :]  # away from the border, the antialiased shrink is the mean, 1/4
    assert torch.allclose(inner, torch.full_like(inner, 0.25), atol=0.03)
    with pytest.raises(ValueError, match="uint8"):
        prepare_images(torch.zeros(1, 3, 8, 8), resolution=4)


def test_fashion_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "val"):
        for f in FASHION_MNIST_FILES[split]:
            (raw / f).symlink_to(FASHION_MNIST_DIR / f)
    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert len(data.train) == 60000 and data.train.source == str(raw)


# ------------------------------------------------------------------------------ malformed / missing
def _write_idx(path, array, magic=None, truncate=0):
    header = struct.pack(">I", magic if magic is not None else (0x0803 if array.ndim == 3 else 0x0801))
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    payload = payload[: len(payload) - truncate] if truncate else payload
    with gzip.open(path, "wb") as f:
        f.write(payload)


def _small_fmnist(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        img_f, lbl_f = FASHION_MNIST_FILES[split]
        _write_idx(folder / img_f, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / lbl_f, np.arange(n) % 10)
    return folder


def test_small_idx_folder_loads(tmp_path):
    data = load_dataset("fashion-mnist", data_dir=_small_fmnist(tmp_path / "fm"))
    assert len(data.train) == 6 and data.train.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "nowhere") in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("damage, expected", [
    (dict(magic=0x0804), "wrong magic number"),
    (dict(truncate=100), "truncated or corrupt"),
])
def test_malformed_idx_names_the_file(tmp_path, damage, expected):
    folder = _small_fmnist(tmp_path / "fm")
    bad = folder / FASHION_MNIST_FILES["train"][0]
    _write_idx(bad, np.zeros((6, 28, 28)), **damage)
    with pytest.raises(DatasetError, match=expected) as e:
        load_dataset("fashion-mnist", data_dir=folder)
    assert str(bad) in str(e.value) and "malformed" in str(e.value)


def test_corrupt_gzip_is_malformed(tmp_path):
    folder = _small_fmnist(tmp_path / "fm")
    bad = folder / FASHION_MNIST_FILES["val"][1]
    bad.write_bytes(bad.read_bytes()[:20])  # cut inside the compressed stream
    with pytest.raises(DatasetError, match="malformed IDX file .*t10k-labels"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_label_count_mismatch(tmp_path):
    folder = _small_fmnist(tmp_path / "fm")
    _write_idx(folder / FASHION_MNIST_FILES["train"][1], np.arange(5) % 10)
    with pytest.raises(DatasetError, match="6 images but .* 5 labels"):
        load_dataset("fashion-mnist", data_dir=folder)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist3d'"):
        load_dataset("mnist3d")
    assert {"fashion-mnist", "cifar10", "cifar100", "imagefolder"} <= set(list_datasets())


# ------------------------------------------------------------------------------ CIFAR
def _cifar10_folder(root, n=4, bytes_keys=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def dump(name, obj):
        if bytes_keys:
            obj = {k.encode(): v for k, v in obj.items()}
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [i % 10] * n})
    dump("test_batch", {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))})
    dump("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return folder


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_folder_loads(tmp_path, bytes_keys):
    _cifar10_folder(tmp_path, bytes_keys=bytes_keys)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert tuple(data.train.images.shape) == (20, 3, 32, 32) and len(data.val) == 4
    assert data.classes[3] == "c3" and data.val.labels.tolist() == [0, 1, 2, 3]
    x, y = sample_batch(data.train, batch_size=4, resolution=16, seed=0)
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()


def test_cifar100_folder_loads(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("train", 6), ("test", 3)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [99, 0, 5, 7, 1, 2][:n],
                         "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    data = load_dataset("cifar100", data_dir=tmp_path)
    assert data.num_classes == 100 and len(data.train) == 6 and data.train.labels[0] == 99


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py/ with data_batch_1") as e:
        load_dataset("cifar10", data_dir=tmp_path / "none")
    assert "--data-dir" in str(e.value)
    folder = _cifar10_folder(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="malformed CIFAR file .*data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = _cifar10_folder(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(DatasetError, match="refusing global builtins.print"):
        load_dataset("cifar10", data_dir=tmp_path)


# ------------------------------------------------------------------------------ image folder
def _image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (20 + 4 * i, 30, 3), dtype=np.uint8)  # sizes differ on purpose
                Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_imagefolder_loads_lazily_in_the_same_format(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    data = load_dataset(f"imagefolder:{root}", image_size=24)
    assert data.classes == ("cat", "dog") and len(data.train) == 6 and len(data.val) == 4
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    images, labels = data.train.take(torch.tensor([0, 5]))
    assert images.dtype == torch.uint8 and tuple(images.shape) == (2, 3, 24, 24) and labels.tolist() == [0, 1]
    loader = BatchLoader(data.train, batch_size=4, resolution=16, device="cpu", seed=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    root = _image_folder(tmp_path / "imgs")
    (root / "val" / "bird").mkdir()
    with pytest.raises(DatasetError, match="class folder .*bird has no counterpart"):
        load_dataset(f"imagefolder:{root}")
    shutil.rmtree(root / "val" / "bird")
    (root / "train" / "cat" / "0.jpg").write_bytes(b"garbage")
    data = load_dataset(f"imagefolder:{root}")
    with pytest.raises(DatasetError, match="cannot read image .*0.jpg"):
        data.train.take(torch.tensor([0]))


def test_image_data_checks_its_tensors():
    with pytest.raises(DatasetError, match="uint8"):
        ImageData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",), "x", "train")
