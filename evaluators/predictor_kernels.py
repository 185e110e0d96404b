"""The kernels a FasterViT forward pass launches on a GPU, with a roofline time for each (config only).

The throughput predictor's physical features (``evaluators.predictor_features``). The list mirrors
what ``evaluators.profiler`` runs: the deployed model (positional tables precomputed, BatchNorm folded),
channels-last, fp16 autocast *without* its weight-cast cache, replayed from a CUDA graph. In that
setting (checked op by op against a dispatch trace of the real model on fake CUDA tensors: the same
kernel count on 75 dataset configs at batch 128 and 1, bytes within 1 % where attention is fused):

- every fp32 parameter is cast to fp16 by its own kernel in every forward (a third of all kernels,
  and most of the time at batch 1);
- LayerNorm and softmax run in fp32, with a cast in front (from fp16) and one behind (to the next
  GEMM): a LayerNorm moves 20 bytes per element, not 4;
- a layer scale is an fp32 parameter, so ``x + gamma * y`` promotes the residual stream to fp32
  (``layer_scale`` doubles the bytes of every residual, norm input and copy);
- attention with a head dimension that is not a multiple of 8 leaves the fused kernel
  (``search_spaces.fastervit``): q kᵀ and the score matrix go through memory, softmax in fp32 (plus
  the copies ``torch.matmul`` makes of the permuted q, k, v, which the trace does not show);
- windows are a permuting copy in and out (a view when a stage has one window), padding a copy.

Each kernel's time is max(its FLOPs at peak, padded to its tiles and waves over the SMs; its bytes
at HBM bandwidth), on the nominal card below. The predictor fits one scale factor per kind (GEMM,
attention, memory) and a per-kernel cost, so the constants only decide which kernels are compute- or
memory-bound and how tiles quantise: they are not tied to the H200's absolute speed. Twins and
EdgeViT blocks and the halo / CT-gate proposals (no dataset config has them) are modelled from
their code; on a tiny config their kernel counts are within 4 of the trace (the HAT ones: exact).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from search_spaces import FasterViTConfig
from search_spaces.config import NUM_STAGES

__all__ = ["KernelTally", "kernel_tally", "PEAK_FLOPS", "HBM_BYTES_PER_S", "SMS"]

#: A nominal H200 SXM (the GPU of the shipped data): dense fp16 tensor-core FLOP/s, HBM bytes/s,
#: streaming multiprocessors. Only their ratio (which kernels are compute- or memory-bound) and the
#: SM count (wave quantisation) shape the features: the predictor fits a scale factor per kind.
PEAK_FLOPS = 989e12
HBM_BYTES_PER_S = 4.8e12
SMS = 132
GEMM_TILE = 128  # output tile (rows and columns) of a tensor-core GEMM kernel
#: fixed work of one output tile (pipeline fill, epilogue writing the tile), as extra K steps
GEMM_TILE_OVERHEAD_K = 64
ATTN_TILE = 64  # queries and keys per block of the memory-efficient attention kernel
#: attention-score elements per second the fused kernel's softmax manages on the CUDA cores
#: (fp32 FLOP/s of the nominal card, ~8 operations per score: scale, bias, max, exp, sum, rescale)
SCORES_PER_S = 67e12 / 8
HALF, FLOAT = 2, 4  # bytes of fp16 and fp32 elements
#: kernel kinds, each with its own fitted speed: cuBLAS GEMMs (linear layers, batched matmuls), cuDNN
#: convolutions, fused attention, row-wise fp32 normalisations (LayerNorm, softmax), other memory-bound kernels
KINDS = ("gemm", "conv", "attention", "scores", "norm", "memory")


class KernelTally:
    """Running totals of the kernels of one forward pass (module docstring): count, FLOPs, bytes and
    roofline microseconds per kind on the nominal card; ``kernel_tally`` fills one."""

    def __init__(self) -> None:
        self.kernels = 0
        self.weight_casts = 0
        self.unfused_attention = 0
        self.us = {kind: 0.0 for kind in KINDS}
        self.flops = 0.0
        self.bytes = 0.0
        self.score_bytes = 0.0  # bytes of attention-score matrices written and read (unfused path)
        self.stage_us: list[float] = []  # roofline time of each stage (with its downsample)

    def _add(self, kind: str, flops: float, nbytes: float, compute_us: float) -> None:
        self.kernels += 1
        self.flops += flops
        self.bytes += nbytes
        self.us[kind] += max(compute_us, 1e6 * nbytes / HBM_BYTES_PER_S)

    def memory(self, nbytes: float, kind: str = "memory") -> None:
        """A memory-bound kernel (elementwise, copy, cast; ``kind="norm"``: LayerNorm, softmax) moving ``nbytes``."""
        self._add(kind, 0.0, nbytes, 0.0)

    def cast(self, elems: float, src: int, dst: int) -> None:
        """A dtype cast of ``elems`` (none when the dtypes agree)."""
        if src != dst:
            self.memory(elems * (src + dst))

    def weight(self, elems: float) -> None:
        """Autocast's per-forward fp32 -> fp16 cast of one parameter tensor."""
        self.weight_casts += 1
        self.cast(elems, FLOAT, HALF)

    def gemm(self, m: float, n: float, k: float, batch: float = 1, *, shared_b: bool = True,
             a_elems: Optional[float] = None, kind: str = "gemm") -> None:
        """A tensor-core GEMM (m x k) @ (k x n), ``batch`` times; ``shared_b``: one weight for all;
        ``a_elems``: elements of the left operand read (an implicit-GEMM convolution reads its input, not m x k)."""
        flops = 2.0 * m * n * k * batch
        b_bytes = k * n * (1 if shared_b else batch)
        a_read = m * k * batch if a_elems is None else a_elems
        nbytes = HALF * (a_read + m * n * batch + b_bytes)
        tiles = math.ceil(m / GEMM_TILE) * math.ceil(n / GEMM_TILE) * batch
        waves = math.ceil(tiles / SMS)
        compute_us = 1e6 * waves * SMS * 2.0 * GEMM_TILE * GEMM_TILE * (k + GEMM_TILE_OVERHEAD_K) / PEAK_FLOPS
        self._add(kind, flops, nbytes, compute_us)

    def attention(self, bh: float, tq: float, tk: float, d: float, bias_heads: float) -> None:
        """Fused (memory-efficient) attention of ``bh`` (batch x heads) sequences; bias read once per head.

        Its tiles: ``ATTN_TILE`` queries x ``ATTN_TILE`` keys; q kᵀ steps through the head dimension
        32 at a time, and p v fills a 64- or 128-wide output (the kernel's compiled head-dimension
        bound), so a small head dimension costs as much as 64.
        """
        flops = 4.0 * bh * tq * tk * d
        nbytes = HALF * (bh * (2 * tq + 2 * tk) * d + bias_heads * tq * tk)
        blocks = bh * math.ceil(tq / ATTN_TILE)
        waves = math.ceil(blocks / SMS)
        width = math.ceil(d / 32) * 32 + (64 if d <= 64 else 128 if d <= 128 else d)
        block_scores = ATTN_TILE * math.ceil(tk / ATTN_TILE) * ATTN_TILE
        self._add("attention", flops, nbytes, 1e6 * waves * SMS * 2.0 * block_scores * width / PEAK_FLOPS)
        self.us["scores"] += 1e6 * waves * SMS * block_scores / SCORES_PER_S  # same kernel, not another launch

    @property
    def roofline_us(self) -> float:
        return sum(self.us.values())

    def features(self) -> dict[str, float]:
        """Totals: kernels, parameter casts, unfused attentions, roofline microseconds per kind and in all."""
        return dict(kernels=self.kernels, weight_casts=self.weight_casts, unfused_attention=self.unfused_attention,
                    **{f"{kind}_us": us for kind, us in self.us.items()}, roofline_us=self.roofline_us,
                    flops=self.flops, bytes=self.bytes, score_bytes=self.score_bytes)


def kernel_tally(cfg: FasterViTConfig, batch: int) -> KernelTally:
    """The kernels of one forward pass of ``cfg`` at ``batch`` images (see ``KernelTally``)."""
    k = KernelTally()
    a = _stem(k, cfg, batch)
    for g in cfg.stages:
        before = k.roofline_us
        if not g.transformer:
            a = _conv_stage(k, cfg, g, batch, a)
        elif g.attention == "twins":
            a = _twins_stage(k, cfg, g, batch, a)
        elif g.attention == "edgevit":
            a = _edgevit_stage(k, cfg, g, batch, a)
        else:
            a = _hat_stage(k, cfg, g, batch, a)
        if g.index < NUM_STAGES - 1:
            a = _downsample(k, g, batch, a)
        k.stage_us.append(k.roofline_us - before)
    _head(k, cfg, batch, a)
    return k


# --- layers (``a`` is the bytes per element of the tensor coming in; each returns the one going out)
def _layer_norm(k: KernelTally, elems: float, a: int) -> int:
    """Autocast runs LayerNorm in fp32: a cast in (from fp16), the norm, fp32 out."""
    k.cast(elems, a, FLOAT)
    k.memory(2 * FLOAT * elems, kind="norm")
    return FLOAT


def _linear(k: KernelTally, rows: float, n: int, kdim: int, a: int, bias: bool = True) -> int:
    k.cast(rows * kdim, a, HALF)
    k.weight(n * kdim)
    if bias:
        k.weight(n)
    k.gemm(rows, n, kdim)
    return HALF


def _conv(k: KernelTally, in_elems: float, out_pixels: float, cin: int, cout: int, taps: int, a: int,
          bias: bool = True) -> int:
    """A dense convolution (``taps`` = kernel height x width) as an implicit GEMM over the output pixels."""
    k.cast(in_elems, a, HALF)
    k.weight(cout * cin * taps)
    if bias:
        k.weight(cout)
    k.gemm(out_pixels, cout, cin * taps, a_elems=in_elems, kind="conv")
    return HALF


def _depthwise(k: KernelTally, elems_in: float, elems_out: float, channels: int, taps: int, a: int) -> int:
    """A depth-wise (or transposed depth-wise) convolution: memory-bound, counted by its bytes."""
    k.cast(elems_in, a, HALF)
    k.weight(channels * taps)
    k.weight(channels)
    k.memory(HALF * (elems_in + elems_out))
    return HALF


def _elementwise(k: KernelTally, elems: float, a: int) -> int:
    k.memory(2 * a * elems)
    return a


def _residual(k: KernelTally, elems: float, a_x: int, a_y: int, layer_scale: bool) -> int:
    """x + gamma * y: an fp32 gamma promotes the branch (and so the stream) to fp32."""
    if layer_scale:
        k.memory(elems * (a_y + FLOAT))
        a_y = FLOAT
    out = max(a_x, a_y)
    k.memory(elems * (a_x + a_y + out))
    return out


def _attention(k: KernelTally, seqs: float, tq: int, tk: int, c: int, heads: int, bias: bool,
               extra_bias: bool = False) -> None:
    """softmax(q kᵀ + bias) v of ``seqs`` sequences: fused below head_dim % 8 == 0, else the explicit path."""
    hd = c // heads
    bh = seqs * heads
    scores = bh * tq * tk
    if extra_bias:  # a per-sequence fp32 term (halo mask, CT gate) added to the broadcast bias
        k.memory(scores * (FLOAT + FLOAT) + heads * tq * tk * HALF)
    if hd % 8 == 0:
        if extra_bias:
            k.cast(scores, FLOAT, HALF)
        k.attention(bh, tq, tk, hd, bias_heads=bh if extra_bias else (heads if bias else 0))
        return
    k.unfused_attention += 1
    for rows in (tq, tk, tk):  # q, k, v made contiguous for the batched matmuls
        k.memory(2 * HALF * bh * rows * hd)
    before = k.bytes
    k.gemm(tq, tk, hd, batch=bh, shared_b=False)
    k.memory(2 * HALF * scores)  # * scale
    if bias or extra_bias:
        k.memory(scores * (HALF + (FLOAT if extra_bias else HALF) + HALF))
    k.memory(scores * (HALF + FLOAT), kind="norm")  # softmax runs in fp32 under autocast
    k.cast(scores, FLOAT, HALF)
    k.gemm(tq, hd, tk, batch=bh, shared_b=False)
    k.score_bytes += k.bytes - before


def _attention_layer(k: KernelTally, cfg: FasterViTConfig, seqs: float, tq: int, c: int, heads: int, a: int, *,
                     tk: Optional[int] = None, extra_bias: bool = False) -> int:
    """qkv projection, attention, output copy (transpose) and projection."""
    rows = seqs * tq
    _linear(k, rows, 3 * c, c, a, cfg.qkv_bias)
    _attention(k, seqs, tq, tk or tq, c, heads, cfg.attn_bias, extra_bias)
    k.memory(2 * HALF * rows * c)
    return _linear(k, rows, c, c, HALF)


def _mlp(k: KernelTally, rows: float, c: int, hidden: int, a: int) -> int:
    _linear(k, rows, hidden, c, a)
    _elementwise(k, rows * hidden, HALF)  # GELU
    return _linear(k, rows, c, hidden, HALF)


def _token_block(k: KernelTally, cfg: FasterViTConfig, seqs: float, tq: int, c: int, heads: int, a: int, *,
                 tk: Optional[int] = None, extra_bias: bool = False) -> int:
    """A pre-norm transformer block (LN, attention, residual, LN, MLP, residual) on ``seqs`` x ``tq`` tokens."""
    rows = seqs * tq
    ls = cfg.layer_scale is not None
    y = _attention_layer(k, cfg, seqs, tq, c, heads, _layer_norm(k, rows * c, a), tk=tk, extra_bias=extra_bias)
    a = _residual(k, rows * c, a, y, ls)
    y = _mlp(k, rows, c, int(c * cfg.mlp_ratio), _layer_norm(k, rows * c, a))
    return _residual(k, rows * c, a, y, ls)


# --- network parts
def _stem(k: KernelTally, cfg: FasterViTConfig, b: int) -> int:
    h, w = cfg.resolution
    h1, w1 = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    h2, w2 = (h1 - 1) // 2 + 1, (w1 - 1) // 2 + 1
    image = b * cfg.in_chans * h * w
    a = _conv(k, image, b * h1 * w1, cfg.in_chans, cfg.in_dim, 9, FLOAT)  # the input arrives in fp32
    _elementwise(k, b * cfg.in_dim * h1 * w1, a)  # ReLU
    if cfg.stem == "hybrid":
        _conv(k, b * cfg.in_dim * h1 * w1, b * h1 * w1, cfg.in_dim, cfg.in_dim, 9, a)
        _elementwise(k, b * cfg.in_dim * h1 * w1, a)
        _conv(k, b * cfg.in_dim * h1 * w1, b * h2 * w2, cfg.in_dim, cfg.dim, 9, a)
        if h % 4 or w % 4:
            k.memory(2 * FLOAT * image)  # pad the image to a multiple of 4
        _conv(k, image, b * h2 * w2, cfg.in_chans, cfg.dim, 16, FLOAT)
        k.memory(3 * HALF * b * cfg.dim * h2 * w2)  # add the patchify branch
    else:
        _conv(k, b * cfg.in_dim * h1 * w1, b * h2 * w2, cfg.in_dim, cfg.dim, 9, a)
    return _elementwise(k, b * cfg.dim * h2 * w2, HALF)  # ReLU


def _conv_stage(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> int:
    c, (h, w) = g.width, g.feature
    elems = b * c * h * w
    for _ in range(cfg.depths[g.index]):
        y = _conv(k, elems, b * h * w, c, c, 9, a)
        _elementwise(k, elems, y)  # GELU
        y = _conv(k, elems, b * h * w, c, c, 9, y)
        a = _residual(k, elems, a, y, cfg.layer_scale_conv is not None)
    return a


def _downsample(k: KernelTally, g: Any, b: int, a: int) -> int:
    """LayerNorm2d (fp32 under autocast), then the 3x3 stride-2 conv doubling the width (no bias)."""
    c, (h, w) = g.width, g.feature
    elems = b * c * h * w
    if g.transformer and g.padded != g.feature and a == FLOAT:
        k.memory(2 * FLOAT * elems)  # the un-padded slice is made contiguous for the norm
    a = _layer_norm(k, elems, a)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return _conv(k, elems, b * ho * wo, c, 2 * c, 9, a, bias=False)


def _pad_and_partition(k: KernelTally, g: Any, b: int, a: int) -> None:
    c, (h, w), (hp, wp) = g.width, g.feature, g.padded
    if (hp, wp) != (h, w):
        k.memory(a * b * c * (h * w + hp * wp))


def _carrier_tokens(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> None:
    """CT init: depth-wise conv (``ct_init``), average pooling to the CT grid, a copy into window order."""
    c, (hp, wp), n = g.width, g.padded, g.num_carrier_tokens
    if cfg.ct_init:
        a = _depthwise(k, b * c * hp * wp, b * c * hp * wp, c, cfg.ct_init_kernel ** 2, a)
    k.memory(a * b * c * (hp * wp + n))
    if cfg.ct_size > 1:  # into window order (a view for one CT per window)
        k.memory(2 * a * b * c * n)


def _hat_stage(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> int:
    c, (hp, wp) = g.width, g.padded
    nw, t, L, n = g.num_windows, g.tokens_per_window, g.ct_per_window, g.num_carrier_tokens
    heads, ls = cfg.num_heads[g.index], cfg.layer_scale is not None
    _pad_and_partition(k, g, b, a)
    a_ct = HALF
    if g.hat:
        _carrier_tokens(k, cfg, g, b, a)
    if nw > 1:  # partition into windows: a permuting copy (a view for one window, channels-last)
        k.memory(2 * a * b * c * hp * wp)
    local = b * nw * t * c
    tk = (g.window + 2 * g.overlap) ** 2 + L
    extra = bool(g.overlap) or (cfg.ct_gate and g.hat)
    for j in range(cfg.depths[g.index]):
        if cfg.pos_bias_1d:
            k.memory(2 * a * local + HALF * t * c)
        if g.hat:
            if cfg.pos_bias_1d:
                k.memory(2 * a_ct * b * n * c + HALF * n * c)
            if cfg.ct_attention:
                a_ct = _token_block(k, cfg, b, n, c, heads, a_ct)
            out = max(a, a_ct)
            k.memory(a_ct * b * n * c + a * local + out * b * nw * (t + L) * c)  # cat(CTs, window tokens)
            a = out
        if g.overlap:
            _halo_gather(k, g, b, a)
        if cfg.ct_gate and g.hat:
            _linear(k, b * nw * L, heads, c, FLOAT)
            k.memory(2 * FLOAT * b * nw * L * heads)
        a = _token_block(k, cfg, b * nw, t + L, c, heads, a, tk=tk, extra_bias=extra)
        if g.hat:
            if cfg.do_propagation and j == cfg.depths[g.index] - 1:
                a = _propagate(k, g, b, a, ls)
            if L > 1:  # the CTs split off (a strided slice) are copied
                k.memory(2 * a * b * n * c)
            a_ct = a
    if nw > 1:  # windows back to the map
        k.memory(2 * a * b * c * hp * wp)
    return a


def _halo_gather(k: KernelTally, g: Any, b: int, a: int) -> None:
    """window_overlap: keys/values of the k-pixel ring, gathered from the padded map."""
    c, (hp, wp), kk = g.width, g.padded, g.overlap
    kv = 2 * c
    k.memory(2 * HALF * b * hp * wp * kv)
    k.memory(HALF * b * kv * (hp * wp + (hp + 2 * kk) * (wp + 2 * kk)))
    k.memory(2 * HALF * b * g.num_windows * (g.window + 2 * kk) ** 2 * kv)
    k.memory(2 * HALF * b * g.num_windows * ((g.window + 2 * kk) ** 2 + g.ct_per_window) * kv)


def _propagate(k: KernelTally, g: Any, b: int, a: int, ls: bool) -> int:
    """Nearest-neighbour spread of each window's CTs over its tokens (in fp32), added to them."""
    c, nw, t, n = g.width, g.num_windows, g.tokens_per_window, g.num_carrier_tokens
    local = b * nw * t * c
    k.cast(b * n * c, a, FLOAT)
    k.memory(FLOAT * (b * n * c + local))
    k.cast(local, FLOAT, a)
    return _residual(k, local, a, a, ls)


def _twins_stage(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> int:
    """Twins blocks on the padded map: LSA (windowed, with partition/merge copies) and GSA alternate."""
    c, (hp, wp), heads, ls = g.width, g.padded, cfg.num_heads[g.index], cfg.layer_scale is not None
    _pad_and_partition(k, g, b, a)
    T, t, nw = hp * wp, g.tokens_per_window, g.num_windows
    rows = b * T
    for j in range(cfg.depths[g.index]):
        if cfg.pos_bias_1d:
            k.memory(2 * a * rows * c + HALF * t * c)
        y = _layer_norm(k, rows * c, a)
        if j % 2 == 0:
            k.memory(2 * FLOAT * rows * c)
            y = _attention_layer(k, cfg, b * nw, t, c, heads, y)
            k.memory(2 * HALF * rows * c)
        else:
            keys = t if g.windows != (1, 1) else T
            _linear(k, rows, c, c, y, cfg.qkv_bias)
            s = y
            if g.windows != (1, 1):
                s = _conv(k, rows * c, b * t, c, c, g.windows[0] * g.windows[1], y)
                s = _layer_norm(k, b * t * c, s)
            _linear(k, b * keys, 2 * c, c, s, cfg.qkv_bias)
            _attention(k, b, T, keys, c, heads, False)
            k.memory(2 * HALF * rows * c)
            y = _linear(k, rows, c, c, HALF)
        a = _residual(k, rows * c, a, y, ls)
        y = _mlp(k, rows, c, int(c * cfg.mlp_ratio), _layer_norm(k, rows * c, a))
        a = _residual(k, rows * c, a, y, ls)
    return a


def _edgevit_stage(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> int:
    """EdgeViT LGL blocks: local convs, attention of delegate tokens, propagation back, MLP."""
    c, (hp, wp), heads, ls = g.width, g.padded, cfg.num_heads[g.index], cfg.layer_scale is not None
    _pad_and_partition(k, g, b, a)
    T, D = hp * wp, g.tokens_per_window
    rows = b * T
    for _ in range(cfg.depths[g.index]):
        if cfg.pos_bias_1d:
            k.memory(2 * a * rows * c + HALF * D * c)
        y = _elementwise(k, rows * c, a)  # BatchNorm
        y = _conv(k, rows * c, rows, c, c, 1, y)
        y = _depthwise(k, rows * c, rows * c, c, 9, y)
        y = _conv(k, rows * c, rows, c, c, 1, y)
        a = _residual(k, rows * c, a, y, ls)
        y = _layer_norm(k, rows * c, a)
        y = _attention_layer(k, cfg, b, D, c, heads, y) if g.windows == (1, 1) else _edgevit_global(k, cfg, g, b, y)
        a = _residual(k, rows * c, a, y, ls)
        y = _mlp(k, rows, c, int(c * cfg.mlp_ratio), _layer_norm(k, rows * c, a))
        a = _residual(k, rows * c, a, y, ls)
    return a


def _edgevit_global(k: KernelTally, cfg: FasterViTConfig, g: Any, b: int, a: int) -> int:
    c, heads, D, T = g.width, cfg.num_heads[g.index], g.tokens_per_window, g.padded[0] * g.padded[1]
    _linear(k, b * D, 3 * c, c, a, cfg.qkv_bias)
    _attention(k, b, D, D, c, heads, cfg.attn_bias)
    k.memory(2 * HALF * b * D * c)
    y = _depthwise(k, b * D * c, b * T * c, c, g.windows[0] * g.windows[1], HALF)
    y = _layer_norm(k, b * T * c, y)
    return _linear(k, b * T, c, c, y)


def _head(k: KernelTally, cfg: FasterViTConfig, b: int, a: int) -> None:
    """Final norm (BatchNorm in the input dtype, or LayerNorm2d), global average pool, classifier."""
    h, w = cfg.stages[-1].feature
    elems = b * cfg.num_features * h * w
    a = _layer_norm(k, elems, a) if cfg.layer_norm_last else _elementwise(k, elems, a)
    k.memory(a * (elems + b * cfg.num_features))
    if cfg.num_classes > 0:
        _linear(k, b, cfg.num_classes, cfg.num_features, a)
