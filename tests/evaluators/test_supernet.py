"""Supernet training on the CPU: the sandwich step, the folder, resume, stops, and reading it back."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

import evaluators.supernet_step as step_mod
from evaluators.data import BatchLoader, DatasetError, load_dataset
from evaluators.supernet import (SupernetRecipe, extract_weights, load_supernet, supernet_top1,
                                 train_supernet)
from evaluators.supernet_folder import SupernetFolder
from evaluators.supernet_step import SandwichStep, calibration_batches, recalibrate_bn, subnet_plan
from evaluators.train import DEFAULT_LR, make_optimizer
from search_spaces import FasterViT
from search_spaces.elastic import ElasticFasterViT, SupernetError, extreme_configs
from search_spaces.space import load_space
from tests.spaces import tiny_space

#: 8 steps an epoch; 0.75 epochs = 6 steps
FAST = dict(batch_size=8, subset=64, val_subset=32, calib_images=16, device="cpu", progress=False)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def space():
    return load_space(tiny_space())


def _weights(path):
    return SupernetFolder(path).load_weights()


def test_a_sandwich_step_gives_every_shared_weight_a_gradient(space, fmnist):
    torch.manual_seed(0)
    model = ElasticFasterViT(space, num_classes=10)
    big, small = extreme_configs(space)
    assert big.dim == 24 and big.depths[2] == 2 and small.dim == 8 and small.depths[2] == 1

    def plan(step):
        return subnet_plan(space, step, seed=0, n_random=2, resolution=(64, 64), largest=big, smallest=small,
                           drop_path_rate=0.1)

    opt, _ = make_optimizer(model, lr=1e-3, weight_decay=0.05, device=torch.device("cpu"))
    step = SandwichStep(model, opt, plan, label_smoothing=0.1, grad_clip=None, distill=True, amp=False,
                        device=torch.device("cpu"))
    x, y = BatchLoader(fmnist.train, batch_size=8, resolution=64, device="cpu", seed=0).batch(torch.arange(8))
    losses = step.backward(x, y, 0)
    assert [c.arch_id for c, _ in losses][:2] == [big.arch_id, small.arch_id] and len(losses) == 4
    assert losses[0][0].drop_path_rate == 0.1 and all(c.drop_path_rate == 0.0 for c, _ in losses[1:])
    assert all(torch.isfinite(v) for _, v in losses)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    together = {n: p.grad.clone() for n, p in model.named_parameters()}
    # the distilled subnets add to the largest one's gradient in the weights they share
    only_largest = SandwichStep(model, opt, lambda s: plan(s)[:1], label_smoothing=0.1, grad_clip=None,
                                distill=True, amp=False, device=torch.device("cpu"))
    torch.manual_seed(0)
    only_largest.backward(x, y, 0)
    stem = "stem.conv1.weight"
    assert not torch.allclose(together[stem][:8], model.get_parameter(stem).grad[:8])
    # the same step draws the same subnets (every rank, every resume); another step others
    assert [c.arch_id for c in plan(0)] == [c.arch_id for c, _ in losses]
    assert any([c.arch_id for c in plan(k)] != [c.arch_id for c in plan(0)] for k in range(1, 5))


def test_training_writes_a_folder_that_reads_back(space, fmnist, tmp_path):
    out = tmp_path / "sn"
    r = train_supernet(space, data=fmnist, out=out, epochs=0.375, **FAST)
    assert r.status == "done" and r.reason == "" and r.steps_done == r.total_steps == 3
    assert r.session_steps == 3 and r.images_per_s > 0 and r.subnet_images_per_s == pytest.approx(4 * r.images_per_s)
    assert set(r.final_top1) == {"largest", "smallest"} and all(0 <= v <= 100 for v in r.final_top1.values())
    meta = json.loads((out / "supernet.json").read_text())
    assert meta["space"]["name"] == "tiny" and meta["space"]["definition"] == space.to_dict()
    assert meta["data"] == fmnist.name and meta["resolution"] == [64, 64] and meta["num_classes"] == 10
    assert meta["recipe"] == SupernetRecipe(epochs=0.375, batch_size=8, subset=64).to_dict()
    assert meta["status"] == "done" and meta["steps_done"] == 3 and len(meta["sessions"]) == 1
    assert (out / "supernet.safetensors").is_file() and not (out / "checkpoint.pt").exists()
    # a finished folder: the same command does nothing more
    again = train_supernet(space, data=fmnist, out=out, epochs=0.375, **FAST)
    assert again.status == "done" and again.session_steps == 0 and again.final_top1 == r.final_top1

    sn = load_supernet(out, device="cpu")
    assert sn.label == f"top-1 % (supernet, 0.375 epochs, {fmnist.name})"
    top1, seconds = supernet_top1(sn.largest, sn, fmnist, val_subset=32, calib_images=16)
    assert top1 == pytest.approx(r.final_top1["largest"]) and seconds > 0
    # export: the subnet's weights with BatchNorm statistics recalibrated for it
    cfg = space.apply({"dim": 16, "depths[2]": 1, "ct_size": 2})
    model = extract_weights(cfg, sn, data=fmnist, calib_images=16)
    assert isinstance(model, FasterViT) and model.config == cfg.replace(num_classes=10) and not model.training
    plain = sn.model.extract(cfg.replace(drop_path_rate=0.0))  # recalibrated here by hand
    loader = BatchLoader(fmnist.train.subset(64, seed=0), batch_size=8, resolution=64, device="cpu", seed=1)
    recalibrate_bn(plain, calibration_batches(loader, 2))
    ours = model.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.allclose(ours[k].float(), v.float(), atol=1e-5), k
    key = "stages.0.blocks.0.norm1.running_mean"
    trained = _weights(out)[key][:16]  # the statistics the supernet trained with
    assert not torch.allclose(ours[key], trained, atol=1e-3)


def test_a_run_cut_in_three_equals_one_run(space, fmnist, tmp_path):
    one = train_supernet(space, data=fmnist, out=tmp_path / "one", epochs=0.5, **FAST)
    assert one.status == "done" and one.steps_done == 4
    cut = tmp_path / "cut"
    first = train_supernet(space, data=fmnist, out=cut, epochs=0.5, max_steps=1, **FAST)
    assert first.status == "paused" and first.steps_done == 1 and "max_steps" in first.reason
    assert (cut / "checkpoint.pt").is_file() and not (cut / "supernet.safetensors").exists()
    with pytest.raises(ValueError, match="not trained to the end"):
        load_supernet(cut)
    assert load_supernet(cut, allow_unfinished=True).meta["steps_done"] == 1
    second = train_supernet(space, data=fmnist, out=cut, epochs=0.5, max_steps=2, **FAST)
    assert second.status == "paused" and second.steps_done == 3 and second.session_steps == 2
    last = train_supernet(space, data=fmnist, out=cut, epochs=0.5, **FAST)
    assert last.status == "done" and last.steps_done == 4 and last.session_steps == 1
    a, b = _weights(tmp_path / "one"), _weights(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert last.final_top1 == one.final_top1
    meta_one = json.loads((tmp_path / "one" / "supernet.json").read_text())
    meta_cut = json.loads((cut / "supernet.json").read_text())
    assert meta_cut["history"] == meta_one["history"] and len(meta_cut["sessions"]) == 3


def test_a_time_budget_pauses_after_at_least_one_step(space, fmnist, tmp_path):
    r = train_supernet(space, data=fmnist, out=tmp_path / "sn", epochs=0.75, time_budget=0.01, **FAST)
    assert r.status == "paused" and r.steps_done == 1 and "time budget of 0.01 s" in r.reason
    meta = json.loads((tmp_path / "sn" / "supernet.json").read_text())
    assert meta["status"] == "paused" and meta["steps_done"] == 1 and "run the same command again" in meta["reason"]


def test_sigterm_checkpoints_and_pauses(space, fmnist, tmp_path, monkeypatch):
    real = SandwichStep.__call__

    def call(self, x, y, step):
        out = real(self, x, y, step)
        if step == 1:
            signal.raise_signal(signal.SIGTERM)  # as `kill` or a job scheduler would
        return out

    monkeypatch.setattr(SandwichStep, "__call__", call)
    before = signal.getsignal(signal.SIGTERM)
    r = train_supernet(space, data=fmnist, out=tmp_path / "sn", epochs=0.75, **FAST)
    assert r.status == "paused" and r.steps_done == 2 and "SIGTERM" in r.reason
    assert (tmp_path / "sn" / "checkpoint.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_a_nan_loss_stops_with_the_reason_recorded(space, fmnist, tmp_path, monkeypatch):
    real = step_mod.soft_cross_entropy
    calls = []

    def nan_later(logits, target):
        calls.append(1)
        out = real(logits, target)
        return out * float("nan") if len(calls) > 3 else out

    monkeypatch.setattr(step_mod, "soft_cross_entropy", nan_later)
    out = tmp_path / "sn"
    r = train_supernet(space, data=fmnist, out=out, epochs=0.75, checkpoint_every=1e-9, **FAST)
    assert r.status == "nan" and r.steps_done == 1 and "became nan at step 2 of 6" in r.reason
    meta = json.loads((out / "supernet.json").read_text())
    assert meta["status"] == "nan" and meta["reason"] == r.reason
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1  # the last good state, not the NaN one
    with pytest.raises(ValueError, match="stopped on a NaN loss.*new --out"):
        train_supernet(space, data=fmnist, out=out, epochs=0.75, **FAST)


def test_a_folder_with_another_run_is_refused_before_training(space, fmnist, tmp_path):
    out = tmp_path / "sn"
    train_supernet(space, data=fmnist, out=out, epochs=0.75, max_steps=1, **FAST)
    other = tiny_space(name="other", **{"dim": {"choices": [8, 16]}})
    with pytest.raises(ValueError, match=r"holds a supernet of another space \('tiny'.*space 'other'"):
        train_supernet(other, data="no-such-data", out=out, epochs=0.75, **FAST)  # refused before the data
    with pytest.raises(ValueError, match=rf"another supernet run \(recipe.lr: {DEFAULT_LR} there, 0.002 now"):
        train_supernet(space, data=fmnist, out=out, epochs=0.75, lr=2e-3, **FAST)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no supernet.json"):
        train_supernet(space, data=fmnist, out=stranger, epochs=0.75, **FAST)


def test_bad_input_is_one_clear_error(space, fmnist, tmp_path):
    out = tmp_path / "sn"
    with pytest.raises(ValueError, match="unknown supernet recipe setting.*'sandwhich'"):
        train_supernet(space, data=fmnist, out=out, epochs=1, sandwhich=3, **FAST)
    with pytest.raises(ValueError, match="sandwich_n=-1 must be an integer >= 0"):
        train_supernet(space, data=fmnist, out=out, epochs=1, sandwich_n=-1, **FAST)
    with pytest.raises(SupernetError, match="knob attention"):
        train_supernet(tiny_space(attention={"choices": ["hat", "twins"]}), data=fmnist, out=out, epochs=1, **FAST)
    with pytest.raises(ValueError, match="neither a built-in space"):
        train_supernet("no-such-space", data=fmnist, out=out, epochs=1, **FAST)
    with pytest.raises(DatasetError):
        train_supernet(space, data="cifar10", data_dir=tmp_path / "nothing", out=out, epochs=1, **FAST)
    assert not out.exists()  # nothing was started


def test_recalibration_gives_the_mean_of_the_batch_statistics(space):
    torch.manual_seed(0)
    model = ElasticFasterViT(space, num_classes=10)
    model.set_active(space.apply({}).replace(drop_path_rate=0.0))
    model.eval()
    batches = [torch.randn(4, 3, 64, 64) * s for s in (1.0, 2.0, 3.0)]
    seen = []
    hook = model.stem.norm1.register_forward_hook(lambda m, i, o: seen.append(i[0].mean(dim=(0, 2, 3))))
    assert recalibrate_bn(model, batches) == 3
    hook.remove()
    expected = torch.stack(seen).mean(0)
    assert torch.allclose(model.stem.norm1.running_mean[:8], expected, atol=1e-6)
    assert model.stem.norm1.momentum == 0.1 and not model.training
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])


def test_calibration_batches_are_the_same_every_time(fmnist):
    loader = BatchLoader(fmnist.train.subset(64, seed=0), batch_size=8, resolution=64, device="cpu", seed=5)
    a = [x for x in calibration_batches(loader, 2)]
    b = [x for x in calibration_batches(loader, 2)]
    assert len(a) == 2 and all(torch.equal(u, v) for u, v in zip(a, b))
    assert np.isfinite(a[0].numpy()).all()


def test_calibration_draws_as_many_batches_as_asked_epoch_after_epoch(fmnist):
    loader = BatchLoader(fmnist.train.subset(16, seed=0), batch_size=8, resolution=64, device="cpu", seed=5)
    assert len(loader) == 2 and len(list(calibration_batches(loader, 5))) == 5


def _stream_loader(seed: int = 3) -> BatchLoader:
    s = load_dataset("fmnist-odd:train=stream")
    return BatchLoader(s.train.subset(64), batch_size=8, resolution=32, device="cpu", seed=seed)


def test_a_streamed_split_resumes_calibrates_and_splits_over_ranks_like_one_run():
    from evaluators.supernet_step import ResumableBatches

    one = ResumableBatches(_stream_loader())
    labels = [one.next()[1] for _ in range(3)]
    cut = ResumableBatches(_stream_loader())
    cut.next()
    state = cut.state()
    again = ResumableBatches(_stream_loader())
    again.restore(state)
    assert torch.equal(again.next()[1], labels[1]) and torch.equal(again.next()[1], labels[2])
    ranks = [ResumableBatches(_stream_loader(), rank=r, world=2) for r in (0, 1)]
    first = [b.next()[1] for b in ranks]
    assert torch.equal(torch.cat(first), labels[0])  # two ranks: the halves of one process's batch
    loader = _stream_loader()
    a, b = (list(calibration_batches(loader, 2)) for _ in range(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # every subnet sees the same images


def test_a_config_that_cannot_move_to_the_supernets_resolution_is_a_supernet_error(space):
    net = ElasticFasterViT(space, resolution=(64, 64), num_classes=10)
    cfg = space.apply({}).replace(resolution=(224, 224), window_size=(7, 7, 7, 7), ct_size=7)
    with pytest.raises(SupernetError, match="does not fit the supernet's resolution 64x64"):
        net.conform(cfg)


def test_damaged_weights_and_a_lost_checkpoint_are_clear_errors(space, fmnist, tmp_path):
    out = tmp_path / "sn"
    assert train_supernet(space, data=fmnist, out=out, epochs=0.25, **FAST).status == "done"
    (out / "supernet.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="cannot load the supernet weights .*supernet.safetensors"):
        load_supernet(out)
    cut = tmp_path / "cut"
    assert train_supernet(space, data=fmnist, out=cut, epochs=0.5, max_steps=1, **FAST).status == "paused"
    (cut / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="records 1 steps done but holds no checkpoint"):
        train_supernet(space, data=fmnist, out=cut, epochs=0.5, **FAST)
