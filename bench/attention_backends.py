#!/usr/bin/env python
"""Which attention kernel serves FasterViT's short windows best in ``best`` mode, on one GPU.

``bench/kernel_profile.py`` found our fused attention (SDPA, which PyTorch serves with cuDNN's flash
kernel on Hopper) to be the largest single kernel of FasterViT-0 in ``best`` mode, and slower than
the official code's explicit q·kᵀ → softmax → ·v. Windows are short (49 tokens and a few carrier
tokens), the batch of windows × heads is large, and an additive bias comes with every window. This
times our FasterViT-0..6 in ``best`` mode with each way of computing attention, and the official
code beside them, in one run:

- ``cudnn``: SDPA as PyTorch chooses (today's default);
- ``efficient``: SDPA restricted to the memory-efficient (CUTLASS) kernel;
- ``explicit``: the explicit path (``fused_attn = False``), which Inductor fuses around the matmuls.

Worker processes fill Inductor's cache first (nothing timed meanwhile), then this process times each
model alone. Run on the GPU machine from the repository root::

    PYTHONPATH=. python bench/attention_backends.py --out results/benchmarks/attention-backends.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as tp  # noqa: E402  (bench/throughput.py: the cache-fill workers' set-up, table labels)

import torch  # noqa: E402

from evaluators.profiler import build_official, measure_throughput, resolve_device  # noqa: E402
from search_spaces import PRESETS, build_model  # noqa: E402

VARIANTS = ("cudnn", "efficient", "explicit")
OPTIONS = dict(mode="best", batch_size=128, dtype="fp16", deploy=True, channels_last=True, warmup=3, latency_b1=False)


@contextlib.contextmanager
def sdpa_backends(variant: str) -> Iterator[None]:
    """The global SDPA switches for ``variant`` (read when Dynamo traces SDPA), restored afterwards."""
    b = torch.backends.cuda
    saved = (b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())
    if variant == "efficient":
        b.enable_cudnn_sdp(False)
        b.enable_flash_sdp(False)
    try:
        yield
    finally:
        for enable, on in zip((b.enable_cudnn_sdp, b.enable_flash_sdp, b.enable_mem_efficient_sdp, b.enable_math_sdp), saved):
            enable(on)


def build(impl: str, name: str, variant: str, device: torch.device) -> torch.nn.Module:
    if impl == "official":
        return build_official(name, device=device)
    model = build_model(PRESETS[name]).to(device)
    if variant == "explicit":
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
    return model


def uses_sdpa(name: str) -> bool:
    """Whether our model of preset ``name`` has any attention on the SDPA path (the model decides, by head
    dimension); built on the meta device, so no memory or time is spent on weights."""
    with torch.device("meta"):
        return any(getattr(m, "fused_attn", False) for m in build_model(PRESETS[name]).modules())


def job(impl: str, name: str, variant: str, repeats: int) -> dict:
    """One model compiled and timed (``repeats`` 1: a cache fill, not a timing)."""
    device = resolve_device("cuda")
    with sdpa_backends(variant):
        rec = measure_throughput(build(impl, name, variant, device), repeats=repeats, **OPTIONS)
    return dict(impl=impl, name=name, variant=variant, images_per_s=rec.images_per_s, cv=rec.cv,
                compile_s=rec.compile_s, error=rec.error, sm_clock_mhz=rec.sm_clock_mhz, timestamp=rec.timestamp)


def markdown(data: dict) -> list[str]:
    """README rows: images/s of each variant of ours, the official code's, and ours (default) / official."""
    res, rows = data["results"], []
    names = sorted({r["name"] for r in res.values()})
    for name in names:
        official = res[f"official/{name}/cudnn"]["images_per_s"]
        cells = [f"{res[k]['images_per_s']:,.0f}" if (k := f"ours/{name}/{v}") in res else "—" for v in VARIANTS]
        default = res.get(f"ours/{name}/cudnn") or res[f"ours/{name}/explicit"]
        rows.append(f"| {tp.preset_label(name)} | {official:,.0f} | {' | '.join(cells)} | {default['images_per_s'] / official:.2f}× |")
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/attention-backends.json"))
    p.add_argument("--presets", type=int, nargs="+", default=list(range(7)))
    p.add_argument("--workers", type=int, default=14)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    start = time.time()
    jobs = [("official", f"faster_vit_{i}_224", "cudnn") for i in args.presets]
    jobs += [("ours", f"faster_vit_{i}_224", v) for v in VARIANTS for i in args.presets
             if v == "explicit" or uses_sdpa(f"faster_vit_{i}_224")]  # FasterViT-4 runs explicit anyway
    ctx = mp.get_context("spawn")
    threads = max(2, (os.cpu_count() or 2) // args.workers)
    with ctx.Pool(args.workers, initializer=tp._init_worker, initargs=(ctx.Lock(), None, math.inf, threads)) as pool:
        for r in [pool.apply_async(job, (*j, 1)) for j in jobs]:
            out = r.get()
            print(f"[{time.time() - start:6.1f}s] cache fill {out['impl']}/{out['name']}/{out['variant']}: "
                  f"{out['error'] or out['compile_s']}", flush=True)
    results: dict[str, Any] = {}
    for j in jobs:
        out = job(*j, args.repeats)
        results["/".join(j)] = out
        print(f"[{time.time() - start:6.1f}s] {'/'.join(j)}: {out['error'] or out['images_per_s']} (cv {out['cv']})", flush=True)
        args.out.write_text(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                                            options=OPTIONS, results=results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
