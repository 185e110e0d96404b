"""Procedural relational tasks composed from Fashion-MNIST items: a ground truth where design matters.

Fashion-MNIST itself saturates (every FasterViT of the default space lands within ~2 points at a
short budget, and seed noise is as large as the spread). These tasks place several 28x28 items
on a larger canvas, one item per cell of a ``grid x grid`` layout, with a label that depends on
items in *different* cells. A network can only solve them by relating far-apart regions, so the
knobs that decide how information crosses the image (window size, carrier tokens / HAT, global
attention, depth of the late stages) change accuracy, not just size.

At the default 64 px canvas with a 2x2 grid, each cell is 32 px: FasterViT's stage 3 (stride 16)
sees a 4x4 token grid whose 2x2 windows (``FasterViTConfig.at_resolution(64)`` keeps FasterViT-0's
two windows per side) each cover exactly one cell. Windowed attention therefore cannot relate two
items in stage 3, carrier tokens (HAT) and a global window can, and stage 4 (one global window of
2x2 tokens) always can.

Tasks (``TASKS``; registered as datasets ``fmnist-<task>`` in ``evaluators.data``):

- ``odd``: three items in three of the four cells; two share a class, the third does not. The
  label is the class of the odd one out (10 balanced classes). Recognising the classes is not
  enough: with a mean-pooled linear head, telling {a, a, b} from {a, b, b} needs the items'
  features to interact before pooling.
- ``pairs``: two items in two of the four cells; the label says whether they are of the same
  class (balanced). A classic same/different relation (cf. SVRT, Fleuret et al. 2011).

Every canvas is generated from a fixed seed per split (train items come from the Fashion-MNIST
train split, validation items from its test split, so no item instance is shared): the task is the
same dataset on every machine, built in about a second on the CPU and kept in memory.

``ComposedStream`` draws the training canvases afresh on the device for every batch instead (an
endless training set: no two epochs alike, nothing to over-fit), from the same distribution and
without a host synchronisation, so a data-size sweep can go from a fixed set to "on the fly".
The number of items per canvas (``items``; ``odd``: one odd item among ``items - 1`` of a common
class) and the grid grow with the canvas, e.g. 5 items on a 4x4 grid of a 128 px canvas.

What it does and does not tell about ImageNet: it measures how well an architecture learns to
relate distant regions from a modest amount of data, and how fast it trains; it does not
measure texture/shape recognition at scale, resolution scaling, or transfer. It is a controlled
probe for architecture ideas, not a substitute for ImageNet accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["ComposeSpec", "ComposedStream", "TASKS", "compose_split", "ITEM_SIZE", "DEFAULT_ITEMS"]

ITEM_SIZE = 28


@dataclass(frozen=True)
class ComposeSpec:
    """How one split of a composed task is drawn."""

    task: str
    n: int
    canvas: int = 64
    grid: int = 2
    seed: int = 0
    items: Optional[int] = None  # items per canvas (None: the task's default, DEFAULT_ITEMS)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is unknown; known: {', '.join(sorted(TASKS))}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be a positive number of images")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2:
            raise ValueError(f"grid={self.grid!r} must be an integer >= 2")
        if self.canvas // self.grid < ITEM_SIZE:
            cell = self.canvas // self.grid
            raise ValueError(f"canvas={self.canvas} with grid={self.grid} gives cells of {cell} px; "
                             f"items need {ITEM_SIZE} px (canvas >= {ITEM_SIZE * self.grid})")
        k = self.n_items
        low = ITEM_RANGE[self.task][0]
        if isinstance(k, bool) or not isinstance(k, int) or not low <= k <= ITEM_RANGE[self.task][1]:
            raise ValueError(f"items={self.items!r}: task {self.task!r} places {ITEM_RANGE[self.task][0]}.."
                             f"{ITEM_RANGE[self.task][1]} items per canvas")
        if k > self.grid * self.grid:
            raise ValueError(f"items={k} do not fit the {self.grid}x{self.grid} grid ({self.grid * self.grid} cells)")

    @property
    def n_items(self) -> int:
        """Items per canvas (the task's default when ``items`` is None)."""
        return DEFAULT_ITEMS[self.task] if self.items is None else self.items


def _class_pools(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    pools = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    empty = [c for c, p in enumerate(pools) if p.numel() == 0]
    if empty:
        raise ValueError(f"the source split has no items of classes {empty}")
    return pools


def _draw_instances(pools: list[torch.Tensor], classes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random source index of each requested class (classes: any shape, int64)."""
    flat = classes.flatten()
    out = torch.empty_like(flat)
    for c, pool in enumerate(pools):
        where = torch.nonzero(flat == c).flatten()
        if where.numel():
            out[where] = pool[torch.randint(pool.numel(), (where.numel(),), generator=g)]
    return out.view_as(classes)


def _odd_classes(n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes (n, k), label (n,)): k - 1 items of class a, one of class b != a, in random slots."""
    dev = g.device
    odd = torch.randint(10, (n,), generator=g, device=dev)
    common = (odd + torch.randint(1, 10, (n,), generator=g, device=dev)) % 10
    slot = torch.randint(k, (n,), generator=g, device=dev)
    classes = common[:, None].repeat(1, k)
    classes[torch.arange(n, device=dev), slot] = odd
    return classes, odd


def _pairs_classes(n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes (n, 2), label (n,)): label 1 when both items share a class (half of the images)."""
    dev = g.device
    same = torch.randint(2, (n,), generator=g, device=dev)
    a = torch.randint(10, (n,), generator=g, device=dev)
    b = torch.where(same.bool(), a, (a + torch.randint(1, 10, (n,), generator=g, device=dev)) % 10)
    return torch.stack([a, b], dim=1), same


TASKS: dict[str, tuple[Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]] = {
    "odd": (_odd_classes, ()),  # class names: the source's (filled in by the loader)
    "pairs": (_pairs_classes, ("different", "same")),
}
#: items per canvas by default, and the range a spec may ask for
DEFAULT_ITEMS = {"odd": 3, "pairs": 2}
ITEM_RANGE = {"odd": (3, 16), "pairs": (2, 2)}


def _paste(items: torch.Tensor, cells: torch.Tensor, spec: ComposeSpec, g: torch.Generator) -> torch.Tensor:
    """Canvases (n, 1, S, S) uint8 with ``items[:, k]`` pasted into cell ``cells[:, k]`` (+ jitter)."""
    n, k = cells.shape
    size = spec.canvas
    cell = size // spec.grid
    dev = g.device
    canvas = torch.zeros(n, size, size, dtype=torch.uint8, device=dev)
    rows = torch.arange(n, device=dev)[:, None, None]
    ar = torch.arange(ITEM_SIZE, device=dev)
    slack = cell - ITEM_SIZE
    for j in range(k):
        oy = (cells[:, j] // spec.grid) * cell + torch.randint(slack + 1, (n,), generator=g, device=dev)
        ox = (cells[:, j] % spec.grid) * cell + torch.randint(slack + 1, (n,), generator=g, device=dev)
        r = oy[:, None, None] + ar[None, :, None]
        c = ox[:, None, None] + ar[None, None, :]
        canvas[rows, r, c] = items[:, j]
    return canvas.unsqueeze(1)


def compose_split(source_images: torch.Tensor, source_labels: torch.Tensor, spec: ComposeSpec
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``spec.n`` canvases from a source split (uint8 (N, 1, 28, 28), labels (N,)).

    Returns uint8 images ``(n, 1, canvas, canvas)`` and int64 labels ``(n,)``; the same inputs and
    spec always give the same tensors (one ``torch.Generator`` seeded with ``spec.seed``).
    """
    if source_images.dtype != torch.uint8 or tuple(source_images.shape[1:]) != (1, ITEM_SIZE, ITEM_SIZE):
        raise ValueError(f"source images must be uint8 (N, 1, {ITEM_SIZE}, {ITEM_SIZE}), got "
                         f"{source_images.dtype} {tuple(source_images.shape)}")
    draw, _ = TASKS[spec.task]
    g = torch.Generator().manual_seed(int(spec.seed))
    classes, labels = draw(spec.n, spec.n_items, g)
    k = classes.shape[1]
    pools = _class_pools(source_labels, 10)
    instances = _draw_instances(pools, classes, g)
    cells = torch.argsort(torch.rand(spec.n, spec.grid * spec.grid, generator=g), dim=1)[:, :k]
    items = source_images[instances.flatten(), 0].view(spec.n, k, ITEM_SIZE, ITEM_SIZE)
    return _paste(items, cells, spec, g), labels.to(torch.int64)


class ComposedStream:
    """Draws canvases of one task afresh, on the source's device, for every batch (no fixed set).

    The same distribution as ``compose_split`` (classes, instances, cells, jitter), written without
    a host synchronisation: the per-class pools are one padded ``(10, max)`` index table, so a
    batch costs a handful of kernels on the GPU. Randomness comes only from the generator passed
    to ``draw`` (the loader's, seeded from the training seed).
    """

    def __init__(self, source_images: torch.Tensor, source_labels: torch.Tensor, spec: ComposeSpec):
        if source_images.dtype != torch.uint8 or tuple(source_images.shape[1:]) != (1, ITEM_SIZE, ITEM_SIZE):
            raise ValueError(f"source images must be uint8 (N, 1, {ITEM_SIZE}, {ITEM_SIZE}), got "
                             f"{source_images.dtype} {tuple(source_images.shape)}")
        self.spec = spec
        self.images = source_images[:, 0]
        pools = _class_pools(source_labels.cpu(), 10)
        self.counts = torch.tensor([p.numel() for p in pools], dtype=torch.int64, device=source_images.device)
        table = torch.zeros(10, int(self.counts.max()), dtype=torch.int64)
        for c, p in enumerate(pools):
            table[c, :p.numel()] = p
        self.table = table.to(source_images.device)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device) -> "ComposedStream":
        """The same stream with its source items on ``device`` (copied once)."""
        if self.device == device:
            return self
        other = object.__new__(ComposedStream)
        other.spec, other.images = self.spec, self.images.to(device)
        other.counts, other.table = self.counts.to(device), self.table.to(device)
        return other

    def draw(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh canvases uint8 ``(n, 1, S, S)`` and labels, on ``g``'s device (= the items')."""
        spec = self.spec
        draw, _ = TASKS[spec.task]
        classes, labels = draw(n, spec.n_items, g)
        u = torch.rand(classes.shape, generator=g, device=g.device)
        instances = self.table[classes, (u * self.counts[classes]).long()]
        k = classes.shape[1]
        cells = torch.argsort(torch.rand(n, spec.grid * spec.grid, generator=g, device=g.device), dim=1)[:, :k]
        items = self.images[instances.flatten()].view(n, k, ITEM_SIZE, ITEM_SIZE)
        return _paste(items, cells, spec, g), labels.to(torch.int64)


def class_names(task: str, source_classes: tuple[str, ...]) -> tuple[str, ...]:
    """Label names of a task: its own, or the source's classes (the odd one's class)."""
    names = TASKS[task][1]
    return names if names else tuple(source_classes)
