"""The committed benchmark JSONs are what the README quotes, and their summaries are reproducible.

Each test recomputes a summary from the committed raw results with the analysis code the README
cites and checks that (a) it equals the committed summary (no hand-edited number survives) and
(b) the README prints those numbers. A re-run that changes a result fails here until the README
is rewritten from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RESULTS = ROOT / "results" / "benchmarks"
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def groundtruth_summary():
    import groundtruth_analysis

    return groundtruth_analysis.summarize(json.loads((RESULTS / "groundtruth.json").read_text()))


def test_groundtruth_summary_is_reproduced_and_keeps_the_issue_keys(groundtruth_summary):
    committed = json.loads((RESULTS / "groundtruth-summary.json").read_text())
    assert json.loads(json.dumps(groundtruth_summary)) == committed
    for key in ("dataset", "gpu", "n_archs", "n_reseeded", "seed_kendall_tau", "spread_sd", "seed_sd", "easy_data",
                "proxies", "train_speed", "size_tau", "equal_params_group"):
        assert key in committed, key
    assert committed["gpu"] == "NVIDIA H200" and committed["n_archs"] >= 60 and committed["n_reseeded"] >= 12
    assert len(committed["equal_params_group"]["arch_ids"]) >= 4
    for name in ("train@0.05", "train@0.1", "train@0.25"):
        assert {"kendall_tau", "ci95", "spearman", "seconds_per_arch"} <= set(committed["proxies"][name])


def test_readme_prints_the_groundtruth_numbers(groundtruth_summary):
    import groundtruth_analysis

    s = groundtruth_summary
    for row in groundtruth_analysis.markdown(s).splitlines()[2:]:
        assert row in README, f"README lacks the proxy row {row!r}"
    assert f"| spread across architectures (sd) | {s['spread_sd']:.2f} points |" in README
    assert f"| seed-to-seed sd (re-trained set) | {s['seed_sd']:.2f} points (n = {s['n_reseeded']}) |" in README
    assert f"**{s['spread_over_seed_sd']:.1f}**" in README
    assert f"| seed-to-seed Kendall τ (target ≥ 0.8) | {s['seed_kendall_tau']:.2f} [95% CI" in README
    assert f"τ(params, top-1) = {s['size_tau']['params']:.2f}".replace("= -", "= −") in README
    g, flat = s["equal_params_group"], " ".join(README.replace("**", "").split())
    verdict = "is within noise" if not g["beyond_noise"] else "is beyond noise"
    assert f"That span, {g['span']:.2f} points, {verdict}" in flat
    assert f"(Tukey's studentized range) is {g['span_bound_95']:.2f} (`equal_params_group`" in flat


def test_knob_accuracy_summary_is_reproduced_and_printed():
    import knob_accuracy

    data = json.loads((RESULTS / "knob-accuracy.json").read_text())
    summary = knob_accuracy.summarize(data)
    assert json.loads(json.dumps(summary)) == data["analysis"]
    assert summary["gpu"] == "NVIDIA H200" and len(summary["seeds"]) >= 3
    lines = README.replace("**", "").replace("−", "-").splitlines()
    for g, grp in summary["groups"].items():
        for r in grp["rows"]:
            if r.get("mean") is None:
                continue
            # one README table row carries this variant's mean ± sd, its delta and its verdict together
            cells = [f"| {r['mean']:.2f} ± {r['sd']:.2f} |"]
            if r.get("delta") is not None:
                cells += [f"| {r['delta']:+.2f} |", "| yes" if r["beyond_noise"] else "| no |"]
            assert any(all(c in line for c in cells) for line in lines), (g, r["variant"], cells)


def test_compare_run_measured_at_least_12_peers_and_the_readme_table_is_its():
    d = json.loads((RESULTS / "compare-h200.json").read_text())
    assert d["gpu"] == "NVIDIA H200"
    peers = [r for r in d["rows"] if r["code"] == "timm" and r["img_s"]]
    assert len(peers) >= 12
    ours = {r["name"]: r for r in d["rows"] if r["code"] == "nas"}
    official = {r["name"]: r for r in d["rows"] if r["code"] == "official"}
    for name, r in ours.items():
        assert f"| {name} | {r['img_s']:,.0f} / {official[name]['img_s']:,.0f} |" in README, name
    assert set(d["front"]) == set(ours) and not d["dominated"]  # the README's reading


def test_h100_compare_run_and_its_readme_table():
    """The H100 run of `nas compare`: its rows beside the H200's, and the reading's claims."""
    from scipy.stats import spearmanr

    h100 = json.loads((RESULTS / "compare-h100.json").read_text())
    h200 = json.loads((RESULTS / "compare-h200.json").read_text())
    assert h100["gpu"] == "NVIDIA H100 80GB HBM3" and not h100["skipped"]
    rows = {(r["name"], r["code"]): r["img_s"] for r in h100["rows"] if r["img_s"]}
    base = {(r["name"], r["code"]): r["img_s"] for r in h200["rows"] if r["img_s"]}
    for name in (k for k, code in rows if code == "nas"):
        ours, official = rows[name, "nas"], rows[name, "official"]
        assert (f"| {name} | {ours:,.0f} / {official:,.0f} | {ours / official:.2f} | {base[name, 'nas']:,.0f} | "
                f"{ours / base[name, 'nas']:.2f} |") in README, name
    assert h100["front"] == h200["front"] and not h100["dominated"]  # "the front's order does not differ"
    ratio = [rows[k] / base[k] for k in rows]
    assert f"{min(ratio):.2f}–{max(ratio):.2f}× its H200 speed" in README
    common = sorted(rows)
    rho = spearmanr([rows[k] for k in common], [base[k] for k in common]).statistic
    assert f"Over all {len(common)} measured rows" in README and f"Spearman {rho:.3f}" in README


def test_readme_knob_throughput_table_is_knobs_json():
    d = json.loads((RESULTS / "knobs.json").read_text())
    assert d["complete"] and not d["smoke"] and d["gpu"] == "NVIDIA H200"
    ratio = {(g, r["variant"]): r["ratio"] for g, grp in d["groups"].items() for r in grp["rows"]}
    readme_rows = {"no HAT": ("table_s2", "no_hat"), "`ct_attention=false`": ("table_s2", "no_ct_attention"),
                   "`attn_bias=false`": ("table_s2", "no_attn_bias"), "one 14×14 window in stage 3":
                   ("table_s2", "window14_stage3"), "Table 6: `twins`": ("table_6_fv2", "twins"),
                   "`ct_gate`": ("proposals", "ct_gate"), "`stem=hybrid`": ("proposals", "stem_hybrid")}
    for label, key in readme_rows.items():
        assert f"| {label} | {ratio[key]:.2f} |" in README, label


def test_rung_ranking_is_reproduced_and_printed():
    import rung_ranking

    res = rung_ranking.analyse(json.loads((RESULTS / "groundtruth.json").read_text()))
    committed = json.loads((RESULTS / "rung-ranking.json").read_text())
    assert json.loads(json.dumps(res)) == committed
    assert committed["gpu"] == "NVIDIA H200" and committed["verdict"]["choice"] == "continue"
    for line in rung_ranking.markdown(res).splitlines():
        assert line in README, f"README lacks the rung-ranking row {line!r}"


def test_h100_best_subset_and_its_repeat_are_what_the_readme_says():
    """The H100's best-mode subset: count and quick-vs-best Spearman from the summary, and the
    run-to-run ratios of the repeated 25 (same keys measured in two device calls)."""
    import statistics

    summary = json.loads((RESULTS / "h100-80gb-hbm3-predictor-summary.json").read_text())
    assert summary["gpu"] == "NVIDIA H100 80GB HBM3"
    text = " ".join(README.split())
    assert f"subset: {summary['n_best']} configs**" in text and summary["n_best"] >= 50
    assert f"Spearman {summary['quick_vs_best_spearman']:.3f}" in text
    root = RESULTS.parents[1]
    first = {r["key"]: r for r in map(json.loads, (root / "evaluators/predictors/h100-profile.jsonl").open())}
    again = [json.loads(line) for line in (RESULTS / "h100-best-repeat.jsonl").open()]
    best = [r for r in first.values() if r["mode"] == "best"]
    assert len(best) == summary["n_best"] == summary["n_both"]
    assert all(r["mode"] == "best" and r["key"] in first for r in again)
    assert f"the first {len(again)} measured again" in text
    ratio = [r["images_per_s"] / first[r["key"]]["images_per_s"] for r in again]
    assert f"came out at {min(ratio):.3f}–{max(ratio):.3f}× the first (sd {statistics.pstdev(ratio) * 100:.1f} %)" in text
    speedup = [r["images_per_s"] / first[r["key"].replace("|best|", "|cudagraph|")]["images_per_s"] for r in best]
    assert (f"`best` is {min(speedup):.2f}–{max(speedup):.2f}× the quick mode "
            f"(median {statistics.median(speedup):.2f}×)") in text


def test_readme_prints_the_predictor_cv_numbers():
    """bench/predictor_cv.py's JSON is what the README's predictor table and text quote."""
    import predictor_cv

    result = json.loads((RESULTS / "predictor-cv.json").read_text())
    assert result["gpu"] == "NVIDIA H200" and result["n_records"] >= 200
    assert result["protocol"]["folds"] * result["protocol"]["repeats"] >= 25
    for row in predictor_cv.markdown_rows(result):
        assert row in README, f"README lacks the predictor row {row!r}"
    text = " ".join(README.split())
    for fragment in predictor_cv.readme_sentences(result):
        assert " ".join(fragment.split()) in text, f"README lacks {fragment!r}"


def test_readme_prints_the_best_mode_numbers():
    """bench/throughput.py's best-mode run and bench/profile_dataset.py's summary are what the README quotes;
    the summary's best_mode_ratio_vs_official is that run's ratios (issue #16's keys)."""
    import profile_dataset
    import throughput

    data = json.loads((RESULTS / "throughput-best.json").read_text())
    summary = json.loads((RESULTS / "predictor-summary.json").read_text())
    assert data["parts"]["presets"]["env"]["gpu_name"] == summary["gpu"] == "NVIDIA H200"
    assert summary["best_mode_ratio_vs_official"] == throughput.best_mode_ratios(data)
    assert len(summary["best_mode_ratio_vs_official"]) == 7
    for row in throughput.best_mode_markdown(data):
        assert row in README, f"README lacks the best-mode row {row!r}"
    for key in ("gpu", "n_configs", "n_best", "n_train", "within_10pct", "spearman", "best_mode_ratio_vs_official",
                "quick_vs_best_spearman"):
        assert key in summary, key
    text = " ".join(README.split())
    assert profile_dataset.readme_sentence(summary) in text
    assert (f"{summary['n_train']} training configs, {summary['held_out']['images_per_s']['n']} held out, images/s "
            f"within ±10 % for {summary['within_10pct']:.0%} of them") in text
    records = [json.loads(line) for line in (ROOT / "evaluators" / "predictors" / "h200-profile.jsonl").read_text().splitlines()]
    assert sum(r["mode"] == "cudagraph" for r in records) == summary["n_configs"]
    assert sum(r["mode"] == "best" for r in records) == summary["n_best"]


def test_multifidelity_records_are_reproduced_from_the_committed_studies():
    """The committed GPU run: its summary from its JSON, and each study's record (counts, history,
    front) from the committed ``studies.db``, so the JSON and the database are one run's."""
    import multifidelity as mf

    path = RESULTS / "multifidelity.json"
    data = json.loads(path.read_text())
    summary = json.loads((RESULTS / "multifidelity-summary.json").read_text())
    assert json.loads(json.dumps(mf.summarize(data))) == summary
    assert set(mf.SUMMARY_KEYS) <= set(summary) and summary["gpu"] == "NVIDIA H200"
    assert data["studies"], "no study recorded"
    store = mf.Store(path, data)
    bench = mf.Bench(store, RESULTS / "multifidelity", methods=data["settings"]["methods"],
                     seeds=data["settings"]["seeds"])
    bench.check_storage()
    import optuna

    for key, rec in data["studies"].items():
        study = optuna.load_study(study_name=rec["study"], storage=bench.storage)
        again = json.loads(json.dumps(mf.finite(bench.study_record(study, rec["method"], rec["seed"]))))
        assert again == rec, key
        confirmed = data["confirmations"].get(key, {})  # a run may stop before a new front is re-trained
        assert set(confirmed) <= {str(p["source"]) for p in rec["front"]}, f"{key}: a re-train of no front point"
        if mf.hv_by_method(summary)[rec["method"]][rec["seed"]] is not None:
            assert len(confirmed) == len(rec["front"]), f"{key}: a truth HV over a front not fully re-trained"


def test_readme_prints_the_multifidelity_tables():
    import multifidelity as mf

    data = json.loads((RESULTS / "multifidelity.json").read_text())
    summary = mf.summarize(data)
    for row in mf.markdown(data, summary).splitlines():
        assert row in README, f"README lacks the multifidelity row {row!r}"
    done = [k for k in range(summary["seeds"]) if summary["hv_ratio_per_seed"][k] is not None]
    assert done, "no seed has both an sh and a full truth hypervolume"
    assert f"sh / full truth hypervolume {summary['hv_ratio_per_seed'][done[0]]:.2f} on seed {done[0]}" in README
    assert f"Measured seed noise is {summary['seed_noise']:.2f} points per seed" in README


def _seq(values: list[str]) -> str:
    """How the README lists one number per finished seed: "a", "a and b", "a, b and c"."""
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _expected_findings(data: dict, s: dict, seeds: list[int]) -> list[str]:
    """The phrases of the multifidelity prose, each rebuilt from the run for the finished ``seeds``."""
    import multifidelity as mf

    st = {(m, k): data["studies"][f"{m}:{k}"] for m in mf.METHODS for k in seeds}
    accs = [a for m, k in st for a, _ in mf.truth_points(data, f"{m}:{k}")]

    def each(fmt) -> str:
        return _seq([fmt(k) for k in seeds])

    def hv(m: str, k: int) -> str:
        return f"{s['hv'][m][k] / 1e6:.3f}"

    def stopped(k: int) -> float:
        return st["sh", k]["trial_seconds"]["pruned@1ep"]

    def full_trial(k: int) -> float:
        return st["random", k]["trial_seconds"]["complete"]

    def trained(m: str):
        return each(lambda k: str(st[m, k]["n_trained"]))

    def fastest(m: str, k: int) -> list[float]:
        return max(mf.truth_points(data, f"{m}:{k}"), key=lambda q: q[1])

    fv0 = s["presets"]["faster_vit_0_224"]
    fv0_seeds = [k for k in seeds if k in fv0["dominated_on_seeds"]["sh"]]

    def fv0_margin(k: int) -> str:  # sh's most accurate point past FasterViT-0's bar on seed k
        passing = mf.dominated_by(mf.truth_points(data, f"sh:{k}"), fv0, s["seed_noise"])
        return f"{max(a for a, _ in passing):.2f} % on seed {k}"

    per_seed = [phrase for k in seeds for phrase in (
        f"{st['full', k]['n_complete']} complete trials", f"(median {st['full', k]['trial_seconds']['complete']:.1f} s)",
        f"runs at {fastest('full', k)[1]:,.0f} img/s",
        f"against {fastest('sh', k)[1]:,.0f} for sh")]
    by_time = s["hv_search_by_time"]

    def early(k: int) -> str:  # sh / full of the search-value HV after the first time fraction
        return f"{by_time['hv']['sh'][k][0] / by_time['hv']['full'][k][0]:.3f}"

    def near_final(m: str) -> str:
        return each(lambda k: f"{by_time['seconds_to_99pct_of_final'][m][k]:.0f} s")

    mean = {m: sum(s["hv"][m][k] for k in seeds) / len(seeds) for m in mf.METHODS}
    fails = [r["trial_seconds"]["fail"] for r in st.values() if "fail" in r["trial_seconds"]]
    n_failed, n_trials = (sum(r[key] for r in st.values()) for key in ("n_failed", "n_trials"))
    return [
        "sh / full truth hypervolume " + each(lambda k: f"{s['hv_ratio_per_seed'][k]:.2f} on seed {k}"),
        f"the ratio of the seeds' mean hypervolumes is {mean['sh'] / mean['full']:.3f}",
        "sh / random truth hypervolume is "
        + each(lambda k: f"{s['hv']['sh'][k] / s['hv']['random'][k]:.3f}×"),
        "Its truth hypervolume is " + each(lambda k: f"{hv('full', k)} on seed {k}")
        + f" (sh: {each(lambda k: hv('sh', k))}; random: {each(lambda k: hv('random', k))})",
        f"every front point re-trains to {min(accs):.1f}–{max(accs):.1f} %",
        "took " + each(lambda k: f"{stopped(k):.1f} s") + f" (median, seeds {each(str)}) against "
        + each(lambda k: f"{full_trial(k):.1f} s") + " for a full random trial: "
        + each(lambda k: f"{round(100 * stopped(k) / full_trial(k))} %") + ", not 25 %",
        f"sh trained {trained('sh')} architectures against random's {trained('random')}",
        f"{n_failed} of {n_trials} trials ({100 * n_failed / n_trials:.0f} %) fail early (medians "
        f"{min(fails):.1f}–{max(fails):.1f} s)",
        f"Measured seed noise is {s['seed_noise']:.2f} points per seed (pooled, {s['seed_noise_dof']} degrees",
        f"margin is thin: {_seq([fv0_margin(k) for k in fv0_seeds])} against a bar of {fv0['bar']:.2f} %",
        f"sh / full is {each(early)} after a quarter of the time ({by_time['seconds'][0]:.0f} s)",
        f"reaches 99 % of its final value after {near_final('sh')} (seeds {each(str)}), random's after "
        f"{near_final('random')}, NSGA-II's after {near_final('full')}",
        *per_seed,
    ]


def test_readme_findings_are_the_committed_numbers():
    """The prose under the multifidelity tables quotes each finished seed; every number in it comes
    from the run (a new seed fails here until the prose is rewritten from it)."""
    import multifidelity as mf

    data = json.loads((RESULTS / "multifidelity.json").read_text())
    s = mf.summarize(data)
    seeds = [k for k in range(s["seeds"]) if all(s["hv"][m][k] is not None for m in mf.METHODS)]
    assert seeds, "no seed has all three studies re-trained"
    flat = " ".join(README.split())
    for text in _expected_findings(data, s, seeds):
        assert text in flat, f"README lacks {text!r}"
    for k in seeds:  # NSGA-II's cache hits, in either of the prose's two phrasings
        hits = data["studies"][f"full:{k}"]["n_cache_hits"]
        assert f"{hits} were repeats" in flat or f"{hits} cache hits" in flat, f"README lacks full seed {k}'s {hits} cache hits"


def test_offgrid_records_are_off_the_training_grid_and_the_readme_quotes_them():
    """The off-grid set (issue #16: resolutions outside the training grid, reported apart) is one GPU's, at
    resolutions the dataset never has, and its summary numbers are the README's."""
    import profile_dataset

    summary = json.loads((RESULTS / "predictor-summary.json").read_text())
    path = profile_dataset.offgrid_path(ROOT / "evaluators" / "predictors" / "h200-profile.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["gpu_name"] for r in records} == {summary["gpu"]} and not any(r["error"] for r in records)
    assert {r["resolution"][0] for r in records}.isdisjoint(profile_dataset.RESOLUTIONS)
    off = summary["offgrid"]["images_per_s"]
    assert off["n"] == len(records) >= 100
    text = " ".join(README.split())
    assert (f"**Off the grid** (the {off['n']} configs at {min(r['resolution'][0] for r in records)}–"
            f"{max(r['resolution'][0] for r in records)} px): images/s within ±10 % for {off['within_10pct']:.0%}") in text


def test_kernel_profile_buckets_and_ceilings_are_recomputed_and_the_readme_prints_them():
    """bench/kernel_profile.py's committed run: each record's buckets from its kernels, each ceiling from
    the two records, and the README's table is that run's."""
    import kernel_profile

    data = json.loads((RESULTS / "kernel-profile.json").read_text())
    assert data["env"]["gpu_name"] == "NVIDIA H200" and data["env"]["driver"]
    for key, rec in data["models"].items():
        assert rec.get("error") is None, key
        assert kernel_profile.bucket_times(rec["kernels"]) == rec["buckets"], key
    assert len(data["comparison"]) == 14  # FasterViT-0..6 in best and cudagraph mode
    for key, c in data["comparison"].items():
        assert kernel_profile.comparison(data["models"], *key.split("/")) == c, key
    for row in kernel_profile.markdown(data):
        assert row in README, f"README lacks the kernel-profile row {row!r}"


def test_attention_backends_table_is_the_committed_run():
    import attention_backends

    data = json.loads((RESULTS / "attention-backends.json").read_text())
    assert data["gpu"] == "NVIDIA H200" and data["options"]["mode"] == "best"
    assert not [k for k, r in data["results"].items() if r["error"]]
    for row in attention_backends.markdown(data):
        assert row in README, f"README lacks the attention-backends row {row!r}"


def test_deploy_fusions_run_and_its_readme_table():
    """The GPU run of bench/deploy_fusions.py: the README's table is its markdown, and the reading's
    numbers (gain, kernel µs, logit changes) are its own."""
    import deploy_fusions

    data = json.loads((RESULTS / "deploy-fusions.json").read_text())
    assert data["gpu"] == "NVIDIA H100 80GB HBM3" and data["complete"] and data["official"]
    text = " ".join(README.split())
    for line in deploy_fusions.markdown(data).splitlines():
        assert line in README, f"README lacks the deploy-fusions row {line!r}"
    entry = data["models"]["faster_vit_0_224"]
    row = entry["modes"]["best"]
    assert f"The epilogue pays {(row['over_plain']['gelu'] - 1) * 100:.1f} % on FasterViT-0" in text
    plain, fused = row["variants"]["plain"], row["variants"]["gelu"]
    separate = sum(us for k, us in plain["gelu_kernels_us"].items() if k.startswith("triton_poi_fused_gelu_view"))
    assert (f"kernels fall from {plain['kernel_total_us']:,.0f} to {fused['kernel_total_us']:,.0f} µs per forward, the "
            f"separate GELU passes after fc1 ({separate:,.0f} µs) gone") in text
    med = row["images_per_s"]
    assert f"from {med['plain'] / med['official']:.2f}× to {med['gelu'] / med['official']:.2f}× on this card" in text
    check = entry["logits"]

    def sci(x: float) -> str:  # the README writes 1.1e-4, not 1.1e-04
        return f"{x:.1e}".replace("e-0", "e-")

    assert (f"fp32 logits moved by {sci(check['variants']['gelu']['fp32_rel'])} of their range and fp16 by "
            f"{sci(check['variants']['gelu']['half_rel'])} (the plain model's own fp16 noise: "
            f"{sci(check['plain_half_vs_fp32_rel'])})") in text
