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
    assert (tmp_path / "summary.png").stat().st_size > 10_000  # the curves behind the tables


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
    # the budget plan's second seed at 2E: its four smallest archs, so the 2E spread has its own seed sd
    reseeded = [r["arch"] for r in both if r["plan"] == "budget" and r["seed"] == 1]
    assert reseeded == ["fv0", "fv1", "fv2", "fv3"]  # params 0..3 in this pool
    assert all(r["tag"] == "2E" and r["recipe"]["steps"] == gt2.steps_for(32.0, 512)
               for r in both if r["plan"] == "budget" and r["seed"] == 1)


def test_readme_quotes_the_odd_task_ceiling_from_its_json():
    data = json.loads((ROOT / "results" / "benchmarks" / "odd-ceiling.json").read_text())
    text = " ".join((ROOT / "README.md").read_text().split())
    ceil = {c["items"]: c["odd_top1_bayes"] for c in data["ceilings"]}
    assert f"to {data['item_top1']:.1f} % top-1" in text
    assert f"**{ceil[3]:.1f} %** on the 3-item task" in text and f"(**{ceil[5]:.1f} %** with 5 items" in text


def test_the_gt_plan_exports_the_supernet_benchs_ground_truth(gt2):
    from search_spaces import PRESETS

    cfg = PRESETS["faster_vit_0_224"].to_dict()
    args = _args(gt2, n_archs=1, n_reseed=1)
    first, second = gt2.plan_gt(args.budget_epochs, args.task, ["fv0"], 1)  # found by run_key, not by label
    data = dict(archs={"fv0": dict(config=cfg)}, runs={gt2.run_key(first): dict(first, plan="data", top1=80.0),
                                                       gt2.run_key(second): dict(second, top1=82.0)})
    (arch,) = gt2.stand_alone_truth(data, args)["archs"]
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


def test_the_readme_table_of_finished_runs_is_the_json(gt2):
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
    args = gt2.parse_args(["--plans", "data,recipe,budget,gt,canvas"])
    planned = gt2.build_plans(args.plans.split(","), args, gt2.load_arch_pool(False))
    assert f"**Status: {len(data['runs'])} of the {len(planned)} runs done**" in text
    flat = " ".join(text.split())
    for rep in data.get("repeats", []):  # a same-seed repeat beside the run it repeats
        first = data["runs"][gt2.run_key(rep)]
        assert f"gave {first['top1']:.2f} and {rep['top1']:.2f}" in flat


# ---------------------------------------------------------------------------------------------
# fit-aware scheduling (synthetic finished runs, no training)
# ---------------------------------------------------------------------------------------------
def _done(gt2, arch, seconds, end, steps=100, **extra):
    recipe = dict(steps=steps, batch_size=100, resolution=64)
    return dict(arch=arch, status="ok", seconds=seconds, recipe=recipe,
                finished_at=f"2026-01-01T00:{end // 60:02d}:{end % 60:02d}", **extra)


def _todo(arch, steps=100, resolution=64, tag="E"):
    return dict(plan="gt", arch=arch, tag=tag, seed=0, data="d", recipe=dict(steps=steps, batch_size=100,
                                                                              resolution=resolution))


def test_concurrency_is_rebuilt_from_overlapping_records(gt2):
    a = _done(gt2, "big", 100.0, 100)  # 0..100 s
    b = _done(gt2, "small", 50.0, 100)  # 50..100 s: shares half of a's life
    assert gt2.run_concurrency(a, [a, b]) == 1.5 and gt2.run_concurrency(b, [a, b]) == 2.0
    assert gt2.run_concurrency(dict(a, concurrency=3.0), [a, b]) == 3.0  # recorded by the driver: trusted


def test_the_duration_model_divides_out_contention_and_falls_back_by_params(gt2):
    # "big" trained 10,000 images in 100 s while 2 runs shared the GPU throughout: 50 s alone
    finished = [_done(gt2, "big", 100.0, 100, concurrency=2.0), _done(gt2, "small", 10.0, 200, concurrency=1.0)]
    archs = {"big": dict(params=100), "small": dict(params=1), "mid": dict(params=10), "unknown": {}}
    m = gt2.DurationModel(finished, archs, workers=4)
    assert m.solo(_todo("big")) == (50.0, "arch")
    assert m.wall(_todo("big", steps=200)) == (400.0, "arch")  # twice the steps, 4 workers busy
    assert m.solo(_todo("big", resolution=128))[0] == 200.0  # 4x the pixels, same arch at another resolution
    solo, basis = m.solo(_todo("mid"))  # power law through (1, 10 s) and (100, 50 s): 10 * 10**0.35
    assert basis == "params" and abs(solo - 10 * 10 ** (0.5 * 0.69897)) < 1e-6
    assert m.solo(_todo("unknown")) == (60.0 / 20_000 * 10_000, "global")
    assert gt2.DurationModel([], archs, workers=4).solo(_todo("big"))[1] == "assumed"


def test_choose_next_skips_runs_that_would_be_cut_and_fills_with_shorter_ones(gt2):
    finished = [_done(gt2, "big", 100.0, 100, concurrency=1.0), _done(gt2, "small", 10.0, 200, concurrency=1.0)]
    m = gt2.DurationModel(finished, {"big": {}, "small": {}, "guess": {}}, workers=2)
    pending = [_todo("big"), _todo("small"), _todo("big", steps=50)]  # walls 200, 20, 100 s
    assert gt2.choose_next(pending, m, 0.0, 420.0, 540.0) == (0, [])  # priority order when all fit
    i, passed = gt2.choose_next(pending, m, 400.0, 420.0, 540.0)  # 400 + 220 > 540: the big run waits
    assert i == 1 and [j for j, _ in passed] == [0] and "ends after the hard stop" in passed[0][1]
    assert gt2.choose_next(pending, m, 425.0, 420.0, 540.0)[0] == 1  # past the time budget, a measured run still fits
    assert gt2.choose_next(pending, m, 530.0, 420.0, 540.0)[0] is None  # nothing fits 10 s before the hard stop
    # the 10 % margin: 200 s + 20 s must end before the hard stop
    assert gt2.choose_next(pending[:1], m, 320.0, 420.0, 540.0)[0] == 0
    assert gt2.choose_next(pending[:1], m, 321.0, 420.0, 540.0)[0] is None
    # past --time-budget a run whose duration is only a guess does not start
    i, passed = gt2.choose_next([_todo("guess", steps=10), _todo("small")], m, 425.0, 420.0, 540.0)
    assert i == 1 and "global estimate" in passed[0][1]
    assert gt2.choose_next([_todo("guess")], m, 10.0, 420.0, 540.0)[0] == 0  # before it, a guess that fits goes
    _, passed = gt2.choose_next([_todo("big", steps=300)], m, 0.0, 420.0, 540.0)  # 600 s with 2 workers
    assert "never fits a call" in passed[0][1]


def test_a_run_too_long_for_a_full_call_is_reserved_with_fewer_runs_beside_it(gt2):
    finished = [_done(gt2, "big", 100.0, 100, concurrency=1.0), _done(gt2, "small", 10.0, 200, concurrency=1.0)]
    m = gt2.DurationModel(finished, {"big": {}, "small": {}, "guess": {}}, workers=4)
    long, short = _todo("big", steps=300), _todo("small")  # solo 300 s and 10 s
    assert gt2.fitting_cap(long, m, 540.0) == 1  # 300 s * 1.1 fits once, not twice, in 540 s
    assert gt2.fitting_cap(long, m, 700.0) == 2 and gt2.fitting_cap(short, m, 540.0) == 4
    assert gt2.fitting_cap(long, m, 300.0) == 0  # not even alone: never reserved
    assert gt2.reserve_long_run([short, long], m, 540.0) == (1, 1)  # the short one fits a full call
    assert gt2.reserve_long_run([short, _todo("big")], m, 540.0) is None  # 100 s * 4 fits: nothing to reserve
    assert gt2.reserve_long_run([long], m, 300.0) is None
    # a guessed duration never idles workers, even if the guess says it would fit alone
    assert gt2.reserve_long_run([_todo("guess", steps=3000)], m, 10 ** 6 / 300) is None
    # the first such run in priority order is reserved, with the largest cap that fits
    assert gt2.reserve_long_run([short, _todo("big", steps=200), long], m, 540.0) == (1, 2)


def test_the_share_clock_averages_the_runs_on_the_gpu(gt2):
    clock = gt2._ShareClock()
    clock.start(0, 0.0)
    clock.start(1, 10.0)
    assert clock.end(1, 20.0) == 2.0  # shared its whole life
    assert clock.end(0, 40.0) == 1.25  # 10 s alone, 10 s shared, 20 s alone: (10 + 20 + 20) / 40
    assert clock.end(5, 41.0) is None


# ---------------------------------------------------------------------------------------------
# analysis on synthetic stores
# ---------------------------------------------------------------------------------------------
def _pool(n_extra=14):
    names = ["fv0", "fv1", "fv2", "fv3", "s00", "s21"] + [f"x{i:02d}" for i in range(n_extra)]
    return {n: dict(params=1000 + i, arch_id=f"id-{n}") for i, n in enumerate(names)}


def _args(gt2, **kw):
    import argparse

    base = dict(task=gt2.DATA_STREAM, probe_epochs=16.0, budget_epochs=16.0, n_archs=8, n_reseed=2, arch_source=None)
    return argparse.Namespace(**dict(base, **kw))


def _record(run, top1, history=None, params=1):
    return dict(run, top1=top1, top1_history=history or [[1, top1 - 5], [2, top1]], params=params, seconds=1.0,
                status="ok", gpu="cpu")


def _store(gt2, pool, runs_top1):
    """A results file holding ``runs`` (as build_plans dedups them: first plan's labels) with the given top-1."""
    return dict(archs=pool, runs={gt2.run_key(r): _record(r, t, params=pool[r["arch"]]["params"])
                                  for r, t in runs_top1})


def test_shared_runs_count_in_every_plan_that_holds_them(gt2):
    pool = _pool()
    args = _args(gt2)
    runs = gt2.build_plans(["data", "budget", "gt"], args, pool)
    # the data plan's stream runs come first: the gt/budget runs of the same archs are stored as plan "data"
    assert {r["plan"] for r in runs if r["arch"] == "fv0" and r["seed"] == 0 and r["data"] == gt2.DATA_STREAM
            and r["recipe"]["steps"] == gt2.steps_for(16.0, 512)} == {"data"}
    data = _store(gt2, pool, [(r, 80.0 + pool[r["arch"]]["params"] % 7 + r["seed"] * 0.1) for r in runs])
    assert not [r for r in data["runs"].values() if r["plan"] == "gt" and r["arch"] == "fv0"]
    plans = gt2.finished_by_plan(data, args)
    assert len({r["arch"] for r in plans["gt"]}) == 8 and {"fv0", "fv1", "s00"} <= {r["arch"] for r in plans["gt"]}
    assert all(r["plan"] == "gt" and r["tag"] == "E" for r in plans["gt"])
    assert {r["arch"] for r in plans["budget"] if r["tag"] == "E"} >= set(gt2.PRESETS)  # the gt plan's runs, too
    s = gt2.summarize(data, args)
    # the plan re-seeds fv0 and s00; the data plan's second seed on the stream re-seeds all six named nets
    assert s["n_archs"] == 8 and s["n_reseeded"] == 6 and set(s["presets_top1"]) == {
        "faster_vit_0", "faster_vit_1", "faster_vit_2", "faster_vit_3"}
    assert s["budget"]["budgets"]["E"]["n"] == 14 and s["budget_tau"]["E_vs_2E"] == 1.0  # same top-1 per arch
    # another --n-archs selects other runs of the same file
    assert gt2.summarize(data, _args(gt2, n_archs=6))["n_archs"] == 6


def test_the_chosen_task_comes_from_the_arguments(gt2):
    s = gt2.summarize(dict(archs=_pool(), runs={}), _args(gt2, budget_epochs=24.0))
    assert s["dataset"] == gt2.DATA_STREAM and s["train_images"] == "on-the-fly" and s["epochs"] == 24.0
    assert s["recipe"]["lr"] == 3.5e-4 and s["recipe"]["steps"] == gt2.steps_for(24.0, 512)
    s = gt2.summarize(dict(archs=_pool(), runs={}), _args(gt2, task="fmnist-odd:train=160000"))
    assert s["train_images"] == 160000 and REQUIRED <= set(s)
    assert "no gt-plan run" in s["proxies_tau"]["note"] and s["gt"]["n_archs"] == 0
    text = gt2.markdown(s)  # nothing trained: every table says so instead of failing
    assert "Recipe probes: none finished yet" in text and "no run finished yet" in text
    assert "Data probes: none finished yet" in text and "Stability: no run finished yet." in text


def test_the_recipe_table_has_the_base_and_every_variant_with_swings(gt2):
    pool = _pool()
    args = _args(gt2)
    base = [r for r in gt2.plan_members(args, pool)["recipe"] if r["tag"] == "base"]
    lrhalf = [r for r in gt2.plan_recipe(16.0, args.task) if r["tag"] == "lrhalf"]
    assert len(base) == len(lrhalf) == 3 and lrhalf[0]["recipe"]["lr"] == 1.75e-4
    dip = [[1, 60.0], [2, 42.0], [3, 80.0]]
    crash = [[1, 60.0], [2, 30.0], [3, 35.0]]
    runs = {gt2.run_key(r): _record(r, 80.0, dip if r["arch"] == "fv2" else None) for r in base}
    runs.update({gt2.run_key(r): _record(r, 35.0 if r["arch"] == "fv3" else 85.0, crash if r["arch"] == "fv3" else None)
                 for r in lrhalf})
    rows = gt2.summarize(dict(archs=pool, runs=runs), args)["recipe_probes"]
    assert [r["variant"] for r in rows] == ["base", "lrhalf"]
    assert rows[0]["largest_swing"]["fv2"] == 18.0 and not rows[0]["collapsed"]["fv2"]
    assert rows[1]["collapsed"] == {"fv2": False, "fv3": True, "s00": False}
    assert "lrhalf lr=0.000175" in gt2.recipe_markdown(dict(recipe_probes=rows))


def test_the_budget_table_taus_and_seed_sd(gt2):
    pool = _pool()
    args = _args(gt2)
    archs = gt2.budget_archs(pool)
    runs = gt2.plan_budget(16.0, args.task, archs, reseed_2e=["s00"])
    rank = {a: i for i, a in enumerate(archs)}
    top1 = {"E/4": lambda a: 70.0 - rank[a], "E": lambda a: 80.0 + rank[a], "2E": lambda a: 90.0 + rank[a]}
    data = _store(gt2, pool, [(r, top1[r["tag"]](r["arch"]) + 2.0 * r["seed"]) for r in runs])  # s00 2E: +2
    twin = next(r for r in runs if r["tag"] == "E" and r["arch"] == "fv0")
    data["runs"][gt2.run_key(dict(twin, seed=1))] = _record(dict(twin, seed=1), 81.0)  # fv0 at E: 80 and 81
    b = gt2.budget_table(gt2.finished_by_plan(data, args), data)
    assert b["tau"]["quarter_vs_E"]["kendall_tau"] == -1.0 and b["tau"]["quarter_vs_E"]["n"] == 14
    assert b["tau"]["E_vs_2E"]["kendall_tau"] == 1.0 and b["budgets"]["2E"]["n"] == 14  # seed 1 is not a row
    assert b["budgets"]["E"]["seed_sd"] == round(0.5 ** 0.5, 3) and b["budgets"]["2E"]["seed_sd"] == round(2 ** 0.5, 3)
    assert b["budgets"]["E/4"]["seed_sd"] is None
    assert b["budgets"]["E"]["size_tau_params"] is not None
    moved = b["tau"]["E_vs_2E"]  # every arch gains 10 points from E to 2E: same spread, same size trend
    assert moved["gain"] == [10.0, 10.0] and moved["spread_sd"][0] == moved["spread_sd"][1] > 0
    assert moved["size_tau_params"][0] == moved["size_tau_params"][1] is not None
    assert b["tau"]["quarter_vs_E"]["gain"][0] < b["tau"]["quarter_vs_E"]["gain"][1]  # E/4 reversed: gains differ
    assert "- E_vs_2E, on the 14 archs run at both:" in gt2.budget_markdown(dict(budget=b))


def test_the_presets_order_against_seed_noise(gt2):
    ordered = {"fv0": [80.0, 80.2], "fv1": [82.0, 82.2], "fv2": [84.0], "fv3": [86.0]}
    assert gt2.presets_order(ordered, 0.2)["beyond_noise"] is True
    assert gt2.presets_order(ordered, 2.0)["beyond_noise"] is False  # same means, noise too large
    assert gt2.presets_order(ordered, None)["beyond_noise"] is None
    flipped = dict(ordered, fv3=[83.0])
    assert gt2.presets_order(flipped, 0.2)["paper_order"] is False and not gt2.presets_order(flipped, 0.2)[
        "beyond_noise"]
    assert gt2.presets_order({"fv0": [1.0]}, 0.1)["paper_order"] is None


def test_proxies_tau_on_the_new_ground_truth(gt2, tmp_path):
    pool = _pool()
    names = ["fv0", "fv1", "fv2", "fv3", "s00"]
    source = tmp_path / "groundtruth.json"
    source.write_text(json.dumps(dict(
        settings=dict(seed=0), archs=[dict(name=n, arch_id=f"id-{n}") for n in names],
        proxies={f"id-{n}": dict(values=dict(good=dict(value=float(i)), bad=dict(value=-float(i)),
                                             broken=dict(value=None)))
                 for i, n in enumerate(names[:4])},  # s00 has no proxy record
        runs=[dict(kind="full", seed=0, arch_id=f"id-{n}", top1=50.0 - i) for i, n in enumerate(names)]
        + [dict(kind="full", seed=1, arch_id="id-fv0", top1=99.0)])))
    gt_runs = [r for r in gt2.plan_gt(16.0, gt2.DATA_STREAM, names + ["s21"], 1)]
    data = _store(gt2, pool, [(r, 80.0 + names.index(r["arch"]) if r["arch"] in names else 70.0) for r in gt_runs])
    p = gt2.summarize(data, _args(gt2, arch_source=source))["proxies_tau"]
    assert p["n_gt_archs"] == 6
    assert p["rows"]["good"] == dict(kendall_tau=1.0, spearman=1.0, n=4)
    assert p["rows"]["bad"]["kendall_tau"] == -1.0 and "broken" not in p["rows"]
    assert p["rows"]["top1_4ep_first_gt"] == dict(kendall_tau=-1.0, spearman=-1.0, n=5)
    assert "| good | 1.00 | 1.00 | 4 |" in gt2.markdown(gt2.summarize(data, _args(gt2, arch_source=source)))


def _configured_pool():
    """Pool entries with real configs (224 px) and the params ground truth 2's runs record (64 px, 10 classes)."""
    from evaluators.cost import analytic_params
    from search_spaces import PRESETS

    names = {"fv0": "faster_vit_0_224", "fv1": "faster_vit_1_224", "s00": "faster_vit_0_224", "x00": "faster_vit_2_224"}
    pool = {}
    for n, preset in names.items():
        cfg = PRESETS[preset]
        if n == "s00":  # another architecture than fv0
            cfg = cfg.replace(mlp_ratio=2.0)
        pool[n] = dict(config=cfg.to_dict(), arch_id=cfg.arch_id,
                       params=analytic_params(cfg.at_resolution(64).replace(num_classes=10)))
    return pool


def _first_gt(path, pool, ids=None):
    ids = ids or {n: p["arch_id"] for n, p in pool.items()}
    path.write_text(json.dumps(dict(
        settings=dict(seed=0), archs=[dict(name=n, arch_id=i) for n, i in ids.items()],
        proxies={ids[n]: dict(values=dict(good=dict(value=float(k)), params=dict(value=1.0), flops=dict(value=2.0),
                                          broken=dict(value=None)))
                 for k, n in enumerate(["fv0", "fv1", "s00"])},  # x00 has no proxy record
        runs=[dict(kind="full", seed=0, arch_id=i, top1=40.0) for i in ids.values()])))
    return path


def test_the_exported_truth_carries_sizes_predicted_throughput_and_baselines(gt2, tmp_path):
    from evaluators.cost import analytic_flops
    from evaluators.predictor import load_predictor
    from search_spaces import FasterViTConfig

    sys.path.insert(0, str(BENCH))
    import supernet

    pool = _configured_pool()
    args = _args(gt2, n_archs=4, n_reseed=1, arch_source=_first_gt(tmp_path / "gt1.json", pool))
    runs = gt2.build_plans(["budget", "gt"], args, pool)
    top1 = {"E/4": 60.0, "E": 80.0, "2E": 85.0}
    data = _store(gt2, pool, [(r, top1[r["tag"]] + list(pool).index(r["arch"]) + r["seed"]) for r in runs])
    truth = gt2.stand_alone_truth(data, args, num_classes=10)
    p = load_predictor("h100")
    assert truth["throughput_source"]["predictor"] == "h100" and "H100" in truth["throughput_source"]["gpu"]
    assert truth["throughput_source"]["resolution"] == [224] and truth["size_at"] == dict(
        truth["size_at"], resolution=64, num_classes=10)
    by_name = {a["name"]: a for a in truth["archs"]}
    assert set(by_name) == set(pool)
    for n, a in by_name.items():
        cfg = FasterViTConfig.from_dict(pool[n]["config"])
        assert a["arch_id"] == cfg.arch_id and a["params"] == pool[n]["params"]
        assert a["flops"] == analytic_flops(cfg.at_resolution(64).replace(num_classes=10))
        assert a["throughput"] == p.predict(cfg)["images_per_s"]
    assert by_name["fv0"]["top1"] == 80.5 and by_name["fv0"]["seeds"] == 2  # re-seeded: seeds 0 and 1
    proxies = truth["proxies"]
    assert proxies[by_name["fv1"]["arch_id"]]["values"] == {"good": {"value": 1.0}, "train@E/4": {"value": 61.0}}
    assert proxies[by_name["x00"]["arch_id"]]["values"] == {"train@E/4": {"value": 63.0}}  # no zero-cost record
    # bench/supernet.py reads all of it: throughput tertiles, sizes, both baselines
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    gt = supernet.read_groundtruth(path)
    assert all(a["throughput"] and a["params"] and a["flops"] for a in gt["archs"])
    assert gt["proxies"]["train@E/4"] == {by_name[n]["arch_id"]: 60.0 + i for i, n in enumerate(pool)}
    assert set(gt["proxies"]) == {"good", "train@E/4"} and gt["throughput_source"]["predictor"] == "h100"
    assert "h100" in supernet._throughput_source(gt["throughput_source"])
    sys.path.remove(str(BENCH))


def test_the_export_refuses_sizes_or_arch_ids_that_are_not_the_trained_ones(gt2, tmp_path):
    pool = _configured_pool()
    args = _args(gt2, n_archs=4, n_reseed=1, arch_source=_first_gt(tmp_path / "gt1.json", pool))
    runs = gt2.build_plans(["gt"], args, pool)
    data = _store(gt2, pool, [(r, 80.0) for r in runs])
    with pytest.raises(ValueError, match="recorded params .* at 64 px with 100 classes"):
        gt2.stand_alone_truth(data, args, num_classes=100)
    ids = {n: p["arch_id"] for n, p in pool.items()}
    bad = _first_gt(tmp_path / "bad.json", pool, dict(ids, fv1=ids["x00"]))
    with pytest.raises(ValueError, match="fv1: the first ground truth's arch_id"):
        gt2.stand_alone_truth(data, _args(gt2, n_archs=4, n_reseed=1, arch_source=bad), num_classes=10)


def test_the_committed_ground_truths_agree_on_arch_ids_and_export(gt2, tmp_path):
    from search_spaces import FasterViTConfig

    sys.path.insert(0, str(BENCH))
    import supernet

    data = json.loads((ROOT / "results" / "benchmarks" / "groundtruth2.json").read_text())
    first = json.loads(gt2.ARCH_SOURCE.read_text())
    first_ids = {a["name"]: a["arch_id"] for a in first["archs"]}
    assert len(data["archs"]) == 60 and set(data["archs"]) == set(first_ids)
    assert all(FasterViTConfig.from_dict(a["config"]).arch_id == first_ids[n] for n, a in data["archs"].items())
    truth = gt2.stand_alone_truth(data, gt2.parse_args([]), num_classes=10)  # checks the runs' recorded params
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    gt = supernet.read_groundtruth(path)
    ids = {a["arch_id"] for a in gt["archs"]}
    assert len(ids) >= 3 and all(a["throughput"] > 0 for a in gt["archs"])
    assert all(set(v) == ids for name, v in gt["proxies"].items() if name != "train@E/4")
    assert {"synflow", "az_progressivity", "naswot"} <= set(gt["proxies"])
    sys.path.remove(str(BENCH))


def test_the_readme_tables_and_reading_are_the_committed_summary(gt2):
    """The committed summary is what --analyze makes of the committed runs, and the README's budget,
    gt and proxy tables and the numbers of its reading come from it."""
    data = json.loads((ROOT / "results" / "benchmarks" / "groundtruth2.json").read_text())
    committed = json.loads((ROOT / "results" / "benchmarks" / "groundtruth2-summary.json").read_text())
    assert json.loads(json.dumps(gt2.summarize(data, gt2.parse_args([])))) == committed
    readme = (ROOT / "README.md").read_text()
    for block in (gt2.stability_markdown(committed), gt2.budget_markdown(committed), gt2.gt_markdown(committed),
                  gt2.proxies_markdown(committed)):
        assert block in readme
    text = " ".join(readme.split())
    moved = committed["budget"]["tau"]["E_vs_2E"]
    assert (f"gains {moved['gain'][0]:.1f}–{moved['gain'][1]:.1f} points" in text
            and f"τ(E, 2E) is {moved['kendall_tau']:.2f}" in text)
    size = moved["size_tau_params"]
    assert (f"shrinks from sd {moved['spread_sd'][0]:.2f} at E to {moved['spread_sd'][1]:.2f} at 2E and "
            f"τ(params, top-1) falls from {size[0]:.2f} to {size[1]:.2f}") in text
    two_e = committed["budget"]["budgets"]["2E"]["top1"].values()
    assert f"(top-1 {min(two_e):.1f}–{max(two_e):.1f} % at 2E" in text
    g, rows = committed["gt"], committed["proxies_tau"]["rows"]
    assert f"two seeds at E agree at τ {g['seed_kendall_tau']:.2f} only" in text
    assert f"spread of the means {g['spread_over_seed_sd']:.1f}× the seed sd" in text
    first = rows["top1_4ep_first_gt"]["kendall_tau"]
    assert f"ranks these {committed['proxies_tau']['n_gt_archs']} at τ {first:.2f}" in text
    assert f"is at {rows['az_progressivity']['kendall_tau']:.2f}".replace("-", "−") in text
    assert max(r["kendall_tau"] for k, r in rows.items() if k != "top1_4ep_first_gt") < 0.35
    probe = {p["variant"]: p["top1"] for p in committed["recipe_probes"]}
    base, half = probe["base"]["s00"], probe["lrhalf"]["s00"]
    assert f"half the LR costs s00 {base - half:.2f} points at E ({half:.2f} against {base:.2f})" in text
    w = committed["swings"]
    assert (f"{w['runs_at_or_over']} of {w['runs']} fell by ≥ 10 points between two evaluations" in text
            and f"{gt2._short(w['largest'][0]['arch'])} at {w['largest'][0]['tag']}, fell "
                f"{w['largest'][0]['points']:.1f} points" in text)
    assert (ROOT / "results" / "benchmarks" / "groundtruth2-summary.png").is_file()


def test_the_figure_reads_budgets_and_histories_in_nominal_epochs(gt2):
    args = gt2.parse_args(["--budget-epochs", "16"])
    runs = [dict(arch="s00", seed=0, tag=tag, top1=top1) for tag, top1 in (("2E", 88.0), ("E", 84.5), ("E/4", 71.5))]
    runs.append(dict(arch="s00", seed=1, tag="2E", top1=87.0))  # a second seed is not a budget point
    assert gt2.budget_lines({"budget": runs}, args.budget_epochs) == {"s00": [(4.0, 71.5), (16.0, 84.5), (32.0, 88.0)]}
    run = dict(recipe=dict(batch_size=512), top1_history=[[78, 19.3], [1248, 85.1]])
    assert gt2.history_epochs(run) == [(pytest.approx(0.9984), 19.3), (pytest.approx(15.9744), 85.1)]
    run.update(epochs=32.0, steps=2496)  # the run's own epochs per step (e.g. a user's folder) win
    assert gt2.history_epochs(run) == [(pytest.approx(1.0), 19.3), (pytest.approx(16.0), 85.1)]


def test_swings_count_falls_between_evaluations_and_name_the_largest(gt2):
    runs = [dict(plan="budget", arch="fv1", tag="2E", seed=0, top1_history=[[1, 60.0], [2, 82.0], [3, 50.0], [4, 88.0]]),
            dict(plan="gt", arch="s06", tag="E", seed=0, top1_history=[[1, 70.0], [2, 59.5], [3, 85.0]]),
            dict(plan="gt", arch="s07", tag="E", seed=0, top1_history=[[1, 70.0], [2, 80.0], [3, 85.0]])]
    w = gt2.swing_summary(runs)
    assert (w["runs"], w["runs_at_or_over"]) == (3, 2)
    assert [(x["arch"], x["points"]) for x in w["largest"]] == [("fv1", 32.0), ("s06", 10.5)]  # no zero falls
    line = gt2.stability_markdown(dict(swings=w, collapsed_runs=0))
    assert "2 fell by ≥ 10 points between two evaluations and recovered" in line and "FasterViT-1 (budget 2E" in line


def test_on_a_users_image_folder_epochs_count_its_own_training_images(gt2, tmp_path):
    """``--task imagefolder:PATH``: the budget and gt plans' steps and the summary's train_images come from
    the folder (1,100 images at batch 512: 2 steps an epoch), not from fmnist-odd's nominal 40k."""
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    for split, n in (("train", 550), ("val", 3)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                img.save(tmp_path / split / cls / f"{i}.png")
    args = gt2.parse_args(["--task", f"imagefolder:{tmp_path}", "--budget-epochs", "8", "--n-archs", "3",
                           "--n-reseed", "1"])
    pool = {n: {"params": i} for i, n in enumerate(["fv0", "fv1", "fv2", "fv3", "s00", "s21"] +
                                                   [f"x{i}" for i in range(20)])}
    runs = gt2.build_plans(["budget", "gt"], args, pool)
    steps = {r["tag"]: r["recipe"]["steps"] for r in runs}
    assert steps == {"E": 16, "E/4": 4, "2E": 32} and gt2.steps_for(8.0, 512) == 8 * 78
    s = gt2.summarize(dict(archs=_pool(), runs={}), args)
    assert s["train_images"] == 1100 and s["recipe"]["steps"] == 16
