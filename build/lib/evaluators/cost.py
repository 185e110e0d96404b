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

__all__ = ["CostRecord", "count_params", "count_flops", "analytic_flops", "analytic_params", "static_cost",
           "stage_table"]


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


def analytic_flops(cfg: FasterViTConfig) -> int:
    """fvcore's count for the deployed model, from the config alone (no model built: instant).

    Counts what fvcore counts by default: convolution, linear and attention MACs, BatchNorm
    (2 per element, eval), LayerNorm (5 per element), nearest upsampling (1 per output element),
    and the classifier. Tests check it equals ``count_flops`` exactly on varied configs.
    """
    h, w = cfg.resolution
    total = 0
    for c_in, c_out in ((cfg.in_chans, cfg.in_dim), (cfg.in_dim, cfg.dim)):  # stem
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        total += c_out * c_in * 9 * h * w + 2 * c_out * h * w
    for g in cfg.stages:
        c, (h, w) = g.width, g.feature
        depth = cfg.depths[g.index]
        if not g.transformer:
            total += depth * 2 * (c * c * 9 * h * w + 2 * c * h * w)
        else:
            hidden = int(c * cfg.mlp_ratio)
            nw, t = g.num_windows, g.tokens_per_window + g.ct_per_window
            per_block = nw * t * (5 * c + 3 * c * c + c * c + 5 * c + 2 * c * hidden) + nw * 2 * t * t * c
            if g.hat:
                n = g.num_carrier_tokens
                per_block += n * (5 * c + 3 * c * c + c * c + 5 * c + 2 * c * hidden) + 2 * n * n * c
                total += c * cfg.ct_init_kernel**2 * g.padded[0] * g.padded[1]
                if cfg.do_propagation:
                    total += nw * c * g.window * g.window
            total += depth * per_block
        if g.index < len(cfg.stages) - 1:  # downsample: LayerNorm2d + 3x3 stride-2 conv
            ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            total += 5 * c * h * w + 2 * c * c * 9 * ho * wo
    h, w = cfg.stages[-1].feature
    total += (5 if cfg.layer_norm_last else 2) * cfg.num_features * h * w
    return total + cfg.num_features * cfg.num_classes


def analytic_params(cfg: FasterViTConfig) -> int:
    """Parameter count from a model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return count_params(build_model(cfg))


def static_cost(spec: Union[FasterViTConfig, str, dict, nn.Module], *, method: str = "analytic") -> CostRecord:
    """Params and FLOPs of a config, preset name, config dict or built FasterViT.

    ``method="analytic"`` (default, instant) or ``"fvcore"`` (traces the model; the reference).
    Both give the same numbers; tests check it.
    """
    if method not in ("analytic", "fvcore"):
        raise ValueError(f"method={method!r} must be 'analytic' or 'fvcore'")
    if isinstance(spec, nn.Module):
        cfg = getattr(spec, "config", None)
        if cfg is None:
            raise ValueError("static_cost needs a FasterViT (with .config) or a config")
        if method == "fvcore":
            return CostRecord(count_params(spec), count_flops(spec, cfg.resolution, cfg.in_chans), tuple(cfg.resolution))
        return CostRecord(count_params(spec), analytic_flops(cfg), tuple(cfg.resolution))
    cfg = resolve_config(spec)
    if method == "fvcore":
        model = build_model(cfg)
        return CostRecord(count_params(model), count_flops(model, cfg.resolution, cfg.in_chans), tuple(cfg.resolution))
    return CostRecord(analytic_params(cfg), analytic_flops(cfg), tuple(cfg.resolution))


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
