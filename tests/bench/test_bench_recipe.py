"""bench/bench_recipe.py and bench/supernet.py --train-recipe on the CPU: ground truth 2's summary is accepted,
a recipe the supernet cannot follow or the options contradict is refused before anything trains, and the recipe
reaches ``train_supernet``'s keywords and the results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
GT2_SUMMARY = ROOT / "results" / "benchmarks" / "groundtruth2-summary.json"


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(BENCH))
    import bench_recipe
    import oneshot
    import supernet

    yield bench_recipe, supernet, oneshot
    sys.path.remove(str(BENCH))


def test_ground_truth_2s_summary_is_a_recipe_with_its_budget_checked(mods):
    br, _, _ = mods
    fields = br.bench_recipe(str(GT2_SUMMARY))
    recipe = json.loads(GT2_SUMMARY.read_text())["recipe"]
    # a summary's budget in steps comes back as its epochs (nas.estimators.read_train_recipe)
    epochs = json.loads(GT2_SUMMARY.read_text())["epochs"]
    assert fields == dict({k: v for k, v in recipe.items() if k not in ("compile", "steps", "eval_every")},
                          epochs=epochs)
    assert br.supernet_recipe(fields) == dict(lr=3.5e-4, lr_scaling="sqrt", weight_decay=0.05, warmup=0.2,
                                              label_smoothing=0.1, grad_clip=1.0, drop_path_rate=0.0,
                                              augment_crop=0.0625, augment_flip=True)
    assert br.recipe_steps(str(GT2_SUMMARY)) is None
    assert recipe["steps"] == 1248 and epochs == 16.0  # 16 x 78 steps at batch 512 on 40k canvases
    settings = dict(train_recipe=fields, epochs=16, batch_size=512, resolution=64, subset=None, val_subset=None)
    br.check_recipe(settings)
    with pytest.raises(SystemExit, match=r"epochs 16.0 \(the option --epochs is 8.0\)"):
        br.check_recipe(dict(settings, epochs=8))
    # an inline recipe with steps: checked against --epochs on the data
    steps = br.recipe_steps('{"steps": 1248}')
    br.check_steps(steps, epochs=16, batch_size=512, train_images=40_000)
    with pytest.raises(SystemExit, match=r"records steps 1248, but --epochs 8 is 624 steps at batch 512 .*\(16\)"):
        br.check_steps(steps, epochs=8, batch_size=512, train_images=40_000)


@pytest.mark.parametrize("argv, message", [
    (["--train-recipe", '{"ema_decay": 0.99}'], "--train-recipe sets ema_decay, which the supernet's training cannot"),
    (["--train-recipe", '{"lr": 0.001}', "--lr", "0.0005"], "sets lr 0.001 (the option --lr is 0.0005)"),
    (["--train-recipe", '{"warmup": 0.2}', "--warmup", "0.1"], "sets warmup 0.2 (the option --warmup is 0.1)"),
    (["--train-recipe", str(GT2_SUMMARY), "--batch-size", "256"], "batch_size 512 (the option --batch-size is 256)"),
    (["--train-recipe", str(GT2_SUMMARY), "--resolution", "128"], "resolution 64 (the option --resolution is 128)"),
    (["--train-recipe", "missing.json"], "missing.json does not exist"),
])
def test_supernet_refuses_a_recipe_it_cannot_follow_or_its_options_contradict(mods, tmp_path, argv, message):
    _, sn, _ = mods
    with pytest.raises(SystemExit) as info:
        sn.main(["--groundtruth", "gt.json", "--epochs", "16", "--out-dir", str(tmp_path)] + argv)
    assert message in str(info.value)
    assert not list(tmp_path.iterdir())


def test_options_not_given_take_the_recipes_values(mods):
    _, sn, _ = mods
    args = sn.parse_args(["--groundtruth", "gt.json", "--epochs", "16", "--train-recipe", str(GT2_SUMMARY)])
    assert (args.batch_size, args.resolution, args.lr, args.warmup) == (512, 64, 3.5e-4, 0.2)
    assert args.train_recipe["grad_clip"] == 1.0 and "steps" not in args.train_recipe
    plain = sn.parse_args(["--groundtruth", "gt.json", "--epochs", "16"])
    assert plain.train_recipe is None and plain.resolution == sn.DEFAULT_RESOLUTION and plain.batch_size is None


class _Stop(Exception):
    pass


def _tiny_groundtruth(path: Path) -> Path:
    import numpy as np

    from search_spaces.elastic import sample_subnet
    from search_spaces.space import load_space
    from tests.spaces import tiny_space

    rng = np.random.default_rng(1)
    cfgs = {}
    while len(cfgs) < 3:
        cfg = sample_subnet(load_space(tiny_space()), rng, 64)
        cfgs[cfg.arch_id] = cfg
    archs = [dict(arch_id=k, config=c.to_dict(), top1=50.0 + i) for i, (k, c) in enumerate(cfgs.items())]
    path.write_text(json.dumps(dict(archs=archs)))
    return path


def test_the_recipe_reaches_train_supernet_and_the_results_file(mods, tmp_path, monkeypatch):
    import evaluators.supernet as es

    _, sn, _ = mods
    seen = {}

    def stand_in(space, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(es, "train_supernet", stand_in)
    gt = _tiny_groundtruth(tmp_path / "gt.json")
    recipe = '{"grad_clip": 1.0, "label_smoothing": 0.2, "lr": 0.0007, "augment": {"crop": 0.125, "flip": true}}'
    with pytest.raises(_Stop):
        sn.main(["--smoke", "--groundtruth", str(gt), "--out-dir", str(tmp_path), "--train-recipe", recipe])
    assert dict(grad_clip=1.0, label_smoothing=0.2, lr=0.0007, augment_crop=0.125, augment_flip=True).items() <= \
        seen.items()
    settings = json.loads((tmp_path / sn.RESULTS).read_text())["settings"]
    assert settings["train_recipe"] == json.loads(recipe) and settings["train_recipe_source"] == recipe
    assert "train_recipe" in sn.SETTING_KEYS  # a resume with another recipe is refused (Store)


def test_a_recorded_budget_other_than_epochs_is_refused_before_training(mods, tmp_path, monkeypatch):
    import evaluators.supernet as es

    _, sn, osb = mods
    monkeypatch.setattr(es, "train_supernet", lambda *a, **k: pytest.fail("trained"))
    gt = _tiny_groundtruth(tmp_path / "gt.json")
    # --smoke: batch 8 on 64 images, 0.25 epochs = 2 steps
    with pytest.raises(SystemExit, match="records steps 99, but --epochs 0.25 is 2 steps at batch 8 on 64"):
        sn.main(["--smoke", "--groundtruth", str(gt), "--out-dir", str(tmp_path), "--train-recipe", '{"steps": 99}'])
    assert not (tmp_path / sn.RESULTS).exists()
    # oneshot: the same rule (its --smoke: 1 epoch of 32 images at batch 8 = 4 steps)
    with pytest.raises(SystemExit, match="records steps 99, but --epochs 1 is 4 steps"):
        osb.main(["--smoke", "--out-dir", str(tmp_path / "os"), "--train-recipe", '{"steps": 99}'])
    assert not (tmp_path / "os" / "oneshot.json").exists()
