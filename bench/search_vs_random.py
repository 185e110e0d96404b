"""Multi-objective search vs random search on one GPU: hypervolume on a common reference point,
and whether each found front dominates FasterViT-0..3 measured the same way.

Both studies use the same space, proxy, profiler settings, trial budget (and time cap), seed
policy (sampler seed = data/proxy seed = --seed) and have FasterViT-0..3 enqueued first as
reference points (they count in the budget of both). Writes a summary JSON and, per study, the
HTML/PNG report.

    python bench/search_vs_random.py --trials 100 --proxy jacob_cov --out results/benchmarks/search-vs-random.json
    python bench/search_vs_random.py --smoke          # CPU, tiny space, a few trials
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY_SPACE = dict(
    name="tiny", base=dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                           window_size=[2, 2, 2, 2], ct_size=1, num_classes=10),
    knobs={"dim": {"choices": [8, 16, 24]}, "depths[2]": {"choices": [1, 2]}, "mlp_ratio": {"choices": [2.0, 4.0]}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per study (same cap for both)")
    ap.add_argument("--proxy", default="jacob_cov")
    ap.add_argument("--samplers", default="nsga2,random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results-dir", default="results/benchmarks/search")
    ap.add_argument("--out", default="results/benchmarks/search-vs-random.json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)

    import optuna

    from nas.pareto import dominates_presets, hypervolume, load_study, reference_point, study_summary, write_report
    from nas.search import SearchSettings, run_search

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{results_dir / 'studies.db'}"
    samplers = args.samplers.split(",")
    common = dict(objectives=("accuracy", "throughput"), proxy=args.proxy, trials=args.trials, timeout=args.timeout,
                  seed=args.seed, data_dir=args.data_dir, storage=storage, results_dir=str(results_dir), quiet=True,
                  enqueue_presets=not args.smoke)
    if args.smoke:
        common.update(space=TINY_SPACE, device="cpu", proxy_resolution=64, batch_size=2)
    runs = {}
    for sampler in samplers:
        name = f"{sampler}-seed{args.seed}"
        t = time.time()
        res = run_search(SearchSettings(sampler=sampler, study=name, **common))
        runs[sampler] = dict(study=name, wall_s=round(time.time() - t, 1), n_complete=res.n_complete,
                             n_failed=res.n_failed, n_pruned=res.n_pruned)
        print(f"{name}: {res.n_complete} complete, {res.n_failed} failed in {runs[sampler]['wall_s']} s", flush=True)

    studies = {s: load_study(runs[s]["study"], storage) for s in samplers}
    # one reference point for every study: the worst value per objective over all of them, +10% of the range
    union = optuna.create_study(directions=next(iter(studies.values())).directions)
    for st in studies.values():
        for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            union.add_trial(t)
    ref = reference_point(union)
    out = dict(benchmark="search-vs-random", date=time.strftime("%Y-%m-%dT%H:%M:%S"), reference_point=ref,
               objectives=["accuracy", "throughput"], proxy=args.proxy, settings=dict(vars(args)), studies={})
    for s, st in studies.items():
        summary = study_summary(st, ref)
        report = write_report(st, results_dir / f"{runs[s]['study']}.html", reference=ref, plotlyjs="directory")
        devices = summary["devices"]
        out["studies"][s] = dict(runs[s], hypervolume=hypervolume(st, ref), presets=dominates_presets(st),
                                 pareto=summary["pareto"], devices=devices, report=str(report) if report else None)
    if "nsga2" in out["studies"] and "random" in out["studies"]:
        hv_n, hv_r = out["studies"]["nsga2"]["hypervolume"], out["studies"]["random"]["hypervolume"]
        out["hv_ratio_nsga2_over_random"] = hv_n / hv_r if hv_r else None
        out["target"] = ">= 1.2 (issue #5)"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    for s, d in out["studies"].items():
        dom = {p: ("front" if v["on_front"] else f"dominated by {len(v['dominated_by'])}") for p, v in d["presets"].items()}
        print(f"{s:8s} HV {d['hypervolume']:.6g}  complete {d['n_complete']}  presets {dom}")
    if out.get("hv_ratio_nsga2_over_random") is not None:
        print(f"HV ratio nsga2/random = {out['hv_ratio_nsga2_over_random']:.3f} (target >= 1.2)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
