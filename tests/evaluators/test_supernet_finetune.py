"""Fine-tuning a point from a supernet, a checkpoint file or scratch; fully or head-only (CPU, tiny)."""

from __future__ import annotations

import math

import pytest
import torch

from evaluators.data import load_dataset
from evaluators.proxies import init_model
from evaluators.supernet import supernet_top1, train_supernet
from evaluators.supernet_finetune import finetune
from search_spaces import FasterViT, FasterViTConfig
from tests.spaces import TINY_BASE, tiny_space

FAST = dict(batch_size=8, subset=32, val_subset=32, device="cpu", progress=False)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def cfg():
    return FasterViTConfig.from_dict(dict(TINY_BASE, dim=16, num_classes=10))


def test_full_finetune_from_scratch_trains_the_whole_network_seeded(cfg, fmnist):
    model, r = finetune(cfg, data=fmnist, init="scratch", epochs=0.5, **FAST)
    start = init_model(cfg, 0).state_dict()
    params = [n for n, _ in model.named_parameters()]
    moved = [n for n in params if not torch.equal(model.state_dict()[n], start[n])]
    assert len(moved) >= 0.95 * len(params) and "stem.conv1.weight" in moved and "head.weight" in moved
    assert isinstance(model, FasterViT) and not model.training and r.status == "ok" and r.steps == 2
    assert 0 <= r.init_top1 <= 100 and [s for s, _ in r.top1_history] == [2] and r.top1 == r.top1_history[0][1]
    assert r.recipe["head_only"] is False and r.init == "scratch" and r.images_per_s > 0
    again, _ = finetune(cfg, data=fmnist, init="scratch", epochs=0.5, **FAST)  # seeded: the same run
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_head_only_from_a_checkpoint_trains_a_new_head_alone(cfg, fmnist, tmp_path):
    torch.manual_seed(3)
    source = FasterViT(cfg.replace(num_classes=5))  # a checkpoint of another task: 5 classes
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model, r = finetune(cfg, data=fmnist, init=str(path), epochs=0.5, head_only=True, **FAST)
    assert r.status == "ok" and model.num_classes == 10 and model.head.weight.shape == (10, cfg.num_features)
    theirs = source.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, theirs[k]), k  # frozen: weights and BatchNorm statistics kept
    assert all(p.requires_grad for p in model.parameters())


def test_finetune_from_a_supernet_starts_at_its_inherited_accuracy(cfg, fmnist, tmp_path):
    out = tmp_path / "sn"
    r = train_supernet(tiny_space(), data=fmnist, out=out, epochs=0.25, batch_size=8, subset=32, val_subset=32,
                       calib_images=16, device="cpu", progress=False)
    assert r.status == "done"
    inherited, _ = supernet_top1(cfg, out, fmnist, val_subset=32, device="cpu")
    model, f = finetune(cfg, data=fmnist, init=f"supernet:{out}", epochs=0.5, **FAST)
    assert f.status == "ok" and f.init_top1 == pytest.approx(inherited) and math.isfinite(f.top1)


def test_a_bad_init_is_one_clear_error(cfg, fmnist, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not supernet:DIR, scratch or an existing checkpoint file"):
        finetune(cfg, data=fmnist, init=str(tmp_path / "none.pth"), epochs=1, **FAST)
    other = FasterViT(cfg.replace(dim=8))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit"):
        finetune(cfg, data=fmnist, init=str(tmp_path / "other.pth"), epochs=1, **FAST)
