"""Quick health check of every GPU code path (profiler modes, official oracle, proxies, training).

Prints one table; exits non-zero if a path fails. Meant as the first command on a lent GPU, so
that the long benchmarks do not discover a broken path after minutes of device time.

    python bench/gpu_smoke.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    import torch

    from evaluators.profiler import measure_official, measure_throughput
    from search_spaces import PRESETS

    rows, failed = [], 0

    def check(name, fn):
        nonlocal failed
        t = time.perf_counter()
        try:
            out = fn()
            rows.append(dict(check=name, ok=True, wall_s=round(time.perf_counter() - t, 2), result=out))
        except Exception as e:  # report every path, then fail at the end
            failed += 1
            rows.append(dict(check=name, ok=False, wall_s=round(time.perf_counter() - t, 2),
                             result=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-2000:]))
        print(json.dumps(rows[-1], default=str)[:400], flush=True)

    def rec(r):
        d = r.to_dict()
        return {k: d.get(k) for k in ("images_per_s", "cv", "latency_ms", "latency_b1_ms", "peak_mem_mb", "gpu_name",
                                      "sm_clock_mhz", "throttle_reasons", "error", "wall_s", "compile_s")}

    cfg0 = PRESETS["faster_vit_0_224"]
    check("ours fv0 cudagraph", lambda: rec(measure_throughput(cfg0, mode="cudagraph")))
    check("ours fv0 cudagraph again", lambda: rec(measure_throughput(cfg0, mode="cudagraph")))
    check("ours fv0 eager best", lambda: rec(measure_throughput(cfg0, mode="eager")))
    check("ours fv0 eager plain", lambda: rec(measure_throughput(cfg0, mode="eager", deploy=False,
                                                                  channels_last=False)))
    check("official fv0 eager best", lambda: rec(measure_official("faster_vit_0_224", mode="eager")))
    check("official fv0 cudagraph", lambda: rec(measure_official("faster_vit_0_224", mode="cudagraph")))
    check("ours fv0 bf16 cudagraph", lambda: rec(measure_throughput(cfg0, mode="cudagraph", dtype="bf16")))

    def sdpa_backend():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from search_spaces import build_model

        m = build_model(cfg0).cuda().eval().switch_to_deploy(dtype=torch.float16)
        m = m.to(memory_format=torch.channels_last)
        x = torch.randn(8, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16), sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            y = m(x)
        return dict(efficient_attention_ok=bool(torch.isfinite(y).all()))

    check("sdpa efficient kernel accepts our deployed masks", sdpa_backend)

    def proxies():
        from evaluators.data import load_dataset, sample_batch
        from evaluators.proxies import compute_proxies

        ds = load_dataset("fashion-mnist", data_dir=args.data_dir)
        batch = sample_batch(ds.train, batch_size=64, resolution=128, seed=0, device="cuda")
        cfg = cfg0.at_resolution(128).replace(num_classes=10)
        res = compute_proxies(cfg, None, batch, device="cuda", seed=0)
        return {k: (round(v.value, 4) if v.value is not None else v.error, round(v.seconds, 3)) for k, v in res.items()}

    check("all proxies on fv0@128", proxies)

    def train():
        from evaluators.train import train_proxy

        r = train_proxy(cfg0.at_resolution(128), data="fashion-mnist", data_dir=args.data_dir, steps=60,
                        batch_size=256, device="cuda", progress=False, eval_every=60, val_subset=2000)
        return dict(top1=r.top1, images_per_s=round(r.images_per_s), status=r.status, seconds=round(r.seconds, 1))

    check("train proxy fv0@128 60 steps", train)
    print(f"\n{len(rows) - failed}/{len(rows)} checks passed on {torch.cuda.get_device_name(0)}")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(device=torch.cuda.get_device_name(0), rows=rows), indent=1,
                                             default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
