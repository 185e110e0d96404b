"""The train proxy: a few CPU steps on a tiny config, NaN and pruning paths, determinism."""

from __future__ import annotations

import json
import math

import pytest
import torch

import evaluators.train as train_mod
from evaluators.data import DatasetError, load_dataset
from evaluators.train import TrainResult, lr_at, train_proxy

FAST = dict(batch_size=8, subset=64, val_subset=32, device="cpu", progress=False)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


def test_a_few_steps_give_a_result_with_history(tiny_config, fmnist):
    r = train_proxy(tiny_config, data=fmnist, steps=6, eval_every=3, **FAST)
    assert isinstance(r, TrainResult) and r.status == "ok" and r.reason == ""
    assert r.steps == 6 and r.epochs == pytest.approx(6 / 8)
    assert [s for s, _ in r.top1_history] == [3, 6] and r.top1 == r.top1_history[-1][1]
    assert all(0.0 <= a <= 100.0 for _, a in r.top1_history)
    assert math.isfinite(r.final_loss) and math.isfinite(r.first_loss) and r.images_per_s > 0
    assert r.seconds >= r.train_seconds > 0 and r.device == "cpu"
    assert r.recipe["steps"] == 6 and r.recipe["subset"] == 64 and r.config["num_classes"] == 10
    json.dumps(r.to_dict(), allow_nan=False)


def test_training_learns_something(tiny_config, fmnist):
    # 20 steps of 16 images at 64 px: well above chance (10%) on the fixed validation subset
    r = train_proxy(tiny_config, data=fmnist, steps=20, batch_size=16, subset=320, val_subset=128, lr=3e-3,
                    device="cpu", progress=False)
    assert r.status == "ok" and r.top1 > 30.0 and r.final_loss < r.first_loss


def test_first_loss_is_deterministic_given_the_seed(tiny_config, fmnist):
    state = torch.get_rng_state()
    a = train_proxy(tiny_config, data=fmnist, steps=1, **FAST)
    b = train_proxy(tiny_config, data=fmnist, steps=1, **FAST)
    c = train_proxy(tiny_config, data=fmnist, steps=1, seed=1, **FAST)
    assert a.first_loss == b.first_loss and a.top1 == b.top1
    assert c.first_loss != a.first_loss
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is restored


def test_nan_loss_stops_at_once(tiny_config, fmnist, monkeypatch):
    real = train_mod._loss
    calls = []

    def loss(logits, labels, label_smoothing):
        calls.append(1)
        out = real(logits, labels, label_smoothing)
        return out * float("nan") if len(calls) >= 3 else out

    monkeypatch.setattr(train_mod, "_loss", loss)
    r = train_proxy(tiny_config, data=fmnist, steps=20, **FAST)
    assert r.status == "nan" and "step 3 of 20" in r.reason and r.steps == 3
    assert math.isnan(r.top1) and r.to_dict()["top1"] is None


def test_huge_learning_rate_gives_nan_status(tiny_config, fmnist):
    r = train_proxy(tiny_config, data=fmnist, steps=30, lr=1e6, **FAST)
    assert r.status == "nan" and r.steps < 30 and "loss became" in r.reason


def test_report_true_prunes(tiny_config, fmnist):
    seen = []

    def report(step, acc):
        seen.append((step, acc))
        return step >= 4

    r = train_proxy(tiny_config, data=fmnist, steps=12, eval_every=2, report=report, **FAST)
    assert r.status == "pruned" and r.steps == 4 and "step 4" in r.reason
    assert seen == r.top1_history and r.top1 == seen[-1][1]


def test_resolution_override_and_class_count(fmnist):
    from search_spaces import FasterViTConfig

    cfg = FasterViTConfig(resolution=128, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                          window_size=(4, 4, 4, 4), num_classes=1000, drop_path_rate=0.3)
    r = train_proxy(cfg, data=fmnist, resolution=64, steps=2, drop_path_rate=0.0, **FAST)
    assert r.config["resolution"] == 64 and r.config["window_size"][2] == 2  # 2x2 windows kept
    assert r.config["num_classes"] == 10 and r.config["drop_path_rate"] == 0.0


def test_arguments_are_checked(tiny_config, fmnist, tmp_path):
    with pytest.raises(ValueError, match="epochs or steps, not both"):
        train_proxy(tiny_config, data=fmnist, epochs=1, steps=2, **FAST)
    with pytest.raises(ValueError, match=r"warmup=1.0 must be in \[0.0, 1.0\)"):
        train_proxy(tiny_config, data=fmnist, steps=2, warmup=1.0, **FAST)
    with pytest.raises(ValueError, match="lr=0"):
        train_proxy(tiny_config, data=fmnist, steps=2, lr=0, **FAST)
    with pytest.raises(DatasetError, match="cifar10 not found"):
        train_proxy(tiny_config, data="cifar10", data_dir=tmp_path, steps=2, **FAST)


def test_schedule_warms_up_then_decays_to_zero():
    assert lr_at(0, total=100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, total=100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, total=100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(55, total=100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(100, total=100, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(0, total=5, warmup_steps=0) == pytest.approx(1.0)


def test_lr_scaling_rules():
    from evaluators.train import LR_REFERENCE_BATCH, scaled_lr

    assert scaled_lr(1e-3, LR_REFERENCE_BATCH) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 4 * LR_REFERENCE_BATCH) == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 4 * LR_REFERENCE_BATCH, "linear") == pytest.approx(4e-3)
    assert scaled_lr(1e-3, 16, "none") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_scaling='cube'"):
        scaled_lr(1e-3, 16, "cube")


def test_step_mode_rule_is_documented_and_honest(tiny_config):
    from evaluators.train import choose_step_mode, estimated_compile_seconds

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_step_mode("auto", cpu, cfg=tiny_config)[0] == "eager"
    with pytest.raises(ValueError, match="compile='graph' needs a CUDA device"):
        choose_step_mode("graph", cpu, cfg=tiny_config)
    with pytest.raises(ValueError, match="compile='fast' is unknown"):
        choose_step_mode("fast", cpu, cfg=tiny_config)
    assert choose_step_mode("auto", gpu, cfg=tiny_config) == ("graph", "auto: CUDA graph while the first steps are timed")
    assert choose_step_mode("eager", gpu, cfg=tiny_config)[0] == "eager"
    cost = estimated_compile_seconds(tiny_config)
    # a short run never pays for compiling; a long one does, and the reason says why
    short = choose_step_mode("auto", gpu, cfg=tiny_config, steps_left=10, graph_step_s=0.01)
    long = choose_step_mode("auto", gpu, cfg=tiny_config, steps_left=10**6, graph_step_s=0.05)
    assert short[0] == "graph" and long[0] == "compile"
    assert f"~{cost:.0f} s to compile" in short[1] and long[1].endswith("-> compile")


def test_result_records_recipe_mode_and_lr(tiny_config, fmnist):
    r = train_proxy(tiny_config, data=fmnist, steps=2, batch_size=16, lr=1e-3, subset=64, val_subset=32,
                    device="cpu", progress=False)
    assert r.step_mode == "eager" and r.compile_seconds == 0.0
    assert r.recipe["peak_lr"] == pytest.approx(1e-3 * (16 / 256) ** 0.5) and r.recipe["lr_scaling"] == "sqrt"
    assert r.recipe["step_mode_reason"].startswith("cpu: eager")
    with pytest.raises(ValueError, match="compile='graph' needs a CUDA device"):
        train_proxy(tiny_config, data=fmnist, steps=2, compile="graph", **FAST)


def test_the_recipe_is_validated_by_name_and_round_trips():
    from evaluators.augment import Augment
    from evaluators.train import DEFAULT_LR, DEFAULT_WARMUP, TrainRecipe

    r = TrainRecipe(steps=10, ema_decay=0.99, augment=Augment(crop=0.0625, flip=True))
    assert r.lr == DEFAULT_LR == 3.5e-4 and r.warmup == DEFAULT_WARMUP == 0.2
    assert TrainRecipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    for kwargs, match in ((dict(epochs=1.0, steps=3), "give epochs or steps, not both"),
                          (dict(ema_decay=1.0), r"ema_decay=1.0 must be in \(0.0, 1.0\)"),
                          (dict(lr=0.0), r"lr=0.0 must be in \(0.0"), (dict(batch_size=0), "batch_size=0"),
                          (dict(compile="fast"), "compile='fast' is unknown"), (dict(amp=1), "amp=1 must be true")):
        with pytest.raises(ValueError, match=match):
            TrainRecipe(**kwargs)
    with pytest.raises(ValueError, match=r"unknown recipe keys \['colour'\]"):
        TrainRecipe.from_dict(dict(colour="red"))


def test_train_with_a_recipe_equals_train_proxy_with_keywords(tiny_config, fmnist):
    from evaluators.train import TrainRecipe, train

    a = train(tiny_config, TrainRecipe(steps=3, batch_size=8, subset=64, val_subset=32), data=fmnist, device="cpu",
              progress=False)
    b = train_proxy(tiny_config, data=fmnist, steps=3, **FAST)
    assert a.first_loss == b.first_loss and a.top1 == b.top1 and a.recipe["lr"] == 3.5e-4
    with pytest.raises(ValueError, match="recipe=.* must be an evaluators.train.TrainRecipe"):
        train(tiny_config, dict(steps=3), data=fmnist, device="cpu")


def test_ema_reports_the_averaged_weights_and_keeps_the_raw_history(tiny_config, fmnist, tmp_path):
    from safetensors.torch import load_file

    r = train_proxy(tiny_config, data=fmnist, steps=6, eval_every=3, ema_decay=0.9, lr=3e-3,
                    save_weights=tmp_path / "w.safetensors", **FAST)
    assert r.status == "ok" and [s for s, _ in r.raw_top1_history] == [3, 6]
    assert r.recipe["ema_decay"] == 0.9
    plain = train_proxy(tiny_config, data=fmnist, steps=6, eval_every=3, lr=3e-3,
                        save_weights=tmp_path / "raw.safetensors", **FAST)
    assert [a for _, a in r.raw_top1_history] == [a for _, a in plain.top1_history]  # same raw training
    ema, raw = load_file(tmp_path / "w.safetensors"), load_file(tmp_path / "raw.safetensors")
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # the averaged weights were written


def test_the_ema_decay_warms_up_and_averages():
    from evaluators.train import _Ema

    model = torch.nn.Linear(2, 1)
    ema = _Ema(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.set_step(0)  # min(0.9, 1/10) = 0.1: the first update takes 90 % of the new value
    ema.update()
    assert float(ema.weight) == pytest.approx(0.9)
    ema.set_step(1000)
    assert float(ema.weight) == pytest.approx(0.1)
    assert not any(p.requires_grad for p in ema.model.parameters())
