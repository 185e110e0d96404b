"""Static cost of a network: parameters and FLOPs (fvcore), reported as the paper does.

FLOPs are fvcore's counts of multiply-accumulates ("FLOPs" in the paper's tables) for one image,
on the deployed model (positional MLPs precomputed, as at inference); attention through
``F.scaled_dot_product_attention`` is counted like the two matrix products it replaces.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Union

import torch
import torch.nn as nn

from search_spaces import FasterViTConfig, build_model, resolve_config

__all__ = ["CostRecord", "count_params", "count_flops", "static_cost", "stage_table"]


@dataclass(frozen=True)
class CostRecord:
    params: int
    flops: int  # multiply-accumulates for one image at the config's resolution
    resolution: tuple[int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters())


def _sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def count_flops(model: nn.Module, resolution: tuple[int, int], in_chans: int = 3) -> int:
    """fvcore MACs of one forward pass on one image (model copied and deployed if it can be)."""
    from fvcore.nn import FlopCountAnalysis

    model = copy.deepcopy(model).cpu().float().eval()
    if hasattr(model, "switch_to_deploy") and not getattr(model, "deployed", False):
        model.switch_to_deploy(fuse_bn=False)
    x = torch.zeros(1, in_chans, *resolution)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model, x).set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(fca.total())


def static_cost(spec: Union[FasterViTConfig, str, dict, nn.Module]) -> CostRecord:
    """Params and FLOPs of a config, preset name, config dict or built FasterViT."""
    if isinstance(spec, nn.Module):
        model = spec
        cfg = getattr(spec, "config", None)
        if cfg is None:
            raise ValueError("static_cost needs a FasterViT (with .config) or a config")
    else:
        cfg = resolve_config(spec)
        model = build_model(cfg)
    return CostRecord(count_params(model), count_flops(model, cfg.resolution, cfg.in_chans), tuple(cfg.resolution))


def stage_table(cfg: FasterViTConfig) -> list[dict[str, Any]]:
    """Per-stage facts for ``nas describe``: shapes, windows, tokens per window, carrier tokens."""
    rows = []
    for g in cfg.stages:
        kind = "conv" if not g.transformer else ("HAT" if g.hat else ("global attn" if g.num_windows == 1 else "window attn"))
        rows.append(dict(
            stage=g.index + 1, kind=kind, depth=cfg.depths[g.index], width=g.width,
            heads=cfg.num_heads[g.index] if g.transformer else None,
            feature=f"{g.feature[0]}x{g.feature[1]}",
            padded=f"{g.padded[0]}x{g.padded[1]}" if g.transformer and g.padded != g.feature else "",
            window=g.window if g.transformer else None,
            windows=f"{g.windows[0]}x{g.windows[1]}" if g.transformer else "",
            tokens_per_window=g.tokens_per_window or None,
            ct_per_window=g.ct_per_window or None,
            carrier_tokens=g.num_carrier_tokens or None,
        ))
    return rows
