#!/usr/bin/env python
"""Trials per hour of one small study with 1 and with N workers (one per GPU), optionally Ray Tune.

Every variant evaluates THE SAME list of architectures: the script samples ``--trials`` valid
configs from the space once (seeded), enqueues them into a fresh study per variant, and runs the
real CLI (``nas search --workers K`` / ``--backend ray``) in a subprocess. Two rates are reported:

- ``trials_per_hour_wall``: trials / wall time of the whole command (start-up included: imports,
  dataset, worker processes);
- ``trials_per_hour_steady``: trials / (last trial's end - first trial's start), from the study.

Workers get one GPU each (``CUDA_VISIBLE_DEVICES``), so throughput measured in parallel is not
contaminated; the JSON records which GPU ran each trial and every GPU's name.

On the GPU machine, from the repository root (about 4-6 minutes on 2 H100s with the defaults)::

    PYTHONPATH=. python bench/parallel_scaling.py --workers 1,2 --out results/benchmarks/parallel_scaling.json

(add ``--backends optuna,ray`` where Ray is installed). ``--smoke`` runs a tiny CPU study
(params,flops on a 64-px toy space, 6 trials) through the same code in about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, without installing

SMOKE_SPACE = """\
name: smoke
base:
  resolution: 64
  dim: 16
  in_dim: 8
  depths: [1, 1, 2, 1]
  num_heads: [1, 1, 2, 2]
  window_size: [2, 2, 2, 2]
  ct_size: 1
  num_classes: 10
knobs:
  dim: {choices: [8, 16, 24]}
  depths[2]: {choices: [1, 2]}
  ct_size: {choices: [1, 2]}
"""


def sample_points(space_spec: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct valid knob settings of the space (the same list for every variant)."""
    import numpy as np

    from search_spaces.space import load_space

    space = load_space(space_spec)
    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(200 * n):
        try:
            values, _cfg = space.sample_random(rng)
        except ValueError:
            continue
        key = json.dumps(values, sort_keys=True)
        if key not in seen:
            seen.add(key)
            points.append(values)
        if len(points) == n:
            return points
    if not points:
        raise ValueError(f"space {space_spec!r} gave no valid config in {200 * n} samples")
    return [points[i % len(points)] for i in range(n)]  # a small space: repeat points to fill the budget


def device_info() -> dict[str, Any]:
    import torch

    from evaluators.profiler import cpu_name

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = [torch.cuda.get_device_name(i) for i in range(count)]
    return dict(gpus=gpus, gpu_count=len(gpus), cpu=cpu_name(), cpu_count=os.cpu_count(), host=platform.node(),
                torch=torch.__version__, cuda=torch.version.cuda)


def run_variant(*, backend: str, workers: int, points: list[dict[str, Any]], args: argparse.Namespace,
                space: str, workdir: Path) -> dict[str, Any]:
    import optuna

    from nas.objectives import parse_objectives
    from nas.search import SearchSettings, create_or_load_study
    from nas.storage import get_storage

    name = f"{backend}-w{workers}"
    results_dir = workdir / name
    storage = f"journal:{results_dir / 'nas.journal'}"
    objectives = tuple(args.objective.split(","))
    settings = SearchSettings(objectives=objectives, proxy=args.proxy, space=space, storage=storage, study=name,
                              device=args.device)
    study = create_or_load_study(settings, parse_objectives(objectives))
    for p in points:
        study.enqueue_trial(p)
    cmd = [sys.executable, "-m", "nas.cli", "search", "--objective", args.objective, "--proxy", args.proxy,
           "--space", space, "--trials", str(len(points)), "--study", name, "--storage", storage,
           "--results-dir", str(results_dir), "--sampler", "random", "--no-enqueue-presets", "--workers", str(workers)]
    if args.device:
        cmd += ["--device", args.device]
    if args.device == "cpu":
        cmd += ["--batch-size", "2"]
    if backend == "ray":
        cmd += ["--backend", "ray", "--gpus-per-trial", "1" if args.device != "cpu" else "0"]
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    wall = time.perf_counter() - t0
    (results_dir / "command.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"[{name}] failed with exit code {proc.returncode}; log: {results_dir / 'command.log'}")

    study = optuna.load_study(study_name=name, storage=get_storage(storage))
    trials = study.get_trials()
    states = optuna.trial.TrialState
    done = [t for t in trials if t.state.is_finished()]
    starts = [t.datetime_start for t in done if t.datetime_start]
    ends = [t.datetime_complete for t in done if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    walls = [t.user_attrs["wall_s"] for t in done if isinstance(t.user_attrs.get("wall_s"), (int, float))]
    where: dict[str, int] = {}
    for t in done:
        w = t.user_attrs.get("worker") or {}
        key = ",".join(map(str, w["gpu_ids"])) if w.get("gpu_ids") else str(w.get("gpu") or ("cpu" if w else "-"))
        where[key] = where.get(key, 0) + 1
    n = len(done)
    row = dict(backend=backend, workers=workers, trials=len(trials), finished=n,
               complete=sum(t.state == states.COMPLETE for t in trials),
               failed=sum(t.state == states.FAIL for t in trials), pruned=sum(t.state == states.PRUNED for t in trials),
               wall_s=round(wall, 2), steady_span_s=round(span, 2),
               trials_per_hour_wall=round(3600 * n / wall, 1),
               trials_per_hour_steady=round(3600 * n / span, 1) if span == span and span > 0 else None,
               mean_trial_s=round(sum(walls) / len(walls), 3) if walls else None,
               trials_per_gpu=where, devices=sorted({str(t.user_attrs.get("device")) for t in done}),
               errors=sorted({str(t.user_attrs.get("error"))[:200] for t in done if t.state == states.FAIL}),
               results_dir=str(results_dir))
    print(f"[{name}] {n} trials in {wall:.1f}s wall ({row['trials_per_hour_wall']}/h), steady "
          f"{row['trials_per_hour_steady']}/h, per GPU {where}", flush=True)
    return row


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts (one GPU each)")
    ap.add_argument("--backends", default="optuna", help="comma list: optuna (local workers) and/or ray")
    ap.add_argument("--trials", type=int, default=16, help="trials per variant (the same configs in each)")
    ap.add_argument("--objective", default="accuracy,throughput")
    ap.add_argument("--proxy", default="synflow")
    ap.add_argument("--space", default="default")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda if present)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the studies go (default: a temporary folder)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default results/benchmarks/parallel_scaling.json; _smoke.json with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU study (plumbing check, about a minute)")
    args = ap.parse_args(argv)
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nas-scaling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    space = args.space
    if args.smoke:
        args.device, args.objective, args.trials = "cpu", "params,flops", min(args.trials, 6)
        space = str(workdir / "smoke_space.yaml")
        Path(space).write_text(SMOKE_SPACE)
    elif Path(space).is_file():
        space = str(Path(space).resolve())
    info = device_info()
    if args.device is None:
        args.device = "cuda" if info["gpu_count"] else "cpu"
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.device == "cuda" and max(workers) > info["gpu_count"]:
        raise SystemExit(f"--workers {max(workers)} needs {max(workers)} GPUs; this machine has {info['gpu_count']}")
    notes = []
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            backends.remove("ray")
            notes.append("ray is not installed here: the Ray variant was not run")

    points = sample_points(space, args.trials, args.seed)
    runs = [run_variant(backend=b, workers=w, points=points, args=args, space=space, workdir=workdir)
            for b in backends for w in workers]
    base = {r["backend"]: r for r in runs if r["workers"] == min(workers)}
    for r in runs:
        b = base.get(r["backend"])
        if b is not None and r is not b:
            for k in ("trials_per_hour_wall", "trials_per_hour_steady"):
                if r[k] and b[k]:
                    r[f"speedup_{k[len('trials_per_hour_'):]}_vs_{b['workers']}"] = round(r[k] / b[k], 2)
    result = dict(
        benchmark="parallel_scaling", smoke=args.smoke,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        device=info["gpus"][0] if args.device == "cuda" else f"cpu: {info['cpu']}", machine=info,
        settings=dict(objective=args.objective, proxy=args.proxy, space="smoke (64-px toy space)" if args.smoke
                      else args.space, trials=args.trials,
                      device=args.device, seed=args.seed, sampler="random over a fixed enqueued list",
                      workers=workers, backends=backends),
        runs=runs, notes=notes,
        command=" ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]))
    out = Path(args.out or f"results/benchmarks/parallel_scaling{'_smoke' if args.smoke else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
