"""What NVIDIA ModelOpt's NAS finds elastic in our FasterViT (the README's supernet decision).

Converts the generator's FasterViT-0 (at 64 px, 10 classes) with ``modelopt.torch.nas.convert``
(mode ``autonas``: ModelOpt traces the model and makes what it can dynamic), then counts the
hyperparameters it made searchable, by kind, and checks that the converted model still gives the
original output at its largest setting. CPU only; needs ``pip install nvidia-modelopt`` (tried:
0.47.0 with torch 2.14 in a throwaway virtual environment).

    python bench/modelopt_probe.py [--preset faster_vit_0_224] [--resolution 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="faster_vit_0_224")
    p.add_argument("--resolution", type=int, default=64)
    args = p.parse_args(argv)
    try:
        import modelopt
        import modelopt.torch.nas as mtn
        from modelopt.torch.nas.utils import get_subnet_config
    except ImportError as e:
        print(f"nvidia-modelopt is not installed ({e}): pip install nvidia-modelopt", file=sys.stderr)
        return 2
    import torch

    from search_spaces import build_model, resolve_config

    warnings.filterwarnings("ignore")
    cfg = resolve_config(args.preset).at_resolution(args.resolution).replace(num_classes=10)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, *cfg.resolution)
    with torch.no_grad():
        ref = model(x)
    t = time.perf_counter()
    converted = mtn.convert(model, mode=[("autonas", None)])
    seconds = time.perf_counter() - t
    searchable = get_subnet_config(converted, configurable=True)
    kinds = collections.Counter(k.rsplit(".", 1)[-1] for k in searchable)
    positional = sum(1 for k in searchable if "pos_embed.mlp." in k or "rel_pos.mlp." in k)
    with torch.no_grad():
        same = bool(torch.equal(converted(x), ref))
    print(json.dumps(dict(modelopt=modelopt.__version__, torch=torch.__version__, config=cfg.summary(),
                          convert_seconds=round(seconds, 2), searchable=len(searchable), by_kind=dict(kinds),
                          in_positional_mlps=positional, depth=sum(1 for k in searchable if k.endswith(".depth")),
                          largest_output_unchanged=same,
                          names=sorted(searchable)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
