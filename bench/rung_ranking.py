"""Continue or restart at a successive-halving rung? Measured on the committed ground truth (issue #11).

``nas --fidelity sh`` promotes a trial by its accuracy at a rung. Two ways to get that accuracy:

- **continue**: one run with the full schedule (warm-up, cosine to 0 over the whole budget); a rung
  reads the validation accuracy after its epochs, and a promoted trial trains on from there;
- **restart**: each rung is a run of its own, its schedule compressed to the rung's epochs (annealed
  to 0 at the rung), and a promoted trial starts again from scratch at the next rung's budget.

``bench/groundtruth.py`` recorded both on fmnist-odd (one recipe, 64 px, 4 epochs): every full run
keeps its top-1 after each epoch (``top1_history``: the continue rungs 1, 2, 3 epochs), and the
short-training proxy is the restart rung at 1/20, 1/10 and 1/4 of the budget (another seed). Both
are ranked against the full-budget top-1 of seed 0 (Kendall tau, bootstrap 95 % CI over
architectures) and by what SH does with them: the share of the true top 1/eta that the top 1/eta by
rung value keeps (eta 2, as ``bench/multifidelity.py``).

A rung read from the same run as the target shares its seed's noise, which inflates tau; the fair
comparison uses the re-seeded architectures, whose seed-1 run gives the rung value and whose seed-0
run the target (the noise ceiling is their final-vs-final tau). No GPU: this reads
``results/benchmarks/groundtruth.json`` and writes ``results/benchmarks/rung-ranking.json``.
The recipe is the ground truth's (warm-up 10 %, gradient clipping, on-device augmentation), close
to but not the search's train proxy (warm-up 5 %, neither): an answer for this task and budget.

    python bench/rung_ranking.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GT = ROOT / "results" / "benchmarks" / "groundtruth.json"
OUT = ROOT / "results" / "benchmarks" / "rung-ranking.json"
ETA = 2


def _ok(r: dict[str, Any]) -> bool:
    return r.get("status") == "ok" and r.get("top1") is not None


def full_runs(d: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    return {r["arch_id"]: r for r in d["runs"] if r["kind"] == "full" and r["seed"] == seed and _ok(r)}


def short_runs(d: dict[str, Any], fraction: float) -> dict[str, float]:
    return {r["arch_id"]: r["top1"] for r in d["runs"]
            if r["kind"] == "short" and r.get("fraction") == fraction and _ok(r)}


def trained_on(d: dict[str, Any]) -> str:
    """The GPU the training runs name (the file's ``device`` is the last session's, e.g. a CPU proxy run)."""
    gpus = sorted({r.get("gpu") or r.get("device") for r in d["runs"] if r["kind"] in ("full", "short") and _ok(r)})
    return " + ".join(str(g) for g in gpus)


def kept_share(rung: Sequence[float], target: Sequence[float], eta: int = ETA) -> float:
    """Share of the true top ``1/eta`` (by ``target``) among the top ``1/eta`` by ``rung`` value."""
    k = max(1, len(target) // eta)
    top_true = set(sorted(range(len(target)), key=lambda i: -target[i])[:k])
    top_rung = set(sorted(range(len(rung)), key=lambda i: -rung[i])[:k])
    return len(top_true & top_rung) / k


def row(rung: dict[str, float], target: dict[str, float], *, epochs: float, how: str) -> dict[str, Any]:
    """tau (CI), Spearman and the kept share of ``rung`` values against ``target``, on their common archs."""
    from evaluators.proxy_fit import kendall_ci

    ids = sorted(i for i in rung if i in target)
    x, y = [rung[i] for i in ids], [target[i] for i in ids]
    k = kendall_ci(x, y, seed=0)
    return dict(how=how, rung_epochs=epochs, n=k["n"], kendall_tau=k["kendall_tau"], ci95=k["tau_ci95"],
                spearman=k["spearman_rho"], kept_top_share=kept_share(x, y))


def continue_rungs(runs: dict[str, dict[str, Any]]) -> dict[int, dict[str, float]]:
    """{rung index: {arch: top-1 after that epoch of the full schedule}} (all but the last entry)."""
    out: dict[int, dict[str, float]] = {}
    for arch, r in runs.items():
        hist = r.get("top1_history") or []
        for e, (_, top1) in enumerate(hist[:-1]):
            out.setdefault(e, {})[arch] = top1
    return out


def analyse(d: dict[str, Any]) -> dict[str, Any]:
    """Rows for continue (same run, other seed) and restart (each fraction), on all and on re-seeded archs."""
    s = d["settings"]
    epochs = float(s["epochs"])
    seed0, seed1 = full_runs(d, s["seed"]), full_runs(d, s["reseed_seed"])
    target = {a: r["top1"] for a, r in seed0.items()}
    reseeded = {a: target[a] for a in seed1 if a in target}
    n_rungs = len(next(iter(seed0.values()))["top1_history"])
    per_epoch = epochs / n_rungs
    rows: dict[str, dict[str, Any]] = {"all": {}, "reseeded": {}}
    for e, vals in continue_rungs(seed0).items():
        rows["all"][f"continue@{(e + 1) * per_epoch:g}ep same run"] = row(
            vals, target, epochs=(e + 1) * per_epoch, how="continue, rung read from the target's own run (inflated)")
    for e, vals in continue_rungs(seed1).items():
        rows["reseeded"][f"continue@{(e + 1) * per_epoch:g}ep"] = row(
            vals, reseeded, epochs=(e + 1) * per_epoch, how=f"continue, seed {s['reseed_seed']} run")
    for frac in sorted(s["short_fractions"]):
        vals = short_runs(d, frac)
        name = f"restart@{frac * epochs:g}ep"
        how = f"restart: a {frac * epochs:g}-epoch schedule, seed {s['short_seed']}"
        rows["all"][name] = row(vals, target, epochs=frac * epochs, how=how)
        rows["reseeded"][name] = row(vals, reseeded, epochs=frac * epochs, how=how)
    ceiling = row({a: seed1[a]["top1"] for a in reseeded}, reseeded, epochs=epochs,
                  how=f"noise ceiling: full budget, seed {s['reseed_seed']} vs seed {s['seed']}")
    return dict(benchmark="rung-ranking", source=str(GT.relative_to(ROOT)), gpu=trained_on(d),
                dataset=s["data"], budget_epochs=epochs, eta=ETA, target=f"full-budget top-1, seed {s['seed']}",
                rows=rows, noise_ceiling=ceiling, verdict=verdict(rows), recipe=s.get("recipe_text"))


def verdict(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Continue vs restart at the first rung (1 epoch = 1/4 of the budget): tau, CIs, cost, the choice."""
    c_fair = rows["reseeded"]["continue@1ep"]
    r_fair = rows["reseeded"]["restart@1ep"]
    c_all, r_all = rows["all"]["continue@1ep same run"], rows["all"]["restart@1ep"]
    overlap = c_fair["ci95"][0] <= r_fair["ci95"][1] and r_fair["ci95"][0] <= c_fair["ci95"][1]
    restart_better = r_fair["kendall_tau"] > c_fair["kendall_tau"] and not overlap
    cost = {"continue": 4.0, "restart": 1.0 + 2.0 + 4.0}
    why = (f"restarting does not rank better (re-seeded tau {r_fair['kendall_tau']:.2f} vs continuing "
           f"{c_fair['kendall_tau']:.2f}; the CIs {'overlap' if overlap else 'do not overlap'}) and costs "
           f"{cost['restart']:g} epochs per trial that reaches the top rung against {cost['continue']:g}: continue"
           if not restart_better else "restart ranks better beyond the CIs")
    return dict(rung_epochs=1.0, fair_tau={"continue": c_fair["kendall_tau"], "restart": r_fair["kendall_tau"]},
                fair_ci95={"continue": c_fair["ci95"], "restart": r_fair["ci95"]}, cis_overlap=overlap,
                all_tau={"continue (same run, inflated)": c_all["kendall_tau"], "restart": r_all["kendall_tau"]},
                choice="restart" if restart_better else "continue", why=why, cost_epochs_per_survivor=cost,
                note="eta 2, rungs 1, 2, 4 epochs; 12 re-seeded architectures give wide CIs")


def markdown(res: dict[str, Any]) -> str:
    lines = ["| rung value | archs | Kendall tau [95 % CI] | kept top half |", "|---|---|---|---|"]
    for part in ("reseeded", "all"):
        for name, r in res["rows"][part].items():
            ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
            lines.append(f"| {name} | {r['n']} | {r['kendall_tau']:.2f}{ci} | {r['kept_top_share']:.2f} |")
    c = res["noise_ceiling"]
    lines.append(f"| noise ceiling (full, other seed) | {c['n']} | {c['kendall_tau']:.2f} "
                 f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] | {c['kept_top_share']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groundtruth", type=Path, default=GT)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    res = analyse(json.loads(args.groundtruth.read_text()))
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    v = res["verdict"]
    print(f"first rung (1 epoch): {v['why']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
