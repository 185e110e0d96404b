"""Features of a FasterViT config for the throughput predictor, from the config alone (instant).

Two groups. Version 1's counts (``V1_FEATURE_NAMES``), per stage: multiply-accumulates (the terms of
``evaluators.cost.analytic_flops``, split by stage; their sum equals it, tests check), the attention
part of them, an estimate of the activation elements moved through memory, tokens, windows, carrier
tokens, width, heads, depth, window size; over the network: totals, an estimate of the weights,
blocks, resolution and the switches (HAT, propagation, MLP ratio), some also in log form.

The kernel model's quantities (``KERNEL_FEATURES``, from ``evaluators.predictor_kernels``): every
kernel the deployed fp16 model launches, with a roofline time each, summed per kind at the
profiler's batch and at batch 1; the kernel count (the launch floor that CUDA graphs leave); what
pushes a config off the fast path (attention with a head dimension the fused kernel refuses, an fp32
residual stream from layer scales, window padding); per-stage roofline times. The predictor's base
is a fitted non-negative combination of the per-kind sums (``evaluators.predictor``). nn-Meter
(Zhang et al., MobiSys 2021) and HELP (Lee et al., NeurIPS 2021) show that per-kernel and per-block
counts carry most of a latency model; the roofline per kernel is Williams et al. (CACM 2009).
"""

from __future__ import annotations

import math
from typing import Any

from search_spaces import FasterViTConfig

from .predictor_kernels import HBM_BYTES_PER_S, KINDS, PEAK_FLOPS, kernel_tally

__all__ = ["STAGE_FEATURES", "GLOBAL_FEATURES", "V1_FEATURE_NAMES", "KERNEL_BATCHES", "BATCH_FEATURES",
           "KERNEL_FEATURES", "FEATURE_NAMES", "LINEAR_FEATURES", "stage_costs", "config_features", "kernel_features"]

NUM_STAGES = 4
STAGE_FEATURES = ("macs", "attn_macs", "act_elems", "tokens", "windows", "carrier_tokens", "width", "heads",
                  "head_dim", "depth", "window", "tokens_per_window", "transformer")
GLOBAL_FEATURES = ("resolution", "macs", "log_macs", "stem_macs", "head_macs", "weights", "log_weights", "act_elems",
                   "log_act_elems", "attn_macs", "log_attn_macs", "blocks", "conv_blocks", "transformer_blocks",
                   "log_tokens", "mlp_ratio", "hat_stages", "do_propagation", "ct_size", "ct_init_kernel",
                   "intensity")
#: the features of predictor version 1 (counts and sizes; kept as they were, for comparison)
V1_FEATURE_NAMES = tuple(f"s{i}_{k}" for i in range(NUM_STAGES) for k in STAGE_FEATURES) + GLOBAL_FEATURES
#: batches the kernel model is evaluated at: the profiler's throughput batch, and 1 (latency)
KERNEL_BATCHES = (128, 1)
#: per batch: roofline microseconds per kernel kind, their sum (and its log), and the network-level
#: roofline terms (all MACs at peak, version 1's activation elements at HBM bandwidth)
BATCH_FEATURES = tuple(f"{kind}_us" for kind in KINDS) + ("roofline_us", "log_roofline_us", "macs_us", "act_us")
KERNEL_FEATURES = (("kernels", "weight_casts", "unfused_attention", "fp32_stream", "score_bytes")
                   + tuple(f"b{b}_{k}" for b in KERNEL_BATCHES for k in BATCH_FEATURES)
                   + tuple(f"s{i}_{k}" for i in range(NUM_STAGES) for k in ("us", "pad_waste", "unfused")))
FEATURE_NAMES = V1_FEATURE_NAMES + KERNEL_FEATURES
#: the log scaling quantities of the predictor's log-linear correction: time ~ MACs^p * bytes^q * ...
LINEAR_FEATURES = ("log_macs", "log_act_elems", "log_weights", "log_attn_macs", "log_tokens", "blocks")


def stage_costs(cfg: FasterViTConfig) -> dict[str, Any]:
    """MACs and activation elements per image: ``stem``, ``head`` and one dict per stage (with its downsample)."""
    h, w = cfg.resolution
    stem_macs = stem_act = stem_w = 0
    for c_in, c_out in ((cfg.in_chans, cfg.in_dim), (cfg.in_dim, cfg.dim)):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        stem_macs += c_out * c_in * 9 * h * w + 2 * c_out * h * w
        stem_act += 2 * c_out * h * w
        stem_w += c_out * c_in * 9
    stages = []
    for g in cfg.stages:
        stages.append(_stage(cfg, g))
    h, w = cfg.stages[-1].feature
    head_macs = (5 if cfg.layer_norm_last else 2) * cfg.num_features * h * w + cfg.num_features * cfg.num_classes
    return dict(stem=dict(macs=stem_macs, act_elems=stem_act, weights=stem_w), stages=stages,
                head=dict(macs=head_macs, act_elems=2 * cfg.num_features * h * w,
                          weights=cfg.num_features * cfg.num_classes))


def _stage(cfg: FasterViTConfig, g: Any) -> dict[str, float]:
    c, (h, w) = g.width, g.feature
    depth = cfg.depths[g.index]
    macs = attn = act = weights = 0
    tokens = windows = carriers = 0
    if not g.transformer:
        macs += depth * 2 * (c * c * 9 * h * w + 2 * c * h * w)
        act += depth * 6 * c * h * w  # two convs in/out, activation, residual
        weights += depth * 2 * 9 * c * c
        tokens = h * w
    else:
        hidden = int(c * cfg.mlp_ratio)
        nw, t = g.num_windows, g.tokens_per_window + g.ct_per_window
        per_block = nw * t * (5 * c + 3 * c * c + c * c + 5 * c + 2 * c * hidden) + nw * 2 * t * t * c
        attn_block = nw * 2 * t * t * c
        act_block = nw * t * (16 * c + 4 * hidden)
        weights += depth * (4 * c * c + 2 * c * hidden) * (2 if g.hat else 1)
        if g.hat:
            n = g.num_carrier_tokens
            per_block += n * (5 * c + 3 * c * c + c * c + 5 * c + 2 * c * hidden) + 2 * n * n * c
            attn_block += 2 * n * n * c
            act_block += n * (16 * c + 4 * hidden)
            macs += c * cfg.ct_init_kernel ** 2 * g.padded[0] * g.padded[1]
            act += 2 * c * g.padded[0] * g.padded[1]
            if cfg.do_propagation:
                macs += nw * c * g.window * g.window
                act += 2 * nw * c * g.window * g.window
        macs += depth * per_block
        attn += depth * attn_block
        act += depth * act_block + 4 * c * g.padded[0] * g.padded[1]  # window partition / reverse
        windows, carriers, tokens = nw, g.num_carrier_tokens, nw * t + g.num_carrier_tokens
    if g.index < NUM_STAGES - 1:  # downsample: LayerNorm2d + 3x3 stride-2 conv
        ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        macs += 5 * c * h * w + 2 * c * c * 9 * ho * wo
        act += 3 * c * h * w + 2 * c * ho * wo
        weights += 9 * c * (2 * c)
    heads = cfg.num_heads[g.index] if g.transformer else 0
    return dict(macs=macs, attn_macs=attn, act_elems=act, weights=weights, tokens=tokens, windows=windows,
                carrier_tokens=carriers, width=c, heads=heads, head_dim=c // heads if heads else 0, depth=depth,
                window=g.window if g.transformer else 0, tokens_per_window=g.tokens_per_window,
                transformer=int(g.transformer))


def kernel_features(cfg: FasterViTConfig, macs: float, act_elems: float) -> dict[str, float]:
    """``KERNEL_FEATURES`` of one config (``macs``, ``act_elems``: version 1's totals per image).

    ``b{B}_{kind}_us``: roofline microseconds of the kernels of a kind at batch B (``KINDS``);
    ``b{B}_macs_us`` / ``b{B}_act_us``: the network-level roofline terms; ``kernels`` /
    ``weight_casts``: kernels per forward (whatever the batch); ``unfused_attention``: attention
    layers off the fused kernel; ``score_bytes``: their score-matrix traffic per image; ``s{i}_us``:
    stage i's roofline time at the first batch; ``s{i}_pad_waste``: padded / real feature-map area
    - 1 (window padding computes on zeros); ``s{i}_unfused``: 1 when stage i's attention is unfused.
    """
    out: dict[str, float] = {}
    for b in KERNEL_BATCHES:
        k = kernel_tally(cfg, b)
        out.update({f"b{b}_{kind}_us": us for kind, us in k.us.items()})
        out.update({f"b{b}_roofline_us": k.roofline_us, f"b{b}_log_roofline_us": math.log(k.roofline_us),
                    f"b{b}_macs_us": 2e6 * b * macs / PEAK_FLOPS,
                    f"b{b}_act_us": 2e6 * b * act_elems / HBM_BYTES_PER_S})
        if b == KERNEL_BATCHES[0]:
            out.update(kernels=k.kernels, weight_casts=k.weight_casts, unfused_attention=k.unfused_attention,
                       score_bytes=k.score_bytes / b)
            out.update({f"s{i}_us": us for i, us in enumerate(k.stage_us)})
    out["fp32_stream"] = float(cfg.layer_scale is not None)
    for g in cfg.stages:
        out[f"s{g.index}_pad_waste"] = g.padded[0] * g.padded[1] / (g.feature[0] * g.feature[1]) - 1
        out[f"s{g.index}_unfused"] = float(g.transformer and (g.width // cfg.num_heads[g.index]) % 8 != 0)
    return {name: float(out[name]) for name in KERNEL_FEATURES}


def config_features(cfg: FasterViTConfig) -> dict[str, float]:
    """``FEATURE_NAMES`` -> value for one config."""
    costs = stage_costs(cfg)
    out: dict[str, float] = {}
    for s in costs["stages"]:
        i = len(out) // len(STAGE_FEATURES)
        out.update({f"s{i}_{k}": float(s[k]) for k in STAGE_FEATURES})
    macs = costs["stem"]["macs"] + costs["head"]["macs"] + sum(s["macs"] for s in costs["stages"])
    act = costs["stem"]["act_elems"] + costs["head"]["act_elems"] + sum(s["act_elems"] for s in costs["stages"])
    attn = sum(s["attn_macs"] for s in costs["stages"])
    n_weights = costs["stem"]["weights"] + costs["head"]["weights"] + sum(s["weights"] for s in costs["stages"])
    conv_blocks = sum(cfg.depths[g.index] for g in cfg.stages if not g.transformer)
    tr_blocks = sum(cfg.depths[g.index] for g in cfg.stages if g.transformer)
    tokens = sum(s["tokens"] * s["depth"] for s in costs["stages"])
    out.update(
        resolution=float(cfg.resolution[0] * cfg.resolution[1]) ** 0.5, macs=float(macs), log_macs=math.log(macs),
        stem_macs=float(costs["stem"]["macs"]), head_macs=float(costs["head"]["macs"]), weights=float(n_weights),
        log_weights=math.log(n_weights), act_elems=float(act), log_act_elems=math.log(act), attn_macs=float(attn),
        log_attn_macs=math.log1p(attn), blocks=float(conv_blocks + tr_blocks), conv_blocks=float(conv_blocks),
        transformer_blocks=float(tr_blocks), log_tokens=math.log1p(tokens), mlp_ratio=float(cfg.mlp_ratio),
        hat_stages=float(sum(g.hat for g in cfg.stages)), do_propagation=float(cfg.do_propagation),
        ct_size=float(cfg.ct_size), ct_init_kernel=float(cfg.ct_init_kernel), intensity=macs / act,
    )
    out.update(kernel_features(cfg, macs, act))
    return {k: out[k] for k in FEATURE_NAMES}
