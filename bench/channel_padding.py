"""Channel padding at deploy time (issue #34): images/s of FasterViT presets with and without
``pad_channels=8`` (``search_spaces.padding``), same run, alternating rounds.

FasterViT-4's widths (196) and head dims (49) are not multiples of 8: cuDNN pads every convolution
input and SDPA's fused kernels refuse the head dim. Padding the deployed weights with zero channels
keeps the logits (CPU tests) and should give those kernels back. This measures whether it does.

    python bench/channel_padding.py --models faster_vit_4_21k_224,faster_vit_0_224 --rounds 2   # GPU
    python bench/channel_padding.py --mode best --official --models faster_vit_4_21k_224         # #34's ratio
    python bench/channel_padding.py --smoke --out /tmp/pad.json                                  # CPU

``--official`` adds NVIDIA's code (the ``fastervit`` package, unpadded: the padding is ours) to every
round, so ``padded / official`` is measured in the same run, as issue #34's target is stated.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluators.jsonfile import write_json  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "benchmarks" / "channel-padding.json"
MODELS = "faster_vit_4_21k_224,faster_vit_0_224"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=MODELS, help="comma list of presets")
    p.add_argument("--mode", default="cudagraph", help="profiler mode (cudagraph, best, eager)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resolution", type=int, default=None, help="default: each preset's")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (unpadded, padded)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--official", action="store_true", help="also the official code's model in every round")
    p.add_argument("--smoke", action="store_true", help="CPU, eager, tiny batch and resolution")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Per model: median images/s over the rounds, unpadded and padded, their ratio, what was padded."""
    import statistics

    import torch

    from evaluators.profiler import measure_official, measure_throughput

    rows: dict[str, Any] = {}
    for name in filter(None, (m.strip() for m in args.models.split(","))):
        # the official factory's own resolution (224) unless --resolution names one
        opts: dict[str, Any] = dict(batch_size=args.batch_size, mode=args.mode, device=args.device,
                                    dtype="fp32" if args.smoke else "fp16", repeats=3 if args.smoke else 20,
                                    **({} if args.resolution is None else dict(resolution=args.resolution)))
        variants: list[tuple[str, Optional[int]]] = [("unpadded", None), ("padded", 8)]
        if args.official:
            variants.append(("official", None))
        runs: dict[str, list[float]] = {key: [] for key, _ in variants}
        padded_parts: Any = None
        for _ in range(args.rounds):
            for key, pad in variants:
                rec = (measure_official(name, **opts) if key == "official" else
                       measure_throughput(name, pad_channels=pad, **dict(opts, resolution=args.resolution)))
                if rec.error:
                    raise SystemExit(f"{name} ({key}): {rec.error}")
                runs[key].append(float(rec.images_per_s))
                if pad is not None:
                    padded_parts = dict(padded=rec.channels_padded, kept=rec.channels_kept)
        un, pa = statistics.median(runs["unpadded"]), statistics.median(runs["padded"])
        rows[name] = dict(unpadded_images_per_s=un, padded_images_per_s=pa, ratio=pa / un, rounds=runs,
                          **(padded_parts or {}))
        line = f"{name}: unpadded {un:,.0f} img/s, padded {pa:,.0f} img/s, x{pa / un:.3f}"
        if args.official:
            off = statistics.median(runs["official"])
            rows[name].update(official_images_per_s=off, padded_over_official=pa / off, unpadded_over_official=un / off)
            line += f"; official {off:,.0f} img/s, padded / official x{pa / off:.3f}"
        print(line, flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    return dict(benchmark="channel-padding", gpu=gpu, host=platform.node(), torch=torch.__version__,
                mode=args.mode, batch_size=args.batch_size, resolution=args.resolution, rounds=args.rounds,
                official=args.official,
                dtype="fp32" if args.smoke else "fp16", models=rows,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.device, args.mode, args.batch_size, args.rounds = "cpu", "eager", 1, 1
        args.models = "faster_vit_0_224"  # FasterViT-4 is seconds per image on a CPU
    write_json(Path(args.out), measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
