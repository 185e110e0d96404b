"""bench/supernet.py --smoke on the CPU: a cut run resumed to the end with ground truth 2's recipe (less its
batch and budget), the summary's keys, the refused resume."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
#: ground truth 2's recipe without what --smoke sets itself (batch) and its budget (steps)
RECIPE = {k: v for k, v in json.loads((ROOT / "results" / "benchmarks" / "groundtruth2-summary.json").read_text())[
    "recipe"].items() if k not in ("batch_size", "steps", "eval_every")}


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    import supernet

    yield supernet
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def smoke_dir(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("sn")
    recipe = ["--train-recipe", json.dumps(RECIPE)]
    assert bench.main(["--smoke", "--out-dir", str(out), "--max-steps", "1"] + recipe) == bench.PAUSED  # cut
    assert bench.main(["--smoke", "--out-dir", str(out)] + recipe) == 0
    return out


def test_summary_has_the_issues_keys(smoke_dir):
    s = json.loads((smoke_dir / "supernet-summary.json").read_text())
    assert set(s) == {"gpu", "dataset", "epochs", "n_archs", "supernet", "baselines", "presets_top1_supernet",
                      "tertiles_by", "train_recipe"}  # the issue's keys, and what the run's numbers mean
    assert s["tertiles_by"].startswith("params") and s["train_recipe"] == {
        k: v for k, v in RECIPE.items() if k != "compile"}
    assert s["gpu"] == "cpu" and s["dataset"] == "fashion-mnist" and s["epochs"] == 0.25 and s["n_archs"] == 9
    sup = s["supernet"]
    assert set(sup) == {"kendall_tau", "ci95", "tertile_tau", "mean_gap", "cost_ratio", "eval_s_per_arch"}
    assert -1 <= sup["kendall_tau"] <= 1 and len(sup["ci95"]) == 2 and len(sup["tertile_tau"]) == 3
    assert all(t is None or -1 <= t <= 1 for t in sup["tertile_tau"])
    assert math.isfinite(sup["mean_gap"]) and sup["cost_ratio"] > 0 and sup["eval_s_per_arch"] > 0
    assert {"params", "flops"} <= set(s["baselines"])
    assert all(set(b) == {"kendall_tau"} for b in s["baselines"].values())
    assert s["presets_top1_supernet"] == {}


def test_results_record_each_unit_once_across_sessions(smoke_dir):
    d = json.loads((smoke_dir / "supernet-bench.json").read_text())
    units = [u for s in d["sessions"] for u in s["units"]]
    assert units[0] == "supernet:paused:1" and "supernet:done:2" in units
    evals = [u for u in units if u.startswith("eval:")]
    assert len(evals) == len(set(evals)) == 9
    assert units.count("standalone") == 1
    rows = d["analysis"]["rows"]
    gt = json.loads((smoke_dir / "smoke-groundtruth.json").read_text())
    assert {r["arch_id"] for r in rows} == {a["arch_id"] for a in gt["archs"]}
    assert all(r["standalone"] == next(a["top1"] for a in gt["archs"] if a["arch_id"] == r["arch_id"]) for r in rows)
    assert d["analysis"]["tertile_key"] == "params" and d["standalone"]["images_per_s"] > 0
    # the supernet and the stand-alone run trained with the recipe
    meta = json.loads((smoke_dir / "supernet-run" / "supernet.json").read_text())["recipe"]
    assert (meta["grad_clip"], meta["label_smoothing"], meta["augment_crop"], meta["augment_flip"], meta["lr"]) == (
        1.0, 0.1, 0.0625, True, 3.5e-4)


def test_a_resume_with_other_settings_is_refused(bench, smoke_dir):
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--smoke", "--out-dir", str(smoke_dir), "--lr", "0.5"])
