"""Summarise the committed throughput benchmark runs into one table and the issue's checks.

Reads ``results/benchmarks/throughput.json`` (one full run: phases A-C) and, if present,
``results/benchmarks/throughput-compiled.json`` (the compiled measurements again, timed one at a
time by the main process). Writes ``results/benchmarks/throughput-summary.json`` and prints the
markdown table used in the README. Every number keeps its run (GPU, date) as provenance.

    python bench/throughput_summary.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
MODES = ("paper-plain", "eager-best", "cudagraph", "compiled")


def _ips(results: dict, impl: str, name: str, mode: str):
    r = results.get(f"{impl}/{name}/{mode}") or {}
    return r.get("images_per_s"), r.get("cv")


def main() -> int:
    full = json.loads((ROOT / "throughput.json").read_text())
    comp_path = ROOT / "throughput-compiled.json"
    comp = json.loads(comp_path.read_text()) if comp_path.is_file() else None
    env = full["runs"][-1]["env"]
    presets = full["parts"]["presets"]["results"]
    cpresets = comp["parts"]["presets"]["results"] if comp else {}
    rows, ratios, best_ratios, cvs = [], [], {}, []
    for i in range(7):
        name = f"faster_vit_{i}_224"
        row = {"model": f"FasterViT-{i}"}
        best = {}
        for impl in ("ours", "official"):
            for mode in MODES:
                src = cpresets if (mode == "compiled" and f"{impl}/{name}/compiled" in cpresets) else presets
                v, cv = _ips(src, impl, name, mode)
                row[f"{impl}/{mode}"] = v
                row[f"{impl}/{mode}/source"] = "compiled-rerun" if src is cpresets else "full-run"
                if mode == "cudagraph" and impl == "ours" and cv is not None:
                    cvs.append((name, cv))
                if v is not None:
                    best[impl] = max(best.get(impl, 0), v)
        for mode in MODES:
            a, b = row[f"ours/{mode}"], row[f"official/{mode}"]
            same_run = row[f"ours/{mode}/source"] == row[f"official/{mode}/source"]
            if a and b and same_run:
                row[f"ratio/{mode}"] = round(a / b, 3)
                ratios.append((name, mode, a / b, row[f"ours/{mode}/source"]))
        off_best = row["official/compiled"]
        if best.get("ours") and off_best:
            best_ratios[name] = round(best["ours"] / off_best, 3)
        rows.append(row)
    fid = full["parts"]["fidelity"]["results"]
    cfid = comp["parts"]["fidelity"]["results"] if comp else {}
    quick = [fid[f"ours/random{i:02d}/cudagraph"]["images_per_s"] for i in range(30)]
    rho_full = spearmanr(quick, [fid[f"ours/random{i:02d}/compiled"]["images_per_s"] for i in range(30)]).statistic
    rho_rerun = (spearmanr(quick, [cfid[f"ours/random{i:02d}/compiled"]["images_per_s"] for i in range(30)]).statistic
                 if cfid else None)
    compiled_cv = [cfid[f"ours/random{i:02d}/compiled"]["cv"] for i in range(30)] if cfid else []
    quick_cv = [fid[f"ours/random{i:02d}/cudagraph"]["cv"] for i in range(30)]
    rep = full["parts"]["repeatability"]["results"]
    walls = [r["wall_s"] for r in rep.values()]
    summary = dict(
        gpu=env["gpu_name"], driver=env["driver"], torch=env["torch_version"], date=env["date"],
        compiled_rerun_date=comp["runs"][-1]["env"]["date"] if comp else None,
        table=rows,
        checks=dict(
            ours_ge_official=dict(target=">= 1.00x in every preset and mode (same run)",
                                  worst=min(ratios, key=lambda r: r[2]) if ratios else None,
                                  misses=[r for r in ratios if r[2] < 1.0]),
            best_vs_best=dict(target=">= 1.30x (ours at its best / official compiled)", ratios=best_ratios),
            cv_quick=dict(target="<= 1%", fv0_repeats=[r["cv"] for r in rep.values()],
                          random30_median=statistics.median(quick_cv), random30_max=max(quick_cv),
                          presets=cvs),
            fv0_quick_wall_s=dict(target="<= 5 s", walls=walls),
            fidelity=dict(target="Spearman >= 0.98", n=30, rho_full_run=round(rho_full, 4),
                          rho_compiled_rerun=None if rho_rerun is None else round(rho_rerun, 4),
                          compiled_cv_median=statistics.median(compiled_cv) if compiled_cv else None,
                          compiled_cv_max=max(compiled_cv) if compiled_cv else None),
            ablation=full["parts"]["ablation"].get("ratios"),
        ),
        notes=["full-run: phase A (non-compiled) timed alone; its compiled numbers were timed while other worker "
               "processes compiled from the cache (contended) and are superseded by compiled-rerun where present",
               "compiled-rerun: compiled models timed one at a time by one process (FasterViT-0..4 and the 30 "
               "random configs); FasterViT-5/6 compiled numbers are from the contended full run",
               "ratios are formed only within one run; best_vs_best takes ours' best mode over both runs (same GPU "
               "model, same day) against the official compiled number"],
    )
    (ROOT / "throughput-summary.json").write_text(json.dumps(summary, indent=1, default=str))
    fmt = (lambda v: "–" if v is None else f"{v:,.0f}")
    print(f"GPU: {env['gpu_name']} (driver {env['driver']}, torch {env['torch_version']}), batch 128, 224², fp16 AMP; img/s\n")
    print("| model | paper-plain ours / official | eager-best (deploy + channels_last) | CUDA graph (deploy + cl) | "
          "torch.compile (deploy + cl) | ours best / official best |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for mode in MODES:
            ratio = r.get(f"ratio/{mode}")
            star = "" if mode != "compiled" or r["ours/compiled/source"] == "compiled-rerun" else "†"
            cells.append(f"{fmt(r[f'ours/{mode}'])} / {fmt(r[f'official/{mode}'])}{star}"
                         + (f" ({ratio:.2f}×)" if ratio else ""))
        key = f"faster_vit_{r['model'][-1]}_224"
        print(f"| {r['model']} | " + " | ".join(cells) + f" | {best_ratios.get(key, float('nan')):.2f}× |")
    print(f"\nfidelity: Spearman {rho_full:.3f} (full run), {rho_rerun:.3f} (compiled re-run); "
          f"quick CV median {100 * statistics.median(quick_cv):.2f}% max {100 * max(quick_cv):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
