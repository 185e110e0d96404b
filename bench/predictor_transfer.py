#!/usr/bin/env python
"""Few-shot transfer of a throughput predictor to another GPU (issue #32): how many measurements of the
new card does ``nas predictor adapt`` need, against the base predictor as it is and a full fit?

The target card's records (quick mode, ``bench/profile_dataset.py``) are split once (seeded): ``--heldout``
configs are the test set of every row; the rest are the only configs adaptation and the full fit see.

- ``raw``: the base predictor (another card's) as it is;
- ``adapt`` N (5, 10, 20, 50): ``evaluators.predictor_transfer.design`` chooses N configs from a pool,
  ``adapt`` corrects the base on their measurements (correction ``auto``: the richest N allows). The
  design is deterministic, so a draw is the design run on another random pool (``--pool-share`` of the
  non-held-out configs) and seed; the numbers are the mean over ``--draws`` draws (and the worst draw),
  beside the same N drawn at random from the same pools;
- ``full``: a predictor fitted from scratch (``evaluators.predictor.fit``) on all non-held-out configs.

Each row: share of held-out configs whose images/s is within ±10 % (±5 %) of the measurement, and the
Spearman rank correlation; the target card's off-grid configs (``*-offgrid.jsonl``) are reported apart.
No GPU needed::

    PYTHONPATH=. python bench/predictor_transfer.py       # -> results/benchmarks/transfer-summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.predictor import Predictor, evaluate, fit, load_predictor, read_records  # noqa: E402
from evaluators.predictor_transfer import adapt, choose_correction, design  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "evaluators" / "predictors" / "h100-profile.jsonl"
OUT = ROOT / "results" / "benchmarks" / "transfer-summary.json"
SAMPLE_SIZES = (5, 10, 20, 50)


def usable(records: Sequence[Mapping[str, Any]], mode: str) -> list[dict]:
    return [dict(r) for r in records if not r.get("error") and r.get("images_per_s") and r.get("mode") == mode]


def split(records: Sequence[dict], n_heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(held-out, rest): a seeded permutation; the held-out configs are never adapted to or fitted on."""
    if n_heldout >= len(records):
        raise SystemExit(f"--heldout {n_heldout} leaves nothing to adapt from ({len(records)} records)")
    order = np.random.default_rng(seed).permutation(len(records))
    return [records[i] for i in order[:n_heldout]], [records[i] for i in order[n_heldout:]]


def scores(p: Predictor, records: Sequence[dict], offgrid: Sequence[dict]) -> dict[str, Any]:
    e = evaluate(p, records)["images_per_s"]
    out = dict(within_10pct=e["within_10pct"], spearman=e["spearman"], within_5pct=e["within_5pct"],
               median_rel_err=e["median_rel_err"])
    if offgrid:
        o = evaluate(p, offgrid)["images_per_s"]
        out["offgrid"] = dict(n=o["n"], within_10pct=o["within_10pct"], spearman=o["spearman"])
    return out


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 4)


def adapt_row(base: Predictor, rest: Sequence[dict], held: Sequence[dict], offgrid: Sequence[dict], n: int, *,
              draws: int, pool_share: float, seed: int) -> dict[str, Any]:
    """Mean (and worst) scores of ``adapt`` with N designed samples over ``draws`` pools, and with N random ones."""
    designed, random = [], []
    pool_size = max(n, int(round(pool_share * len(rest))))
    for d in range(draws):
        rng = np.random.default_rng(seed + 1000 + d)
        pool = [rest[i] for i in rng.permutation(len(rest))[:pool_size]]
        picks = design(base, [r["config"] for r in pool], n, seed=seed + d)
        p = adapt(base, [pool[i] for i in picks], name=f"adapt{n}", created="bench")
        designed.append(dict(scores(p, held, offgrid), loo=p.meta["cross_validated"]["images_per_s"]["within_10pct"]))
        q = adapt(base, [pool[i] for i in rng.choice(len(pool), n, replace=False)], name=f"random{n}", created="bench")
        random.append(scores(q, held, []))
    row = dict(within_10pct=_mean(designed, "within_10pct"), spearman=_mean(designed, "spearman"),
               within_5pct=_mean(designed, "within_5pct"), within_10pct_worst=min(r["within_10pct"] for r in designed),
               spearman_worst=min(r["spearman"] for r in designed), loo_within_10pct=_mean(designed, "loo"),
               correction=choose_correction(n).name, n_draws=draws, pool=pool_size,
               random=dict(within_10pct=_mean(random, "within_10pct"), spearman=_mean(random, "spearman"),
                           within_5pct=_mean(random, "within_5pct")))
    if offgrid:
        row["offgrid"] = dict(n=len(offgrid), within_10pct=_mean([r["offgrid"] for r in designed], "within_10pct"),
                              spearman=_mean([r["offgrid"] for r in designed], "spearman"))
    return row


def run(base: Predictor, records: Sequence[Mapping[str, Any]], offgrid: Sequence[Mapping[str, Any]] = (), *,
        n_heldout: int = 200, draws: int = 10, pool_share: float = 0.75, seed: int = 0,
        sample_sizes: Sequence[int] = SAMPLE_SIZES) -> dict[str, Any]:
    """The summary (issue #32's keys): raw base, adapt per N, full fit, on the same held-out configs."""
    mode = str(base.meta["mode"])
    recs, off = usable(records, mode), usable(offgrid, mode)
    gpus = sorted({r["gpu_name"] for r in recs + off})
    if len(gpus) != 1:
        raise SystemExit(f"the target records must be of one GPU, not {gpus}")
    held, rest = split(recs, n_heldout, seed)
    full = fit(rest, name="full", held_out=0, seed=seed)
    return dict(gpu=gpus[0], base_gpu=base.gpu, target_gpu=gpus[0], n_heldout=len(held),
                raw=scores(base, held, off),
                adapt={str(n): adapt_row(base, rest, held, off, n, draws=draws, pool_share=pool_share, seed=seed)
                       for n in sample_sizes},
                full=dict(n_train=len(rest), **scores(full, held, off)))


# ------------------------------------------------------------------------------------------ README
def _card(gpu: str) -> str:
    return gpu.replace("NVIDIA ", "").split()[0]


def markdown_rows(s: Mapping[str, Any]) -> list[str]:
    """The README's table: one row per predictor, from the summary."""
    base, card = _card(s["base_gpu"]), _card(s["target_gpu"])

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    def off(row: Mapping[str, Any]) -> str:
        o = row.get("offgrid")
        return f"{pct(o['within_10pct'])} / {o['spearman']:.4f}" if o else "-"

    rows = [f"| predictor on the {card} | {card} configs measured | images/s within ±10 % | ±5 % | Spearman | "
            f"N random instead: ±10 % / ±5 % | off-grid ±10 % / Spearman |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| `{base.lower()}` as it is | 0 | {pct(s['raw']['within_10pct'])} | {pct(s['raw']['within_5pct'])} | "
            f"{s['raw']['spearman']:.4f} | - | {off(s['raw'])} |"]
    for n, a in s["adapt"].items():
        rows.append(f"| `adapt --base {base.lower()} --samples {n}` ({a['correction']}) | {n} | "
                    f"{pct(a['within_10pct'])} (worst {pct(a['within_10pct_worst'])}) | {pct(a['within_5pct'])} | "
                    f"{a['spearman']:.4f} | {pct(a['random']['within_10pct'])} / {pct(a['random']['within_5pct'])} | "
                    f"{off(a)} |")
    f = s["full"]
    rows.append(f"| fitted on the {card} alone | {f['n_train']} | {pct(f['within_10pct'])} | {pct(f['within_5pct'])} | "
                f"{f['spearman']:.4f} | - | {off(f)} |")
    return rows


def readme_sentences(s: Mapping[str, Any]) -> list[str]:
    """The README's verdicts on issue #32's targets, from the summary."""
    base, card = _card(s["base_gpu"]), _card(s["target_gpu"])
    small = {n: a for n, a in s["adapt"].items() if int(n) <= 20}
    met = [n for n, a in small.items() if a["within_10pct"] >= 0.95 and a["spearman"] >= 0.99]
    first = min(met, key=int) if met else None
    f = s["full"]
    full_met = f["within_10pct"] >= 0.95 and f["spearman"] >= 0.99
    out = [f"On {s['n_heldout']} held-out {card} configs the {base} predictor as it is ranks them with Spearman "
           f"{s['raw']['spearman']:.4f} but gets images/s within ±10 % for {100 * s['raw']['within_10pct']:.1f}% "
           f"only"]
    if first:
        a = s["adapt"][first]
        out.append(f"N ≤ 20 target (≥ 95 % within ±10 %, ρ ≥ 0.99): met from N = {first} "
                   f"({100 * a['within_10pct']:.1f}%, ρ {a['spearman']:.4f}, mean of {a['n_draws']} draws)")
    else:
        out.append("N ≤ 20 target (≥ 95 % within ±10 %, ρ ≥ 0.99): missed")
    out.append(f"full-fit target (≥ 95 %, ρ ≥ 0.99): {'met' if full_met else 'missed'} "
               f"({100 * f['within_10pct']:.1f}%, ρ {f['spearman']:.4f}, {f['n_train']} training configs)")

    def gain(key: str) -> str:
        d = [100 * (a[key] - a["random"][key]) for a in s["adapt"].values()]
        return f"{min(d):+.1f} to {max(d):+.1f} points"

    out.append(f"designed samples against as many random ones: {gain('within_10pct')} within ±10 %, "
               f"{gain('within_5pct')} within ±5 %")
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="h200", help="predictor to transfer (registered name or JSON)")
    p.add_argument("--target", type=Path, default=TARGET, help="the new card's records (quick mode)")
    p.add_argument("--heldout", type=int, default=200, help="configs kept apart as the test set")
    p.add_argument("--draws", type=int, default=10, help="pools (and seeds) per N")
    p.add_argument("--pool-share", type=float, default=0.75, help="share of the non-held-out configs in a pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    offgrid = args.target.with_name(args.target.stem + "-offgrid" + args.target.suffix)
    summary = run(load_predictor(args.base), read_records(args.target),
                  read_records(offgrid) if offgrid.is_file() else [], n_heldout=args.heldout, draws=args.draws,
                  pool_share=args.pool_share, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(markdown_rows(summary) + readme_sentences(summary)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
