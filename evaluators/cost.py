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
    deploy = getattr(model, "switch_to_deploy", None)
    if deploy is not None and not getattr(model, "deployed", False):
        deploy(fuse_bn=False)
    x = torch.zeros(1, in_chans, *resolution)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    fca = FlopCountAnalysis(model, x).set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    with torch.no_grad():
        return int(fca.total())


def analytic_flops(cfg: FasterViTConfig) -> int:
    """fvcore's count for the deployed model, from the config alone (no model built: instant).

    Counts what fvcore counts by default: convolution (transposed too), linear and attention MACs,
    BatchNorm (2 per element, eval), LayerNorm (5 per element), nearest upsampling (1 per output
    element), and the classifier; additions, pooling, gathers and activations are free. Every knob
    of ``FasterViTConfig`` is counted (attention type, ablations, halo keys, CT gate, stem). Tests
    check it equals ``count_flops`` exactly on varied configs.
    """
    total = _stem_flops(cfg)
    for g in cfg.stages:
        c, (h, w) = g.width, g.feature
        if not g.transformer:
            total += cfg.depths[g.index] * 2 * (c * c * 9 * h * w + 2 * c * h * w)
        elif g.attention == "twins":
            total += _twins_flops(cfg, g)
        elif g.attention == "edgevit":
            total += _edgevit_flops(cfg, g)
        else:
            total += _hat_flops(cfg, g)
        if g.index < len(cfg.stages) - 1:  # downsample: LayerNorm2d + 3x3 stride-2 conv
            ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            total += 5 * c * h * w + 2 * c * c * 9 * ho * wo
    h, w = cfg.stages[-1].feature
    total += (5 if cfg.layer_norm_last else 2) * cfg.num_features * h * w
    return total + cfg.num_features * cfg.num_classes


def _stem_flops(cfg: FasterViTConfig) -> int:
    h, w = cfg.resolution
    h1, w1 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    h2, w2 = (h1 - 1) // 2 + 1, (w1 - 1) // 2 + 1
    total = cfg.in_dim * cfg.in_chans * 9 * h1 * w1 + 2 * cfg.in_dim * h1 * w1  # conv-BN, stride 2
    total += cfg.dim * cfg.in_dim * 9 * h2 * w2 + 2 * cfg.dim * h2 * w2  # conv-BN, stride 2
    if cfg.stem == "hybrid":  # stride-1 conv-BN at half resolution + 4x4 patchify conv-BN
        total += cfg.in_dim * cfg.in_dim * 9 * h1 * w1 + 2 * cfg.in_dim * h1 * w1
        total += cfg.dim * cfg.in_chans * 16 * h2 * w2 + 2 * cfg.dim * h2 * w2
    return total


def _token_block(c: int, hidden: int, tokens: int) -> int:
    """Per-token part of a pre-norm block: 2 LayerNorms, qkv and output projections, the MLP."""
    return tokens * (5 * c + 3 * c * c + c * c + 5 * c + 2 * c * hidden)


def _hat_flops(cfg: FasterViTConfig, g: Any) -> int:
    c, hidden, heads = g.width, int(g.width * cfg.mlp_ratio), cfg.num_heads[g.index]
    nw, L = g.num_windows, g.ct_per_window
    t = g.tokens_per_window + L  # queries of a window: its tokens and its carrier tokens
    tk = (g.window + 2 * g.overlap) ** 2 + L  # keys: with the halo ring (window_overlap)
    per_block = nw * _token_block(c, hidden, t) + nw * 2 * t * tk * c
    total = 0
    if g.hat:
        if cfg.ct_attention:
            n = g.num_carrier_tokens
            per_block += _token_block(c, hidden, n) + 2 * n * n * c
        if cfg.ct_gate:
            per_block += nw * L * c * heads
        if cfg.ct_init:
            total += c * cfg.ct_init_kernel**2 * g.padded[0] * g.padded[1]
        if cfg.do_propagation:
            total += nw * c * g.window * g.window
    return total + cfg.depths[g.index] * per_block


def _twins_flops(cfg: FasterViTConfig, g: Any) -> int:
    c, hidden = g.width, int(g.width * cfg.mlp_ratio)
    T = g.padded[0] * g.padded[1]
    ws2 = g.window * g.window
    lsa = _token_block(c, hidden, T) + g.num_windows * 2 * ws2 * ws2 * c
    keys = ws2 if g.windows != (1, 1) else T
    gsa = _token_block(c, hidden, T) - T * 2 * c * c + 2 * c * c * keys + 2 * T * keys * c  # q on T, kv on keys
    if g.windows != (1, 1):
        gsa += c * c * g.windows[0] * g.windows[1] * ws2 + 5 * c * ws2  # stride-r conv + LayerNorm
    depth = cfg.depths[g.index]
    return (depth + 1) // 2 * lsa + depth // 2 * gsa


def _edgevit_flops(cfg: FasterViTConfig, g: Any) -> int:
    c, hidden = g.width, int(g.width * cfg.mlp_ratio)
    T = g.padded[0] * g.padded[1]
    D = g.window * g.window  # delegate tokens
    local = 2 * c * T + 2 * c * c * T + 9 * c * T  # BN, two point-wise convs, 3x3 depth-wise
    glob = 5 * c * T + 3 * c * c * D + 2 * D * D * c + c * c * T
    if g.windows != (1, 1):
        glob += c * T + 5 * c * T  # transposed depth-wise propagation + LayerNorm
    mlp = 5 * c * T + 2 * c * hidden * T
    return cfg.depths[g.index] * (local + glob + mlp)


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
            return CostRecord(count_params(spec), count_flops(spec, cfg.resolution, cfg.in_chans), cfg.resolution)
        return CostRecord(count_params(spec), analytic_flops(cfg), cfg.resolution)
    cfg = resolve_config(spec)
    if method == "fvcore":
        model = build_model(cfg)
        return CostRecord(count_params(model), count_flops(model, cfg.resolution, cfg.in_chans), cfg.resolution)
    return CostRecord(analytic_params(cfg), analytic_flops(cfg), cfg.resolution)


def stage_table(cfg: FasterViTConfig) -> list[dict[str, Any]]:
    """Per-stage facts for ``nas describe``: shapes, windows, tokens per window, carrier tokens."""
    rows = []
    for g in cfg.stages:
        if not g.transformer:
            kind = "conv"
        elif g.attention != "hat":
            kind = {"twins": "Twins LSA/GSA", "edgevit": "EdgeViT LGL"}[g.attention]
        else:
            kind = "HAT" if g.hat else ("global attn" if g.num_windows == 1 else "window attn")
            if g.overlap:
                kind += f" +halo{g.overlap}"
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
