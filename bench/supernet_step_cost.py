"""A short measurement of the supernet's step cost against stand-alone training (issue #30, cost).

``bench/supernet.py`` measures the cost ratio over a whole run at budget E; that needs the ground
truth and many GPU sessions. This script answers the question that decides whether the target
(supernet GPU-seconds <= 3x one stand-alone run of the largest subnet at E) is within reach, in
about two minutes: images per second of a few hundred supernet steps against the same number of
stand-alone steps of the largest and of the smallest subnet (same data, resolution, batch and
recipe). Since both train E epochs of the same batch, the ratio of their images per second is the
cost ratio a whole run would have, setup aside.

    python bench/supernet_step_cost.py --data fmnist-odd --data-dir .data/fmnist --steps 80   # GPU
    python bench/supernet_step_cost.py ... --variants graph:2,eager:2,graph:1   # step modes x sandwich n
    python bench/supernet_step_cost.py --smoke --out /tmp/cost.json                           # CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluators.jsonfile import write_json  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "benchmarks" / "supernet-step-cost.json"


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="default", help="search space of the supernet (built-in name or YAML)")
    p.add_argument("--data", default="fmnist-odd", help="dataset")
    p.add_argument("--data-dir", default=None, help="folder of the dataset's files")
    p.add_argument("--resolution", type=int, default=64, help="training resolution")
    p.add_argument("--steps", type=int, default=80, help="steps of each measured run")
    p.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when available)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON to write")
    p.add_argument("--eager", action="store_true", help="also time the stand-alone runs in eager mode")
    p.add_argument("--variants", default="auto:2",
                   help="supernet runs to time, STEP_MODE:SANDWICH_N comma list (the first one is 'supernet')")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny space and data, a few steps")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Images per second of the supernet and of the largest and smallest subnets trained alone."""
    import torch

    from evaluators.data import load_dataset
    from evaluators.supernet import train_supernet
    from evaluators.train import TrainRecipe

    splits = load_dataset(args.data, data_dir=args.data_dir)
    kw: dict[str, Any] = dict(subset=64, batch_size=8) if args.smoke else {}
    runs: list[dict[str, Any]] = []
    for mode, n in parse_variants(args.variants):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            sup = train_supernet(args.space, data=splits, out=Path(tmp) / "run", epochs=1000.0,
                                 resolution=args.resolution, device=args.device, max_steps=args.steps,
                                 progress=not args.smoke, val_subset=64, step_mode=mode, sandwich_n=n, **kw)
            meta = json.loads((Path(tmp) / "run" / "supernet.json").read_text())
        runs.append(dict(step_mode=sup.step_mode, sandwich_n=n, images_per_s=sup.images_per_s,
                         subnet_images_per_s=sup.subnet_images_per_s, steady_images_per_s=sup.steady_images_per_s,
                         train_seconds=sup.train_seconds, wall_seconds=time.perf_counter() - t0))
    from search_spaces.fastervit import FasterViTConfig

    largest, smallest = (FasterViTConfig.from_dict(meta[k]) for k in ("largest", "smallest"))
    rec = meta["recipe"]
    alone: dict[str, Any] = {}
    eager: dict[str, Any] = {}
    for name, cfg in (("largest", largest), ("smallest", smallest)):
        recipe = TrainRecipe(steps=args.steps, batch_size=rec["batch_size"], lr=rec["lr"], warmup=rec["warmup"],
                             resolution=args.resolution, subset=kw.get("subset"), val_subset=64)
        alone[name] = _timed_train(cfg, recipe, splits, args)
        if args.eager:  # the supernet's steps are eager: how much of the gap is the step mode
            eager[name] = _timed_train(cfg, recipe.replace(compile="eager"), splits, args)
    for r in runs:
        r["cost_ratio"] = alone["largest"]["images_per_s"] / r["images_per_s"] if r["images_per_s"] else None
    first = runs[0]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    space = args.space if isinstance(args.space, str) else "custom"
    return dict(benchmark="supernet-step-cost", gpu=gpu, host=platform.node(), torch=torch.__version__, space=space,
                data=args.data,
                resolution=args.resolution, steps=args.steps, batch_size=rec["batch_size"],
                sandwich_n=first["sandwich_n"], supernet=first, variants=runs,
                standalone=alone, standalone_eager=eager or None, projected_cost_ratio=first["cost_ratio"])


def parse_variants(text: str) -> list[tuple[str, int]]:
    """``"graph:2,eager:2"`` -> [("graph", 2), ("eager", 2)] (step mode, random subnets per step)."""
    from evaluators.supernet_step import STEP_MODES

    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        mode, _, n = item.partition(":")
        if mode not in STEP_MODES or not n.isdigit():
            raise SystemExit(f"--variants: {item!r} must be STEP_MODE:N with STEP_MODE one of {', '.join(STEP_MODES)}")
        out.append((mode, int(n)))
    if not out:
        raise SystemExit("--variants: no variant given")
    return out


def _timed_train(cfg: Any, recipe: Any, splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One short stand-alone run: its images per second, training seconds and step mode."""
    from evaluators.train import train

    t0 = time.perf_counter()
    r = train(cfg, recipe, data=splits, device=args.device, progress=not args.smoke)
    return dict(images_per_s=r.images_per_s, train_seconds=r.train_seconds, step_mode=r.step_mode,
                wall_seconds=time.perf_counter() - t0)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        from tests.spaces import tiny_space

        args.space, args.data, args.steps, args.device = tiny_space(), "fashion-mnist", 3, "cpu"
    result = measure(args)
    write_json(Path(args.out), result)
    print(f"{result['gpu']}: supernet {result['supernet']['images_per_s']:.0f} img/s, largest alone "
          f"{result['standalone']['largest']['images_per_s']:.0f} img/s "
          f"({result['standalone']['largest']['step_mode']}), projected cost ratio {result['projected_cost_ratio']}")
    for r in result["variants"]:
        print(f"  {r['step_mode']} (sandwich n {r['sandwich_n']}): {r['images_per_s']:.0f} img/s "
              f"(steady {r['steady_images_per_s']}), cost ratio {r['cost_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
