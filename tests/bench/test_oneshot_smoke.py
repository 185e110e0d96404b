"""bench/oneshot.py --smoke on the CPU: the summary's exact keys with finite values per seed, a cut run
resumed to the end repeating nothing, the refused resume, and A's GPU-seconds holding its supernet."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
KEYS = {"gpu", "dataset", "epochs", "seeds", "gpu_seconds", "hv", "hv_ratio_vs_best_baseline",
        "presets_dominated_beyond_noise", "front"}


@pytest.fixture(scope="module")
def osb():
    sys.path.insert(0, str(BENCH))
    import oneshot

    yield oneshot
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def smoke_dir(osb, tmp_path_factory):
    out = tmp_path_factory.mktemp("oneshot")
    # two sessions inside: the first cut after one unit (the supernet after one step), the second to the end
    assert osb.main(["--smoke", "--out-dir", str(out)]) == 0
    return out


def _finite(v):
    return isinstance(v, float) and math.isfinite(v)


def test_summary_has_exactly_the_issues_keys_with_finite_values_per_seed(smoke_dir):
    s = json.loads((smoke_dir / "oneshot-summary.json").read_text())
    assert set(s) == KEYS
    assert s["gpu"] == "cpu" and s["dataset"] == "fashion-mnist" and s["epochs"] == 1.0 and s["seeds"] == 2
    assert set(s["gpu_seconds"]) == set(s["hv"]) == {"A", "B", "C"}
    assert all(_finite(v) and v > 0 for v in s["gpu_seconds"].values()), s["gpu_seconds"]
    for method, values in s["hv"].items():
        assert len(values) == 2 and all(_finite(v) for v in values), (method, values)
    assert _finite(s["hv_ratio_vs_best_baseline"])
    assert isinstance(s["presets_dominated_beyond_noise"], list)
    assert s["front"]
    for p in s["front"]:
        assert set(p) == {"arch_id", "throughput", "top1_confirmed", "top1_supernet"}
        assert isinstance(p["arch_id"], str) and _finite(p["throughput"]) and _finite(p["top1_supernet"])
        assert len(p["top1_confirmed"]) == 2 and all(_finite(v) for v in p["top1_confirmed"])
    assert (smoke_dir / "oneshot.png").is_file()


def test_a_cut_run_resumes_to_the_end_repeating_nothing(osb, smoke_dir):
    data = json.loads((smoke_dir / "oneshot.json").read_text())
    units = [u for s in data["sessions"] for u in s["units"]]
    assert data["sessions"][0]["units"] == ["supernet:0@0"]  # cut: the supernet paused after one step
    assert len(units) == len(set(units)) and not data["failures"]
    assert data["supernets"]["0"]["calls"] == 2 and data["supernets"]["0"]["status"] == "done"
    for key, rec in data["studies"].items():
        if key.startswith("A:"):  # A's search budget (600 s) never binds: two calls of at most 2 trials
            assert len(data["chunks"][key]) == rec["calls"] == 2 and rec["n_trials"] == 3, key
        else:  # B and C search for A's total: on a loaded machine time may end them after one call
            assert 1 <= len(data["chunks"][key]) == rec["calls"] <= 2 and 1 <= rec["n_trials"] <= 3, key
        assert rec["confirm"], key
        assert set(data["confirmations"][key]) == {str(p["source"]) for p in rec["confirm"]}
    storage = f"sqlite:///{smoke_dir / 'oneshot' / 'studies.db'}"
    before = osb.mf.study_trial_counts(storage)
    summary = json.loads((smoke_dir / "oneshot-summary.json").read_text())
    assert osb.main(["--smoke", "--out-dir", str(smoke_dir)]) == 0  # nothing left: two empty sessions
    assert osb.mf.study_trial_counts(storage) == before and len(before) == 6
    again = json.loads((smoke_dir / "oneshot.json").read_text())
    assert [s["units"] for s in again["sessions"][len(data["sessions"]):]] == [[], []]
    assert json.loads((smoke_dir / "oneshot-summary.json").read_text()) == summary
    assert osb.main(["--analyze", "--out-dir", str(smoke_dir)]) == 0
    assert json.loads((smoke_dir / "oneshot-summary.json").read_text()) == summary


def test_a_resume_with_other_settings_is_refused_naming_the_key(osb, smoke_dir):
    with pytest.raises(SystemExit, match=r"epochs: file 1\.0 vs now 2\.0"):
        osb.main(["--smoke", "--out-dir", str(smoke_dir), "--epochs", "2"])
    with pytest.raises(SystemExit, match="confirm_top: file 1 vs now 3"):
        osb.main(["--smoke", "--out-dir", str(smoke_dir), "--confirm-top", "3"])


def test_a_gpu_seconds_include_the_supernet_and_b_c_get_a_total(osb, smoke_dir):
    data = json.loads((smoke_dir / "oneshot.json").read_text())
    summary = json.loads((smoke_dir / "oneshot-summary.json").read_text())
    totals = []
    for k in (0, 1):
        meta = json.loads((smoke_dir / "oneshot" / f"supernet-seed{k}" / "supernet.json").read_text())
        sn = sum(s["seconds"] for s in meta["sessions"])
        assert sn > 0 and data["supernets"][str(k)]["gpu_seconds"] == pytest.approx(sn)
        conf = sum(e["seconds"] for e in data["confirmations"][f"A:{k}"].values())
        total = sn + data["studies"][f"A:{k}"]["used_s"] + conf
        assert osb.method_seconds(data, "A", k) == pytest.approx(total)
        for m in ("B", "C"):  # the budget rule: their search is given A's total
            assert data["studies"][f"{m}:{k}"]["budget_s"] == pytest.approx(total)
            conf = sum(e["seconds"] for e in data["confirmations"][f"{m}:{k}"].values())
            assert osb.method_seconds(data, m, k) == pytest.approx(data["studies"][f"{m}:{k}"]["used_s"] + conf)
        totals.append(total)
    assert summary["gpu_seconds"]["A"] == pytest.approx(sum(totals) / 2)


def _hv_2d(points, ref):
    """Hypervolume of maximised (accuracy, throughput) points above ``ref``, by a sweep (no library)."""
    pts = sorted((p for p in points if p[0] > ref[0] and p[1] > ref[1]), key=lambda p: -p[1])
    area, best = 0.0, ref[0]
    for i, (acc, thr) in enumerate(pts):
        nxt = pts[i + 1][1] if i + 1 < len(pts) else ref[1]
        best = max(best, acc)
        area += (best - ref[0]) * (thr - nxt)
    return area


def test_hv_is_of_the_confirmed_means(smoke_dir):
    data = json.loads((smoke_dir / "oneshot.json").read_text())
    summary = json.loads((smoke_dir / "oneshot-summary.json").read_text())
    for key, rec in data["studies"].items():
        conf = data["confirmations"][key]
        pts = [[sum(e["top1"]) / 2, e["throughput"]] for e in (conf[str(p["source"])] for p in rec["confirm"])]
        method, seed = key.split(":")
        assert summary["hv"][method][int(seed)] == pytest.approx(_hv_2d(pts, data["settings"]["reference"]), rel=1e-9)
    for e in (e for es in data["confirmations"].values() for e in es.values()):
        assert [r["seed"] for r in e["runs"]] in ([1000, 1001], [1002, 1003])  # never a search seed


class _Trial:
    def __init__(self, number, start, end, state="COMPLETE"):
        t0 = dt.datetime(2026, 1, 1)
        self.number, self.values = number, [50.0, 100.0]
        self.datetime_start = t0 + dt.timedelta(seconds=start)
        self.datetime_complete = None if end is None else t0 + dt.timedelta(seconds=end)
        self.state = type("S", (), {"name": state})()


class _Study:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False):
        return self.trials


def test_the_study_clock_adds_calls_and_skips_the_gaps_and_killed_trials(osb):
    # call 1: trials 0-1 from 0 s to 30 s; an hour later call 2: trial 2 (killed, failed later), trial 3 ends 20 s in
    study = _Study([_Trial(0, 0, 10), _Trial(1, 10, 30, "PRUNED"), _Trial(2, 3600, 9000, "FAIL"),
                    _Trial(3, 3605, 3625)])
    calls = [dict(first_trial=0), dict(first_trial=2, killed=[2])]
    done, used, first = osb.study_clock(study, calls)
    assert [(round(s, 6), t.number) for s, t in done] == [(10.0, 0), (50.0, 3)] and used == 50.0
    assert first == dt.datetime(2026, 1, 1).timestamp()


def test_points_to_confirm_spread_along_the_front(osb):
    front = [dict(source=i, throughput=float(t), accuracy=100.0 - t) for i, t in enumerate([5, 1, 4, 2, 3, 6])]
    assert [p["throughput"] for p in osb.spread(front, 3)] == [1.0, 3.0, 6.0]  # both ends and the middle
    assert len(osb.spread(front, 10)) == 6 and osb.spread(front, 1)[0]["throughput"] == 1.0  # the most accurate


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "--seeds '0' must be the number of seeds"),
    (["--reference", "10"], "--reference '10' must be two numbers"),
    (["--confirm-top", "0"], "--confirm-top 0 must be >= 1"),
    (["--eta", "1"], "--eta"),
])
def test_bad_options_are_refused_before_any_file(osb, tmp_path, args, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        osb.main(["--smoke", "--out-dir", str(tmp_path), *args])
    assert not (tmp_path / "oneshot.json").exists()


def test_without_a_gpu_the_full_run_says_so(osb, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="no CUDA GPU here.*--smoke"):
        osb.main(["--out-dir", str(tmp_path)])
    assert not (tmp_path / "oneshot.json").exists()


@pytest.mark.parametrize("recipe, message", [
    ('{"ema_decay": 0.99}', "--train-recipe sets ema_decay, which the supernet's training cannot follow"),
    ('{"batch_size": 999}', "--train-recipe sets batch_size 999 (the option --batch-size is"),
    ('{"learning_rate": 1}', "--train-recipe sets learning_rate, which the supernet's training cannot follow"),
    ("missing.json", "missing.json does not exist"),
])
def test_a_recipe_the_methods_cannot_share_is_refused_before_any_file(osb, tmp_path, recipe, message):
    with pytest.raises(SystemExit, match=None) as info:
        osb.main(["--smoke", "--out-dir", str(tmp_path), "--train-recipe", recipe])
    assert message in str(info.value)
    assert not (tmp_path / "oneshot.json").exists()


def test_the_recipe_reaches_b_c_and_the_supernet_not_as_a_step_mode(osb, tmp_path):
    recipe = tmp_path / "summary.json"
    recipe.write_text(json.dumps({"recipe": {"grad_clip": 1.0, "augment": {"crop": 0.0625, "flip": True},
                                             "compile": "graph", "warmup": 0.1}}))
    args = osb.resolve_args(osb.parse_args(["--smoke", "--train-recipe", str(recipe)]))
    exp = osb.experiment(args)
    assert exp["train_recipe"] == {"grad_clip": 1.0, "augment": {"crop": 0.0625, "flip": True}, "warmup": 0.1}
    assert osb.supernet_recipe(exp["train_recipe"]) == dict(grad_clip=1.0, warmup=0.1, augment_crop=0.0625,
                                                             augment_flip=True)
    kw = dict(storage="sqlite:///:memory:", results_dir=str(tmp_path), supernet_dir=tmp_path / "sn")
    assert json.loads(osb.search_settings(exp, "B", 0, **kw).train_recipe) == exp["train_recipe"]
    assert json.loads(osb.search_settings(exp, "C", 0, **kw).train_recipe) == exp["train_recipe"]
    assert osb.search_settings(exp, "A", 0, **kw).train_recipe is None  # A's truth is the supernet's own recipe
    assert osb.supernet_recipe(None) == {}
