"""The composed ground-truth tasks: determinism, balance, labels that follow the rule, CPU training."""

from __future__ import annotations

import pytest
import torch

from evaluators.composed import ITEM_SIZE, ComposeSpec, compose_split
from evaluators.data import COMPOSED_SIZES, load_dataset


def _coded_source(per_class: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Items whose every pixel encodes the class (value 10 + 20 * class), so canvases can be decoded."""
    labels = torch.arange(10).repeat_interleave(per_class)
    images = (10 + 20 * labels).to(torch.uint8)[:, None, None, None].expand(-1, 1, ITEM_SIZE, ITEM_SIZE).contiguous()
    return images, labels


def _items_by_class(canvas: torch.Tensor) -> dict[int, int]:
    """{class: number of items} read off one decoded canvas (each item is ITEM_SIZE^2 pixels)."""
    values, counts = torch.unique(canvas[canvas > 0], return_counts=True)
    return {(int(v) - 10) // 20: int(c) // (ITEM_SIZE * ITEM_SIZE) for v, c in zip(values, counts)}


def test_odd_label_is_the_class_that_appears_once():
    images, labels = _coded_source()
    canvases, y = compose_split(images, labels, ComposeSpec("odd", 300, seed=5))
    assert canvases.shape == (300, 1, 64, 64) and canvases.dtype == torch.uint8 and y.dtype == torch.int64
    for c, label in zip(canvases, y):
        items = _items_by_class(c)
        assert sorted(items.values()) == [1, 2]
        assert next(k for k, n in items.items() if n == 1) == int(label)


def test_pairs_label_says_same_or_different():
    images, labels = _coded_source()
    canvases, y = compose_split(images, labels, ComposeSpec("pairs", 300, seed=5))
    for c, label in zip(canvases, y):
        items = _items_by_class(c)
        assert sum(items.values()) == 2
        assert (len(items) == 1) == bool(label)


def test_items_land_in_distinct_cells():
    images, labels = _coded_source()
    canvases, _ = compose_split(images, labels, ComposeSpec("odd", 200, seed=1))
    occupied = torch.stack([(canvases[:, 0, i * 32:(i + 1) * 32, j * 32:(j + 1) * 32] > 0).flatten(1).sum(1)
                            for i in range(2) for j in range(2)], dim=1)
    assert ((occupied == ITEM_SIZE * ITEM_SIZE) | (occupied == 0)).all()  # an item never straddles two cells
    assert ((occupied > 0).sum(1) == 3).all()


def test_same_seed_same_split_other_seed_other_split():
    images, labels = _coded_source()
    a = compose_split(images, labels, ComposeSpec("odd", 50, seed=3))
    b = compose_split(images, labels, ComposeSpec("odd", 50, seed=3))
    c = compose_split(images, labels, ComposeSpec("odd", 50, seed=4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="nope", n=4), "task='nope' is unknown"),
    (dict(task="odd", n=0), "n=0 must be a positive"),
    (dict(task="odd", n=4, canvas=40), "canvas=40 with grid=2 gives cells of 20 px"),
    (dict(task="odd", n=4, grid=1), "grid=1 must be an integer >= 2"),
])
def test_bad_specs_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ComposeSpec(**kwargs)


@pytest.fixture(scope="module")
def odd():
    return load_dataset("fmnist-odd")


def test_registered_task_is_balanced_and_deterministic(odd):
    assert len(odd.train) == COMPOSED_SIZES["train"] and len(odd.val) == COMPOSED_SIZES["val"]
    assert odd.num_classes == 10 and odd.classes[0] == "T-shirt/top"
    share = torch.bincount(odd.train.labels, minlength=10).float() / len(odd.train)
    assert share.min() > 0.09 and share.max() < 0.11
    again = load_dataset("fmnist-odd")
    assert torch.equal(again.val.images, odd.val.images) and torch.equal(again.val.labels, odd.val.labels)
    assert not torch.equal(odd.train.images[:100], odd.val.images[:100])  # train and val are drawn apart


def test_pairs_is_balanced_and_canvas_size_is_an_option():
    pairs = load_dataset("fmnist-pairs:96")
    assert pairs.classes == ("different", "same") and pairs.train.image_size == (96, 96)
    share = pairs.val.labels.float().mean()
    assert 0.45 < share < 0.55
    with pytest.raises(ValueError, match="canvas side in pixels"):
        load_dataset("fmnist-pairs:big")


def test_a_short_cpu_training_on_the_task(odd, tiny_config):
    from evaluators.augment import Augment
    from evaluators.train import train_proxy

    r = train_proxy(tiny_config, data=odd, steps=4, batch_size=16, subset=128, val_subset=64, device="cpu",
                    progress=False, augment=Augment(crop=0.0625, flip=True))
    assert r.status == "ok" and 0.0 <= r.top1 <= 100.0 and r.recipe["data"] == "fmnist-odd"
    assert r.recipe["augment"] == {"crop": 0.0625, "flip": True} and r.step_mode == "eager"


def test_more_items_on_a_larger_grid_follow_the_odd_rule():
    images, labels = _coded_source()
    canvases, y = compose_split(images, labels, ComposeSpec("odd", 100, canvas=128, grid=4, items=5, seed=2))
    assert canvases.shape == (100, 1, 128, 128)
    for c, label in zip(canvases, y):
        items = _items_by_class(c)
        assert sorted(items.values()) == [1, 4]
        assert next(k for k, n in items.items() if n == 1) == int(label)


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="odd", n=4, items=2), "items=2: task 'odd' places 3..16 items"),
    (dict(task="pairs", n=4, items=3), "items=3: task 'pairs' places 2..2 items"),
    (dict(task="odd", n=4, items=5), "items=5 do not fit the 2x2 grid"),
])
def test_bad_item_counts_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ComposeSpec(**kwargs)


def test_the_stream_draws_fresh_canvases_that_follow_the_rule():
    from evaluators.composed import ComposedStream

    images, labels = _coded_source()
    stream = ComposedStream(images, labels, ComposeSpec("odd", 1, canvas=128, grid=4, items=5))
    g = torch.Generator().manual_seed(0)
    a, ya = stream.draw(64, g)
    b, _ = stream.draw(64, g)
    assert a.shape == (64, 1, 128, 128) and a.dtype == torch.uint8 and ya.dtype == torch.int64
    assert not torch.equal(a, b)  # every draw is new
    for c, label in zip(a, ya):
        items = _items_by_class(c)
        assert sorted(items.values()) == [1, 4] and next(k for k, n in items.items() if n == 1) == int(label)
    again, _ = stream.draw(64, torch.Generator().manual_seed(0))
    assert torch.equal(again, a)  # the generator is the only randomness
    share = torch.bincount(stream.draw(4000, g)[1], minlength=10).float() / 4000
    assert share.min() > 0.07 and share.max() < 0.13


def test_data_options_build_a_streamed_or_larger_task():
    from evaluators.data import StreamData, parse_composed_arg

    assert parse_composed_arg("fmnist-odd", "96") == {"canvas": 96, "grid": 2}
    assert parse_composed_arg("fmnist-odd", "canvas=128,grid=4,items=5,train=stream") == dict(
        canvas=128, grid=4, items=5, train="stream")
    for arg, match in (("train=lots", "train='lots' must be a positive number of images or 'stream'"),
                       ("grid=4,grid=2", "grid is given twice"), ("grid=0", "grid='0' must be a positive integer"),
                       ("colour=red", "key=value pairs of canvas, grid, items, train")):
        with pytest.raises(ValueError, match=match):
            parse_composed_arg("fmnist-odd", arg)
    s = load_dataset("fmnist-odd:train=stream")
    assert isinstance(s.train, StreamData) and len(s.train) == COMPOSED_SIZES["train"]
    assert len(s.val) == COMPOSED_SIZES["val"] and s.train.image_size == (64, 64)
    assert "drawn afresh per batch" in s.summary()
    fixed = load_dataset("fmnist-odd")
    assert torch.equal(s.val.images, fixed.val.images)  # the same validation canvases as the fixed task
    assert len(s.train.subset(1000)) == 1000
    with pytest.raises(TypeError, match="drawn afresh for every batch"):
        s.train.take(torch.arange(3))


def test_the_loader_draws_from_a_stream_per_batch_and_seed():
    from evaluators.data import BatchLoader

    s = load_dataset("fmnist-odd:train=stream")

    def first_epoch(seed: int) -> list[torch.Tensor]:
        return [y for _, y in BatchLoader(s.train.subset(64), batch_size=16, resolution=32, device="cpu", seed=seed)]

    a, b, c = first_epoch(0), first_epoch(0), first_epoch(1)
    assert len(a) == 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    loader = BatchLoader(s.train.subset(64), batch_size=16, resolution=32, device="cpu", seed=0)
    one, two = [torch.cat([y for _, y in loader]) for _ in range(2)]
    assert not torch.equal(one, two)  # no two epochs alike
