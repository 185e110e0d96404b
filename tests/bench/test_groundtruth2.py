"""bench/groundtruth2.py on the CPU: a smoke run that trains and resumes, the summary keys automation
reads, and the collapse rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
REQUIRED = {"gpu", "dataset", "train_images", "epochs", "recipe", "budget_tau", "presets_top1", "data_sweep",
            "n_archs", "n_reseeded", "seed_kendall_tau", "spread_sd", "seed_sd", "size_tau_params", "collapsed_runs"}


@pytest.fixture(scope="module")
def gt2():
    sys.path.insert(0, str(BENCH))
    import groundtruth2

    yield groundtruth2
    sys.path.remove(str(BENCH))


def test_smoke_runs_resume_and_summarize(gt2, tmp_path, capsys):
    out = tmp_path / "gt2.json"
    args = ["--smoke", "--plans", "data", "--out", str(out), "--workers", "1"]
    assert gt2.main(args + ["--limit", "2"]) == 0
    first = json.loads(out.read_text())
    assert len(first["runs"]) == 2 and all(r["status"] == "ok" for r in first["runs"].values())
    assert gt2.main(args + ["--limit", "1"]) == 0  # resumes: the two finished runs are not repeated
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 3 and {k: runs[k]["finished_at"] for k in first["runs"]} == {
        k: v["finished_at"] for k, v in first["runs"].items()}
    assert "24 runs in plans data, 2 done, 22 to go" in capsys.readouterr().out
    summary_path = tmp_path / "summary.json"
    assert gt2.main(["--analyze", "--out", str(out), "--summary-out", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert REQUIRED <= set(summary) and summary["gpu"] == "cpu"
    assert summary["data_sweep"][0]["train_images"] == "on-the-fly" and len(summary["data_sweep"][0]["top1"]) == 3
    assert set(summary["budget_tau"]) == {"quarter_vs_E", "E_vs_2E"}


def test_collapse_needs_a_fall_that_does_not_recover(gt2):
    assert gt2.collapsed([[1, 50.0], [2, 52.0], [3, 18.0], [4, 25.0]])
    assert not gt2.collapsed([[1, 50.0], [2, 25.0], [3, 60.0]])  # fell 25 points, then recovered
    assert not gt2.collapsed([[1, 50.0], [2, 35.0], [3, 40.0]])  # fell 15 points only
    assert gt2.largest_swing([[1, 50.0], [2, 25.0], [3, 60.0]]) == 25.0


def test_plans_share_runs_and_steps_are_nominal_epochs(gt2):
    r = gt2.recipe_dict(16.0)
    assert r["steps"] == 16 * (40_000 // 512) and r["eval_every"] == r["steps"] // 16
    pool = {n: {"params": i} for i, n in enumerate(["fv0", "fv1", "fv2", "fv3", "s00", "s21"] +
                                                   [f"x{i}" for i in range(20)])}
    archs = gt2.budget_archs(pool)
    assert len(archs) == 14 and archs[:6] == ["fv0", "fv1", "fv2", "fv3", "s00", "s21"] and len(set(archs)) == 14
    import argparse

    args = argparse.Namespace(probe_epochs=16.0, budget_epochs=16.0, task=gt2.DATA_STREAM, n_archs=8, n_reseed=2)
    both = gt2.build_plans(["data", "budget"], args, pool)
    keys = [gt2.run_key(r) for r in both]
    assert len(keys) == len(set(keys))  # a run in two plans (stream, seed 0, E) is trained once


def test_readme_quotes_the_odd_task_ceiling_from_its_json():
    data = json.loads((ROOT / "results" / "benchmarks" / "odd-ceiling.json").read_text())
    text = " ".join((ROOT / "README.md").read_text().split())
    ceil = {c["items"]: c["odd_top1_bayes"] for c in data["ceilings"]}
    assert f"to {data['item_top1']:.1f} % top-1" in text
    assert f"**{ceil[3]:.1f} %** on the 3-item task" in text and f"(**{ceil[5]:.1f} %** with 5 items" in text


def test_the_gt_plan_exports_the_supernet_benchs_ground_truth(gt2):
    from search_spaces import PRESETS

    cfg = PRESETS["faster_vit_0_224"].to_dict()
    run = dict(plan="gt", arch="fv0", data="d", tag="E", recipe={}, top1=80.0, params=1)
    data = dict(archs={"fv0": dict(config=cfg)}, runs={"a": dict(run, seed=0), "b": dict(run, seed=1, top1=82.0)})
    (arch,) = gt2.stand_alone_truth(data)["archs"]
    assert arch["top1"] == 81.0 and arch["seeds"] == 2 and arch["arch_id"] == PRESETS["faster_vit_0_224"].arch_id


def test_the_dry_run_estimate_counts_pixels_and_uses_measured_rates(gt2):
    recipe = dict(steps=10, batch_size=100, resolution=128)
    todo = [dict(recipe=recipe), dict(recipe=dict(recipe, resolution=64))]
    assert gt2.pixel_images(todo[0]) == 4 * gt2.pixel_images(todo[1]) == 4000
    assert "an assumed" in gt2.gpu_time_estimate(todo, [], 4)
    finished = [dict(status="ok", seconds=10.0, recipe=dict(recipe, resolution=64)),  # 100 img/s per worker
                dict(status="failed", seconds=1.0, recipe=recipe)]
    line = gt2.gpu_time_estimate(todo, finished, 2)
    assert "200 img/s with 2 workers, from 1 finished runs" in line and "~0 min" in line  # 5000 / 200 s


def test_the_readme_table_of_finished_runs_is_the_json():
    """Every finished data-plan run is in the README's row of its data variant and seed, in its arch's column."""
    root = Path(__file__).resolve().parents[2]
    data = json.loads((root / "results" / "benchmarks" / "groundtruth2.json").read_text())
    text = (root / "README.md").read_text()
    rows = {("40k", 0): "| 40k fixed canvases |", ("160k", 0): "| 160k fixed canvases |",
            ("stream", 0): "| streamed canvases |", ("stream", 1): "| streamed canvases, seed 1 |"}
    done = [r for r in data["runs"].values() if r["plan"] == "data" and r.get("top1") is not None]
    assert done, "no finished run committed"
    lines = text.splitlines()
    header = [c.strip() for c in next(t for t in lines if t.startswith("| data | s00 |")).split("|")]
    names = {"s00": "s00", "s21": "s21", **{f"fv{i}": f"FasterViT-{i}" for i in range(4)}}
    for r in done:
        line = next(t for t in lines if t.startswith(rows[r["tag"], r["seed"]]))
        cells = [c.strip() for c in line.split("|")]
        assert cells[header.index(names[r["arch"]])] == f"{r['top1']:.2f}", (r["arch"], r["tag"], r["top1"])
    assert f"**Status: {len(data['runs'])} of the 118 runs done**" in text
