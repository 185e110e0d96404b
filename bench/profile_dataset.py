#!/usr/bin/env python
"""The throughput predictor's dataset: sampled configs profiled on one GPU, resumable in short runs.

Phases (each appends to ``--out``, a JSON-lines file; a record per line names GPU, driver, torch
and date; what is in the file already is skipped, so each run goes on where the last stopped):

1. ``quick``: ``--n`` configs sampled from the default space at resolutions 160-512 (steps of 32),
   each timed in the search's mode (``cudagraph``, fp16, batch 128), alone in this process.
2. ``warm``: worker processes compile the first ``--n-best`` of them in ``best`` mode
   (torch.compile reduce-overhead) in parallel, timing nothing: they fill the Inductor cache
   (``results/inductor-cache``). Inductor autotunes on the GPU while it compiles, so no timing runs
   meanwhile (see bench/throughput.py). Warmed architectures are listed in a file inside that
   cache (``<cache>/<out stem>.warmed``), so a rerun on the same machine skips them and a fresh
   machine, whose cache is empty, warms them again.
3. ``best``: this process alone measures each of them in ``best`` mode, compiling from that cache.
4. ``summary``: counts, the quick-vs-best Spearman over configs measured both ways, and (with
   ``--fit NAME``) a predictor fitted on the quick records, its held-out error, and the keys of
   ``results/benchmarks/predictor-summary.json`` (other keys already there are kept).

Also ``--n-offgrid`` configs at resolutions off the training grid (176-496, steps of 32) go to
``<out stem>-offgrid.jsonl``: the predictor's error there is reported apart.

On the GPU machine, from the repository root, each run at most ~9 minutes (``--time-budget``)::

    PYTHONPATH=. python bench/profile_dataset.py --time-budget 540
    # ...repeat until it prints "all phases done", then
    PYTHONPATH=. python bench/profile_dataset.py --phases summary --fit h200

Another card: ``--out evaluators/predictors/h100-profile.jsonl`` (a dataset, and the summary file,
hold one GPU's records: appending another's is refused) and ``--summary-out`` for its summary.
The H100 dataset was collected, in one run of 523 s, by ``--phases quick --n 0 --n-offgrid 60``
(the off-grid configs first, so that they are in) then ``--phases quick --n 1000 --n-offgrid 0``
with the time left (363 configs).

``--smoke``: the CPU, tiny resolutions, a handful of configs (best -> ``compile`` with the eager
backend, since ``best`` needs CUDA; said in the output): checks the script, not speed.
Needs torch, numpy, scikit-learn, pyyaml (timm's); never optuna, fvcore or plotly.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluators.predictor_dataset import (RESOLUTIONS, DatasetFile, collect, record_key,  # noqa: E402
                                          sample_configs)

PHASES = ("quick", "warm", "best", "summary")
OFFGRID = tuple(range(176, 497, 32))
SUMMARY = Path("results/benchmarks/predictor-summary.json")
DATASET = Path("evaluators/predictors/h200-profile.jsonl")  # the H200 dataset, package data beside h200.json


# ------------------------------------------------------------------------------------------ settings
def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Measurement settings of the quick and best phases (smoke: CPU-sized)."""
    if args.smoke:
        quick = dict(mode="eager", dtype="fp32", batch_size=2, device="cpu", repeats=2, warmup=1)
        best = dict(quick, mode="compile", compile_options={"backend": "eager"})
    else:
        quick = dict(mode="cudagraph", dtype=args.dtype, batch_size=args.batch_size, device="cuda",
                     repeats=args.repeats, warmup=3)
        best = dict(quick, mode="best", inductor_cache=str(args.inductor_cache))
    return dict(quick=quick, best=best)


def configs(args: argparse.Namespace, *, offgrid: bool = False) -> list:
    if args.smoke:
        res = (48, 80) if offgrid else (32, 64, 96)
        return sample_configs("default", 4 if offgrid else args.n, seed=args.seed + offgrid, resolutions=res)
    return sample_configs("default", args.n_offgrid if offgrid else args.n, seed=args.seed + offgrid,
                          resolutions=OFFGRID if offgrid else RESOLUTIONS)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ phases
def phase_quick(args: argparse.Namespace, deadline: float) -> bool:
    q = settings(args)["quick"]
    done = True
    for label, out, cfgs in (("grid", args.out, configs(args)),
                             ("off-grid", offgrid_path(args.out), configs(args, offgrid=True))):
        def line(i: int, n: int, rec: dict) -> None:
            value = f"{rec['images_per_s']:,.0f} img/s" if rec.get("images_per_s") else rec.get("error")
            if i % 25 == 0 or rec.get("error") or args.smoke:
                say(f"quick {label} [{i + 1}/{n}] {rec['resolution'][0]} px: {value}")

        counts = collect(cfgs, out, deadline=deadline, progress=line, **q)
        say(f"quick {label}: {counts}")
        done = done and counts["left"] == 0
    return done


def _warm_one(cfg_dict: dict, opts: dict) -> tuple[str, Optional[str], float]:
    """Worker: compile (and run briefly) one config in best mode so its kernels are in the cache."""
    from evaluators.profiler import measure_throughput
    from search_spaces import FasterViTConfig

    import torch

    cfg = FasterViTConfig.from_dict(cfg_dict)
    rec = measure_throughput(cfg, **dict(opts, repeats=1, iters_per_sample=1, warmup=1))
    torch.cuda.empty_cache()  # no-op on the CPU; on the GPU the next worker's compile gets the memory
    return cfg.arch_id, rec.error, rec.compile_s or 0.0


def phase_warm(args: argparse.Namespace, deadline: float) -> bool:
    b = settings(args)["best"]
    warm_file = warm_list(args)
    warmed = set(warm_file.read_text().split()) if warm_file.is_file() else set()
    measured = DatasetFile(args.out).done
    todo = [c for c in configs(args)[:args.n_best]
            if c.arch_id not in warmed and record_key(c, mode=b["mode"], dtype=b["dtype"],
                                                      batch_size=b["batch_size"]) not in measured]
    if not todo:
        return True
    say(f"warm: compiling {len(todo)} config(s) in {args.workers} processes (nothing is timed)")
    if not args.smoke:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(args.inductor_cache).resolve()))
    ctx = mp.get_context("spawn")
    left = list(todo)
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        running = {}
        while left or running:
            while left and len(running) < args.workers and time.monotonic() < deadline:
                cfg = left.pop(0)
                running[pool.submit(_warm_one, cfg.to_dict(), b)] = cfg
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                cfg = running.pop(f)
                arch, error, seconds = f.result()
                with open(warm_file, "a") as fh:
                    fh.write(arch + "\n")
                say(f"warm {cfg.resolution[0]} px {arch}: {error or f'{seconds:.0f} s'}")
    return not left


def warm_list(args: argparse.Namespace) -> Path:
    """The list of warmed architectures, kept in the cache it describes (smoke: beside ``--out``)."""
    if args.smoke:  # the smoke's best phase compiles with the eager backend: no Inductor cache
        return args.out.with_name(args.out.name + ".warm")
    folder = Path(args.inductor_cache)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{args.out.stem}.warmed"


def phase_best(args: argparse.Namespace, deadline: float) -> bool:
    b = settings(args)["best"]

    def line(i: int, n: int, rec: dict) -> None:
        value = f"{rec['images_per_s']:,.0f} img/s, compile {rec['compile_s']} s" if rec.get("images_per_s") \
            else rec.get("error")
        say(f"best [{i + 1}/{n}] {rec['resolution'][0]} px: {value}")

    counts = collect(configs(args)[:args.n_best], args.out, deadline=deadline, progress=line, **b)
    say(f"best: {counts}")
    return counts["left"] == 0


def phase_summary(args: argparse.Namespace) -> dict[str, Any]:
    """Counts, quick-vs-best Spearman, and (``--fit``) the predictor with its held-out and off-grid errors."""
    from scipy.stats import spearmanr

    s = settings(args)
    records = DatasetFile(args.out).records()
    ok = [r for r in records if r.get("images_per_s") and not r.get("error")]
    quick = {json.dumps(r["config"], sort_keys=True): r for r in ok if r["mode"] == s["quick"]["mode"]}
    best = {json.dumps(r["config"], sort_keys=True): r for r in ok if r["mode"] == s["best"]["mode"]}
    both = sorted(set(quick) & set(best))
    rho = (float(spearmanr([quick[k]["images_per_s"] for k in both], [best[k]["images_per_s"] for k in both]).statistic)
           if len(both) > 2 else None)
    gpus = sorted({r["gpu_name"] for r in ok})
    out: dict[str, Any] = dict(gpu=gpus[0] if len(gpus) == 1 else gpus, n_configs=len(quick), n_best=len(best),
                               quick_vs_best_spearman=None if rho is None else round(rho, 4), n_both=len(both),
                               drivers=sorted({str(r.get("driver")) for r in ok}),
                               torch=sorted({r["torch_version"] for r in ok}), dataset=str(args.out))
    if args.fit:
        out.update(_fit_summary(args, ok, s["quick"]["mode"]))
    return out


def readme_sentence(summary: dict[str, Any]) -> str:
    """What the README says of the quick mode's ranking fidelity, from the summary."""
    return (f"Spearman ρ = {summary['quick_vs_best_spearman']:.3f} between the quick mode (cudagraph) and "
            f"`best` over {summary['n_both']} configs")


def _fit_summary(args: argparse.Namespace, records: list, mode: str) -> dict[str, Any]:
    from evaluators.predictor import evaluate, fit, read_records

    predictor = fit(records, name=args.fit, mode=mode, seed=args.seed)
    path = predictor.save(args.predictor_out or Path("results/predictors") / f"{args.fit}.json")
    held = predictor.meta["held_out"]["images_per_s"]
    res: dict[str, Any] = dict(n_train=predictor.meta["n_train"], within_10pct=held["within_10pct"],
                               spearman=held["spearman"], held_out=predictor.meta["held_out"], predictor=str(path),
                               predictor_kib=round(path.stat().st_size / 1024, 1))
    off = offgrid_path(args.out)
    if off.is_file():
        res["offgrid"] = evaluate(predictor, [r for r in read_records(off) if r.get("images_per_s")
                                              and not r.get("error") and r.get("mode") == mode])
    return res


def _slug(gpu: Any) -> str:
    return "-".join(str(gpu).lower().replace("nvidia", "").split()) or "gpu"


def check_dataset_gpu(out: Path, gpu: str) -> None:
    """Refuse to append this GPU's records to a dataset of another GPU (e.g. the default, the H200's)."""
    for path in (out, offgrid_path(out)):
        seen = {str(r["gpu_name"]) for r in DatasetFile(path).records() if r.get("gpu_name")}
        if seen and seen != {gpu}:
            mine = out.with_name(_slug(gpu) + "-profile.jsonl")
            raise SystemExit(f"error: {path} holds records of {', '.join(sorted(seen))}; this GPU is {gpu}: one "
                             f"dataset is one card's, pass --out (e.g. --out {mine})")


def offgrid_path(out: Path) -> Path:
    return out.with_name(out.stem + "-offgrid" + out.suffix)


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """Merge into ``path`` (keys of other benchmarks, e.g. best_mode_ratio_vs_official, are kept).

    A summary of another GPU than the one ``path`` holds is refused: merging would mix two cards' numbers.
    """
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("gpu") and summary.get("gpu") and old["gpu"] != summary["gpu"]:
        raise SystemExit(f"error: {path} holds the summary of {old['gpu']}, this dataset is {summary['gpu']}'s: "
                         f"pass --summary-out FILE (e.g. {path.with_name(_slug(summary['gpu']) + '-' + path.name)})")
    old.update(summary)
    old.setdefault("best_mode_ratio_vs_official", {})  # filled by bench/throughput.py's best-mode part
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--n", type=int, default=1000, help="configs of the training grid (quick mode)")
    p.add_argument("--n-best", type=int, default=110, help="of them, also measured in best mode")
    p.add_argument("--n-offgrid", type=int, default=100, help="configs at off-grid resolutions (quick mode)")
    p.add_argument("--workers", type=int, default=8,
                   help="compile processes of the warm phase (each holds one model's GPU memory at batch 128)")
    p.add_argument("--out", type=Path, default=None, help=f"dataset [{DATASET}, shipped with the package]")
    p.add_argument("--inductor-cache", type=Path, default=Path("results/inductor-cache"))
    p.add_argument("--time-budget", type=float, default=540.0, help="seconds; no new measurement starts after it")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--repeats", type=int, default=10, help="timed samples (the search's GPU default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", metavar="NAME", default=None, help="summary: fit a predictor NAME on the quick records")
    p.add_argument("--predictor-out", type=Path, default=None, help="its JSON [results/predictors/NAME.json]")
    p.add_argument("--summary-out", type=Path, default=None, help=f"[{SUMMARY}; smoke: beside --out]")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script, not speed")
    args = p.parse_args(argv)
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    bad = [x for x in phases if x not in PHASES]
    if bad:
        p.error(f"unknown phase(s) {bad}; choose from {', '.join(PHASES)}")
    args.phases = phases
    if args.smoke:
        args.n, args.n_best, args.workers = min(args.n, 12), min(args.n_best, 2), min(args.workers, 2)
        args.out = args.out or Path("results/benchmarks/smoke/profile-dataset.jsonl")
    args.out = args.out or DATASET
    args.summary_out = args.summary_out or (args.out.with_name("predictor-summary.json") if args.smoke else SUMMARY)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.time_budget
    measuring = [p for p in args.phases if p != "summary"]
    if not args.smoke and measuring:  # the summary reads the dataset file: no GPU needed
        import torch

        if not torch.cuda.is_available():
            print(f"error: no CUDA GPU for phase(s) {','.join(measuring)}; run with --smoke to check the script on "
                  "the CPU, or --phases summary to summarise a dataset file", file=sys.stderr)
            return 2
        check_dataset_gpu(args.out, torch.cuda.get_device_name())
    if args.smoke:
        say("smoke: CPU, tiny resolutions; the best phase runs mode 'compile' (eager backend): best needs CUDA")
    complete = True
    for phase, run in (("quick", phase_quick), ("warm", phase_warm), ("best", phase_best)):
        if phase in args.phases and complete:
            complete = run(args, deadline) and complete
    if not complete:
        say(f"time budget reached: run the same command again to go on ({args.out})")
        return 0
    if "summary" in args.phases:
        summary = phase_summary(args)
        write_summary(summary, args.summary_out)
        say(f"summary -> {args.summary_out}: {json.dumps({k: v for k, v in summary.items() if k != 'held_out'})}")
    say("all phases done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
