#!/usr/bin/env python
"""Where the time of one forward goes, by GPU kernel, for our FasterViT-0..6 and the official code.

Issue #16 asks for ours ≥ 1.3× the official code, both in ``best`` mode; the measured lead is
1.04-1.16×. This benchmark says why, with numbers: each model is timed as ``bench/throughput.py``
times it, then one more pass of the same prepared step runs under ``torch.profiler``
(``measure_throughput(profile_kernels=True)``), and its kernels are put into buckets by name:

- ``attention`` (fused attention kernels), ``conv`` and ``gemm``: the compute-bound work, which runs
  library kernels (cuDNN, cuBLAS, FlashAttention) that neither code writes;
- ``norm_softmax``, ``copy`` (dtype casts and layout copies), ``elementwise`` (the compiler's fused
  pointwise chains), ``memcpy``, ``other``: memory-bound work, what fusing could still remove.

For each model and mode it writes the measured ratio ours / official and a **ceiling**: the
official forward's time (the larger of its timed wall and its profiled kernel sum) over the time of
our compute-bound kernels alone. Had every memory-bound kernel and every gap between kernels of ours
cost nothing, ours would be that much faster than the official code and no more; a ceiling under 1.3
means 1.3× needs faster GEMMs, convolutions or attention kernels than the libraries', not more
fusion. ``cut_for_target`` is the share of our memory-bound kernels and gaps that 1.3× would need
removed.

Run on the GPU machine from the repository root (resumable: a model already profiled without an
error is kept; ``--time-budget`` 480 s by default, no new model starts after it)::

    PYTHONPATH=. python bench/kernel_profile.py --out results/benchmarks/kernel-profile.json

As in ``bench/throughput.py``, worker processes first fill Inductor's cache in parallel (nothing is
timed meanwhile); then this process alone compiles each model from the cache, times and profiles it.
If the profiler sees no kernel inside the CUDA-graph replays, that model's kernels are profiled in
``compile`` mode for ``best`` and ``eager`` for ``cudagraph`` (the same kernels, launched one by one)
while its wall time stays the graph mode's, and the record says so (``profiled_mode``,
``fallback_reason``). ``--smoke`` runs the flow on the CPU with tiny models (eager mode, ATen ops in
place of kernels): it checks the script, not speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as tp  # noqa: E402  (bench/throughput.py: model pairs, the cache-fill workers)

import torch  # noqa: E402

from evaluators.profiler import NoGPUError, ThroughputRecord, measure_throughput, resolve_device  # noqa: E402
from search_spaces import PRESETS  # noqa: E402

MODES = ("best", "cudagraph")
TARGET = 1.3  # issue #16: ours / official in best mode
FALLBACK = {"best": "compile", "cudagraph": "eager"}  # the same kernels, launched one by one
COMPUTE = ("attention", "conv", "gemm")  # compute-bound buckets: library kernels
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (  # first match wins
    ("attention", ("fmha", "flash", "attention", "sdpa", "attn")),
    ("conv", ("fprop", "convolution", "conv2d", "implicit_gemm", "cudnn")),  # cuDNN's convs are xmma GEMMs too
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "wgmma", "splitk", "aten::mm", "aten::bmm",
              "aten::addmm", "aten::linear")),
    ("norm_softmax", ("layer_norm", "softmax", "batch_norm", "var_mean", "group_norm")),
    ("copy", ("copy_kernel", "aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")),
    ("memcpy", ("memcpy", "memset")),
    ("elementwise", ("triton_", "elementwise", "vectorized", "reduce_kernel", "aten::")),
)
BUCKETS = tuple(name for name, _ in CATEGORIES) + ("other",)
_PURE_COPY_OPS = ("_to_copy", "clone", "permute", "transpose", "_unsafe_view", "view", "convert_element_type")
_TRITON = re.compile(r"^triton_(?P<kind>poi|per|red|tem)_fused_(?P<ops>.+?)(?:_\d+)?$")
NAME_CHARS = 200  # kernel names are kept (truncated) so that the buckets can be recomputed from the JSON


def categorise(name: str) -> str:
    """The bucket of one kernel (or, on a CPU, ATen op) name."""
    low = name.lower()
    m = _TRITON.match(name)
    if m:  # Inductor's own kernels are named after the ops fused into them (a conv's bias + LayerNorm: not a conv)
        return _triton_bucket(m.group("kind"), m.group("ops"))
    for bucket, needles in CATEGORIES:
        if any(n in low for n in needles):
            return bucket
    return "other"


def _triton_bucket(kind: str, ops: str) -> str:
    if kind == "tem":  # a Triton template: a GEMM (or flex attention) Inductor generated itself
        return "attention" if "attention" in ops else "gemm"
    if _only_copies(ops):
        return "copy"
    return "norm_softmax" if any(n in ops for n in dict(CATEGORIES)["norm_softmax"]) else "elementwise"


def _only_copies(ops: str) -> bool:
    """A fused Triton kernel whose ops are casts and layout changes alone (e.g. ``_to_copy``, ``clone``)."""
    rest = ops
    for op in sorted(_PURE_COPY_OPS, key=len, reverse=True):
        rest = rest.replace(op, "")
    return rest.strip("_") == ""


def bucket_times(kernel_us: dict[str, float]) -> dict[str, float]:
    """µs per forward by bucket (every bucket present, zeros included)."""
    out = dict.fromkeys(BUCKETS, 0.0)
    for name, us in kernel_us.items():
        out[categorise(name)] += us
    return {k: round(v, 2) for k, v in out.items()}


def summarise_record(rec: dict) -> dict:
    """What the JSON keeps of one profiled record: wall and kernel time per forward, buckets, every kernel."""
    wall_us = 1e6 * rec["batch_size"] / rec["images_per_s"]
    kernels = rec["kernel_us"]
    total = sum(kernels.values())
    buckets = bucket_times(kernels)
    return dict(images_per_s=rec["images_per_s"], cv=rec["cv"], wall_us=round(wall_us, 1), kernel_us=round(total, 1),
                gap_us=round(wall_us - total, 1), compute_us=round(sum(buckets[b] for b in COMPUTE), 1),
                buckets=buckets, distinct_kernels=len(kernels), kernels=_truncated(kernels))


def _truncated(kernels: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, us in kernels.items():
        out[name[:NAME_CHARS]] = round(out.get(name[:NAME_CHARS], 0.0) + us, 3)
    return out


def comparison(models: dict[str, dict], name: str, mode: str) -> Optional[dict]:
    """Measured ratio and the ceiling of one model: the official forward's time over our compute-bound kernel
    time. The official time is the larger of its timed wall and its profiled kernel sum (a profiled pass can
    run slower than the timed ones), so that the ceiling is the bound most generous to ours."""
    ours, official = models.get(f"ours/{name}/{mode}"), models.get(f"official/{name}/{mode}")
    if not ours or not official or ours.get("error") or official.get("error"):
        return None
    official_us = max(official["wall_us"], official["kernel_us"])
    rest = ours["wall_us"] - ours["compute_us"]  # our memory-bound kernels and gaps
    return dict(ratio=round(ours["images_per_s"] / official["images_per_s"], 3),
                ceiling=round(official_us / ours["compute_us"], 3),
                cut_for_target=round(max(0.0, ours["wall_us"] - official_us / TARGET) / rest, 3) if rest > 0 else None,
                compute_ours_over_official=round(ours["compute_us"] / official["compute_us"], 3),
                memory_bound_us=dict(ours=round(ours["kernel_us"] - ours["compute_us"], 1),
                                     official=round(official["kernel_us"] - official["compute_us"], 1)),
                gap_us=dict(ours=ours["gap_us"], official=official["gap_us"]))


def markdown(data: dict) -> list[str]:
    """README rows: one per model and mode with both results."""
    rows = []
    for key, c in data["comparison"].items():
        name, mode = key.split("/")
        o, f = data["models"][f"ours/{key}"], data["models"][f"official/{key}"]
        cut = "—" if c["cut_for_target"] is None else f"{c['cut_for_target']:.0%}"
        rows.append(f"| {tp.preset_label(name)} | {mode} | {c['ratio']:.2f}× | {o['compute_us']:,.0f} / {f['compute_us']:,.0f} | "
                    f"{c['memory_bound_us']['ours']:,.0f} / {c['memory_bound_us']['official']:,.0f} | "
                    f"**{c['ceiling']:.2f}×** | {cut} |")
    return rows


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
class Store:
    """The JSON file, written after every model; records without an error are kept on a re-run."""

    def __init__(self, path: Path, env: dict, settings: dict):
        self.path = path
        self.data: dict = dict(benchmark="kernel-profile", env=env, settings=settings, models={}, comparison={})
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("env", {}).get("gpu_name") != env["gpu_name"]:
                raise SystemExit(f"{path} holds a run on {old.get('env', {}).get('gpu_name')!r}, this GPU is "
                                 f"{env['gpu_name']!r}: pass another --out")
            self.data["models"] = {k: v for k, v in old.get("models", {}).items() if not v.get("error")}

    def done(self, key: str) -> bool:
        return key in self.data["models"]

    def put(self, key: str, value: dict) -> None:
        self.data["models"][key] = value
        self.data["comparison"] = {f"{n}/{m}": c for n, m in sorted({tuple(k.split("/")[1:]) for k in self.data["models"]})
                                   if (c := comparison(self.data["models"], n, m)) is not None}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.path)


def profile_one(ref: tp.ModelRef, mode: str, options: dict) -> dict:
    """Time and profile one model. If the profiler sees no kernel inside a CUDA-graph mode's replays, the
    kernels come from a pass of the same kernels launched one by one (``FALLBACK``), the timing from ``mode``."""
    rec = _measured(ref, mode, options)
    if rec.error:
        return dict(error=rec.error, profiled_mode=mode)
    fallback = None
    if rec.kernel_error:
        if mode not in FALLBACK:
            return dict(error=rec.kernel_error, profiled_mode=mode)
        again = _measured(ref, FALLBACK[mode], options)
        if again.error or again.kernel_error:
            return dict(error=f"{rec.kernel_error}; in {FALLBACK[mode]} mode: {again.error or again.kernel_error}")
        rec.kernel_us, fallback = again.kernel_us, f"{rec.kernel_error} ({mode} mode); kernels from {FALLBACK[mode]} mode"
    out = summarise_record(rec.to_dict())
    out.update(profiled_mode=FALLBACK[mode] if fallback else mode, fallback_reason=fallback, compile_s=rec.compile_s,
               sm_clock_mhz=rec.sm_clock_mhz, throttle_reasons=rec.throttle_reasons, timestamp=rec.timestamp)
    return out


def _measured(ref: tp.ModelRef, mode: str, options: dict) -> ThroughputRecord:
    device = torch.device(options["device"])
    spec, resolution = ref.spec(device, options["seed"])
    setting = {"eager": "eager-best", "compile": "compiled"}.get(mode, mode)
    kwargs = dict(options, **tp.SETTINGS[setting])
    if setting not in tp.COMPILED_SETTINGS:
        kwargs.pop("compile_options", None)
    try:
        return measure_throughput(spec, resolution=resolution, latency_b1=False, profile_kernels=True, **kwargs)
    finally:
        del spec
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def refs(args: argparse.Namespace) -> list[tp.ModelRef]:
    if args.smoke:
        return [r for name, cfg in tp.smoke_models().items()
                for r in tp.pair(name, cfg, "faster_vit_0_224", tp.official_overrides(cfg))]
    return [r for i in args.presets for r in tp.pair(f"faster_vit_{i}_224", PRESETS[f"faster_vit_{i}_224"],
                                                     f"faster_vit_{i}_224", {})]


def warm_cache(jobs: list[tp.ModelRef], options: dict, workers: int, deadline: float, log: Any) -> None:
    """Fill Inductor's cache for ``best`` mode in worker processes (nothing is timed meanwhile)."""
    if not jobs:
        return
    ctx = mp.get_context("spawn")
    threads = max(2, (os.cpu_count() or 2) // workers)
    with ctx.Pool(min(workers, len(jobs)), initializer=tp._init_worker,
                  initargs=(ctx.Lock(), None, deadline, threads)) as pool:
        results = [pool.apply_async(tp.compile_job, (ref, "best", options, True)) for ref in jobs]
        for ref, res in zip(jobs, results):
            out = res.get(timeout=max(1.0, deadline - time.time() + 60))
            done = out.get("error") or f"compiled in {out.get('compile_s')} s"
            log(f"cache fill {ref.impl}/{ref.name}: {done}")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="JSON (default results/benchmarks/kernel-profile.json)")
    p.add_argument("--presets", type=int, nargs="+", default=list(range(7)), help="FasterViT-N to profile")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--workers", type=int, default=14, help="processes filling the Inductor cache")
    p.add_argument("--time-budget", type=float, default=480.0, help="seconds; no new model starts after it")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models, eager mode: checks the script")
    args = p.parse_args(argv)
    if args.smoke:
        args.modes, args.out = ["eager"], args.out or Path("/tmp/nas_kernel_profile_smoke.json")
    args.out = args.out or Path("results/benchmarks/kernel-profile.json")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device("cpu" if args.smoke else "cuda")
    except NoGPUError:
        print("error: no CUDA GPU was found; this benchmark needs one (--smoke checks it on the CPU)", file=sys.stderr)
        return 3
    start = time.time()
    deadline = start + args.time_budget
    log = lambda msg: print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)  # noqa: E731
    options = dict(device=str(device), batch_size=2 if args.smoke else 128, dtype="fp32" if args.smoke else "fp16",
                   warmup=1 if args.smoke else 3, repeats=3 if args.smoke else args.repeats, seed=args.seed)
    env = tp._environment(device)
    store = Store(args.out, env, dict(options=options, modes=args.modes, categories=dict(CATEGORIES)))
    todo = [(ref, mode) for mode in args.modes for ref in refs(args) if not store.done(f"{ref.impl}/{ref.name}/{mode}")]
    log(f"{env['gpu_name']}, torch {torch.__version__}: {len(todo)} profiles to run, out {args.out}")
    if "best" in args.modes:
        warm_cache([r for r, m in todo if m == "best"], options, args.workers, deadline, log)
    for ref, mode in todo:
        if time.time() > deadline:
            log(f"time budget spent: {len(todo) - todo.index((ref, mode))} profiles left; run again to resume")
            break
        key = f"{ref.impl}/{ref.name}/{mode}"
        try:
            out = profile_one(ref, mode, options)
        except (ValueError, RuntimeError) as e:  # a model that cannot be built or run is recorded, the rest go on
            out = dict(error=f"{type(e).__name__}: {e}", profiled_mode=mode)
        store.put(key, out)
        log(f"{key}: " + (out["error"] if out.get("error") else
                          f"{out['images_per_s']:,.0f} img/s, kernels {out['kernel_us']:,.0f} µs of {out['wall_us']:,.0f}, "
                          f"compute-bound {out['compute_us']:,.0f} µs ({out['profiled_mode']})"))
    for row in markdown(store.data):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
