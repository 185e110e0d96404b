"""Choosing the ground-truth task by measuring: a few FasterViTs x 2 seeds on each candidate task.

Issue #10 part 2 asks for a task on which FasterViT's design choices change accuracy by more than
seed noise. Candidates are the composed tasks of ``evaluators.composed`` (and Fashion-MNIST as the
known-saturated reference). For each task, five architectures that differ in size and in how
stage 3 mixes information (windowed only, HAT carrier tokens, one global window) are trained with
the same recipe and two seeds; the JSON reports per task the spread of top-1 across architectures,
the seed-to-seed sd, and their ratio (the issue's acceptance asks >= 4).

    python bench/task_pilot.py --smoke
    python bench/task_pilot.py --data-dir DIR --tasks fmnist-odd,fmnist-pairs --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: name -> (base preset, changes at 224 px); moved to the task's canvas with ``at_resolution``
PILOT_ARCHS = {
    "tiny": ("faster_vit_0_224", dict(dim=32, in_dim=32, depths=(1, 1, 2, 2), num_heads=(2, 4, 4, 8), mlp_ratio=2.0)),
    "fv0": ("faster_vit_0_224", {}),
    "fv0-window": ("faster_vit_0_224", dict(hat=(False, False, False, False))),
    "fv0-global": ("faster_vit_0_224", dict(window_size=(7, 7, 14, 7), hat=(False, False, False, False))),
    "fv2": ("faster_vit_2_224", {}),
}


def pilot_configs(resolution: int) -> dict[str, Any]:
    from search_spaces import resolve_config

    return {name: resolve_config(base).replace(**changes).at_resolution(resolution)
            for name, (base, changes) in PILOT_ARCHS.items()}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: mean top-1 per arch, spread sd across archs, pooled seed sd, their ratio."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        by_arch: dict[str, list[float]] = {}
        for r in rows:
            if r["task"] == task and r.get("top1") is not None:
                by_arch.setdefault(r["arch"], []).append(r["top1"])
        means = {a: statistics.fmean(v) for a, v in by_arch.items()}
        pairs = [v for v in by_arch.values() if len(v) >= 2]
        seed_sd = (statistics.fmean([statistics.variance(v) for v in pairs]) ** 0.5) if pairs else None
        spread = statistics.stdev(means.values()) if len(means) >= 2 else None
        out[task] = dict(top1=by_arch, mean=means, spread_sd=spread, seed_sd=seed_sd,
                         ratio=(spread / seed_sd) if spread is not None and seed_sd else None)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tasks", default="fmnist-odd,fmnist-pairs")
    p.add_argument("--archs", default=",".join(PILOT_ARCHS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=float, default=6.0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--time-budget", type=float, default=1e9, help="seconds; no new run starts after it")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "groundtruth-pilot.json")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)

    import torch

    from evaluators.augment import Augment
    from evaluators.data import load_dataset
    from evaluators.train import train_proxy

    smoke = args.smoke
    dev = "cpu" if smoke else "cuda"
    cfgs = pilot_configs(args.resolution)
    archs = args.archs.split(",")[:2] if smoke else args.archs.split(",")
    rows: list[dict[str, Any]] = []
    if args.out.exists() and not smoke:
        rows = json.loads(args.out.read_text()).get("runs", [])
    done = {(r["task"], r["arch"], r["seed"]) for r in rows}
    t0 = time.perf_counter()
    for task in args.tasks.split(","):
        splits = load_dataset(task, data_dir=args.data_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            for arch in archs:
                if (task, arch, seed) in done or time.perf_counter() - t0 > args.time_budget:
                    continue
                kw = dict(steps=2, batch_size=8, subset=64, val_subset=64) if smoke else dict(
                    epochs=args.epochs, batch_size=args.batch_size)
                r = train_proxy(cfgs[arch], data=splits, lr=args.lr, seed=seed, device=dev, progress=False,
                                augment=Augment(crop=0.0625, flip=True), compile="eager" if smoke else "graph", **kw)
                row = dict(task=task, arch=arch, seed=seed, top1=r.top1 if r.status == "ok" else None,
                           status=r.status, reason=r.reason, images_per_s=r.images_per_s,
                           train_seconds=r.train_seconds, history=r.top1_history, recipe=r.recipe)
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("task", "arch", "seed", "top1", "images_per_s")}), flush=True)
                out = dict(bench="groundtruth-pilot", gpu=torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
                           torch=torch.__version__, date=time.strftime("%Y-%m-%d"), resolution=args.resolution,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, runs=rows,
                           summary=summarize(rows))
                if not smoke:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(summarize(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
