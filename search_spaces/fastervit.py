"""FasterViT, generated from a ``FasterViTConfig``.

Paper: Hatamizadeh et al., "FasterViT: Fast Vision Transformers with Hierarchical Attention",
ICLR 2024 (arXiv 2306.06189). FasterViT-0..6 are points of the config space and load the official
checkpoints (through ``checkpoint_filter_fn``) with identical outputs.

Layout: positional encodings, attention, blocks, carrier-token initialiser, stages, model,
checkpoint mapping, deploy step. Besides the paper's HAT blocks, stages 3-4 can use the Twins or
EdgeViT blocks of the paper's Table 6 (``attention``), and the ablation/proposal knobs of
``FasterViTConfig`` (``attn_bias``, ``pos_bias_1d``, ``ct_attention``, ``ct_init``, ``ct_gate``,
``stem``, ``window_overlap``) each switch one component; their defaults build the paper's model.

Deploy (``model.switch_to_deploy()``) is an explicit step: it evaluates every positional MLP once
for the configured resolution, stores the results as buffers (aligned for the fused attention
kernels, in the dtype the model will run in) and folds BatchNorm into the preceding convolutions.
``search_spaces.padding.pad_channels`` may follow it: widths and head dims zero-padded to a multiple
of 8 for the tensor-core kernels, with the same outputs; so may
``search_spaces.gelu_epilogue.fuse_gelu_epilogue`` (the MLPs' GELU in the fc1 GEMM's epilogue), in
either order. ``forward`` never changes module state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_, use_fused_attn

from .config import FasterViTConfig, StageGeometry
from .presets import resolve_config

__all__ = ["FasterViT", "ChannelPadding", "GeluEpilogue", "build_model", "checkpoint_filter_fn", "window_order",
           "DEPLOYABLE"]

_BIAS_ALIGN = 16  # fused attention kernels want the mask's row stride a multiple of this


# ---------------------------------------------------------------------------------------------
# positional encodings
# ---------------------------------------------------------------------------------------------
def window_order(grid: tuple[int, int], window: int) -> torch.Tensor:
    """Raster indices of a (H, W) token grid listed window by window (windows of ``window``²).

    Carrier tokens are kept in this order inside a stage, so that splitting them per window is a
    free reshape; the positional tables are permuted to match once.
    """
    gh, gw = grid
    idx = torch.arange(gh * gw).view(gh // window, window, gw // window, window)
    return idx.permute(0, 2, 1, 3).reshape(-1)


def token_coords(grid: tuple[int, int], order: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(H*W, 2) coordinates of a token grid, centred and scaled per axis: (i - n//2) / (n//2).

    The input of ``TokenPosEmbed``'s MLP (in ``order`` when given); a function so that the elastic
    supernet (``search_spaces.elastic``) feeds its shared MLPs exactly the same coordinates.
    """
    axes = []
    for n in grid:
        half = max(n // 2, 1)
        axes.append((torch.arange(n, dtype=torch.float32) - n // 2) / half)
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    return coords[order] if order is not None else coords


def rel_pos_geometry(grid: tuple[int, int], order: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(table, index) of ``RelPosBias`` over a (H, W) grid: log-spaced relative offsets
    ((2H-1)(2W-1), 2) and, for every (query, key) pair, the row of its offset (in ``order``)."""
    gh, gw = grid
    rel_h = torch.arange(-(gh - 1), gh, dtype=torch.float32) / max(gh - 1, 1)
    rel_w = torch.arange(-(gw - 1), gw, dtype=torch.float32) / max(gw - 1, 1)
    table = torch.stack(torch.meshgrid(rel_h, rel_w, indexing="ij"), dim=-1).reshape(-1, 2) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    pos = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    rel = (pos[:, :, None] - pos[:, None, :]).permute(1, 2, 0)
    index = (rel[..., 0] + gh - 1) * (2 * gw - 1) + (rel[..., 1] + gw - 1)
    if order is not None:
        index = index[order][:, order]
    return table, index


class _CoordMLP(nn.Sequential):
    """Linear(2, hidden) -> ReLU -> Linear(hidden, out, no bias): maps coordinates to values."""

    def __init__(self, out_features: int, hidden: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features, bias=False)


class TokenPosEmbed(nn.Module):
    """Absolute positional embedding added to tokens of a (H, W) grid, from an MLP over coordinates.

    Coordinates are centred and scaled per axis: (i - n//2) / (n//2).
    """

    def __init__(self, dim: int, grid: tuple[int, int], order: Optional[torch.Tensor] = None):
        super().__init__()
        self.grid = grid
        self.mlp = _CoordMLP(dim)
        self.register_buffer("coords", token_coords(grid, order), persistent=False)
        self.register_buffer("deployed", None, persistent=False)

    def embedding(self) -> torch.Tensor:
        return self.mlp(self.coords).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed is not None:
            return x + self.deployed
        return x + self.embedding()

    @torch.no_grad()
    def deploy(self, dtype: Optional[torch.dtype] = None) -> None:
        emb = self.embedding()
        self.deployed = emb.to(dtype) if dtype is not None else emb


class RelPosBias(nn.Module):
    """SwinV2-style continuous relative position bias over a (H, W) token grid.

    An MLP maps log-spaced relative offsets to one bias per head, squashed by 16*sigmoid.
    ``num_prefix`` extra tokens (carrier tokens placed before the window) get zero bias.
    """

    table: torch.Tensor  # buffers (register_buffer)
    index: torch.Tensor
    deployed: Optional[torch.Tensor]

    def __init__(self, grid: tuple[int, int], num_heads: int, num_prefix: int = 0,
                 order: Optional[torch.Tensor] = None):
        super().__init__()
        self.grid = grid
        self.num_heads = num_heads
        self.num_prefix = num_prefix
        self.mlp = _CoordMLP(num_heads)
        table, index = rel_pos_geometry(grid, order)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("deployed", None, persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.grid[0] * self.grid[1]

    def bias(self) -> torch.Tensor:
        """The (1, heads, N, N) additive attention bias."""
        return self._aligned_bias()[None, :, :, : self.num_tokens]

    def _raw_bias(self) -> torch.Tensor:
        """(heads, queries, keys) bias of the grid's tokens, built head-major (no permute)."""
        nq, nk = self.index.shape
        return 16 * torch.sigmoid(self.mlp(self.table).t()[:, self.index.reshape(-1)].view(self.num_heads, nq, nk))

    def _aligned_bias(self) -> torch.Tensor:
        """(heads, prefix + queries, prefix + keys rounded up to ``_BIAS_ALIGN``): the bias in a
        contiguous, zero-padded buffer (prefix tokens get zero bias).

        The last dimension is contiguous and rows start on aligned addresses: what the fused
        attention kernels need for ``attn_mask`` — also inside a compiled training step, where the
        compiler would otherwise keep a permuted layout (``(*bias): last dimension must be
        contiguous``).
        """
        b = self._raw_bias()
        p = self.num_prefix
        rows, cols = p + b.shape[1], p + b.shape[2]
        out = b.new_zeros(self.num_heads, rows, -(-cols // _BIAS_ALIGN) * _BIAS_ALIGN)
        out[:, p:, p:cols] = b
        return out

    def forward(self) -> torch.Tensor:
        if self.deployed is not None:
            return self.deployed[None, :, :, : self.num_tokens]
        return self.bias()

    @torch.no_grad()
    def deploy(self, dtype: Optional[torch.dtype] = None) -> None:
        b = self._aligned_bias()
        # kept 3-D (heads, N, N padded): model.to(memory_format=channels_last) re-strides 4-D
        # buffers, and the fused attention kernels need the mask's last dim contiguous
        self.deployed = b.to(dtype) if dtype is not None else b


def _log_spaced_table(span: int) -> torch.Tensor:
    """(2*span+1)^2 x 2 relative offsets -span..span per axis, log-spaced as in ``RelPosBias``."""
    rel = torch.arange(-span, span + 1, dtype=torch.float32) / max(span, 1)
    table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1).reshape(-1, 2) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class HaloRelPosBias(RelPosBias):
    """``RelPosBias`` from a window's ws² query tokens to its (ws+2k)² keys (``window_overlap`` = k).

    Key (a, b) of the enlarged window sits at (a-k, b-k) in window coordinates; offsets span
    -(ws-1+k)..ws-1+k per axis and are log-spaced like the square case.
    """

    def __init__(self, window: int, overlap: int, num_heads: int, num_prefix: int = 0):
        nn.Module.__init__(self)
        self.grid = (window, window)
        self.key_window = window + 2 * overlap
        self.num_heads = num_heads
        self.num_prefix = num_prefix
        self.mlp = _CoordMLP(num_heads)
        span = window - 1 + overlap
        self.register_buffer("table", _log_spaced_table(span), persistent=False)
        q = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        kk = torch.arange(self.key_window) - overlap
        k = torch.stack(torch.meshgrid(kk, kk, indexing="ij")).flatten(1)
        rel = q[:, :, None] - k[:, None, :] + span  # (2, nq, nk), each in 0..2*span
        self.register_buffer("index", rel[0] * (2 * span + 1) + rel[1], persistent=False)
        self.register_buffer("deployed", None, persistent=False)

    @property
    def num_tokens(self) -> int:  # keys (the deployed buffer is sliced to them)
        return self.num_prefix + self.key_window**2


#: Modules whose positional tables ``switch_to_deploy`` precomputes (subclasses included).
DEPLOYABLE = (TokenPosEmbed, RelPosBias)


# ---------------------------------------------------------------------------------------------
# attention and blocks
# ---------------------------------------------------------------------------------------------
def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor], fused: bool,
            scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale + bias) v, through SDPA when ``fused``.

    ``scale`` is passed to SDPA too: after head-dim padding (``search_spaces.padding``) it is the
    real head dim's, not that of the padded tensors.
    """
    if fused:
        if bias is not None and bias.dtype != q.dtype and not torch.is_autocast_enabled(q.device.type):
            bias = bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    attn = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        attn = attn + bias
    return attn.softmax(dim=-1) @ v


def _use_fused(head_dim: int) -> bool:
    # the fused SDPA kernels need head_dim % 8 == 0; otherwise SDPA's math fallback upcasts to fp32
    return use_fused_attn() and head_dim % 8 == 0


def _merge_heads(out: torch.Tensor, real_head_dim: int) -> torch.Tensor:
    """(B, heads, N, head_dim) attention output -> (B, N, heads * real_head_dim).

    Keeps the first ``real_head_dim`` channels of every head: all of them, unless the heads were
    zero-padded (``search_spaces.padding``); the copy is the one the transpose makes anyway.
    """
    if out.shape[-1] != real_head_dim:
        out = out[..., :real_head_dim]
    return out.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Multi-head self-attention with a learned relative position bias (none: ``attn_bias`` off)."""

    def __init__(self, dim: int, num_heads: int, rel_pos: Optional[RelPosBias], qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # channels per head in q, k, v (zero-padded ones included)
        self.real_head_dim = self.head_dim  # channels per head that reach ``proj``
        self.scale = self.head_dim**-0.5
        # the fused SDPA kernels need head_dim % 8 == 0; otherwise SDPA's math fallback upcasts to
        # fp32 and is slower than the explicit path (FasterViT-4: head_dim 49; see search_spaces.padding)
        self.fused_attn = _use_fused(self.head_dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = rel_pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_pos() if self.rel_pos is not None else None
        out = _attend(q, k, v, bias, self.fused_attn, self.scale)
        return self.proj(_merge_heads(out, self.real_head_dim))


class CTGate(nn.Module):
    """log(2·sigmoid(w·ct + b)) per head for each carrier token: added to that key's attention
    logits, it scales the token's attention weight by a learned, input-dependent factor in (0, 2).

    w = b = 0 at init (factor 1), so training starts from the paper's block (``ct_gate``: the course
    reproduction's "dynamically scaled carrier-token influence").
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads, dim))
        self.bias = nn.Parameter(torch.zeros(num_heads))

    def forward(self, ct: torch.Tensor) -> torch.Tensor:
        return math.log(2.0) + F.logsigmoid(F.linear(ct, self.weight, self.bias))


def _halo_geometry(geom: StageGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index of every window's (ws+2k)² keys in the k-padded map, and the mask of those outside it.

    Windows are listed row by row (the order of the attention batch); the mask is 0 / -inf per key,
    with zeros in front for the window's carrier tokens: (windows, 1, 1, ct + (ws+2k)²).
    """
    (nh, nw), ws, k = geom.windows, geom.window, geom.overlap
    size = ws + 2 * k
    hp, wp = geom.padded
    a = torch.arange(size)
    rows = torch.arange(nh)[:, None] * ws + a  # row in the k-padded map, per window row
    cols = torch.arange(nw)[:, None] * ws + a
    index = rows[:, None, :, None] * (wp + 2 * k) + cols[None, :, None, :]  # (nh, nw, size, size)
    valid = (((rows >= k) & (rows < hp + k))[:, None, :, None]
             & ((cols >= k) & (cols < wp + k))[None, :, None, :]).reshape(nh * nw, size * size)
    mask = torch.zeros(valid.shape).masked_fill(~valid, float("-inf"))
    mask = F.pad(mask, (geom.ct_per_window, 0))
    return index.reshape(-1), mask.view(nh * nw, 1, 1, -1)


class WindowAttention(Attention):
    """Window attention of a HAT block with the course proposals ``window_overlap`` and ``ct_gate``.

    ``window_overlap`` = k: the queries of a window (its carrier tokens and ws² tokens) also see the
    k-pixel ring around it, as keys/values gathered from the neighbouring windows (halo attention:
    Vaswani et al., CVPR 2021, "Scaling Local Self-Attention for Parameter Efficient Visual
    Backbones"); ring positions outside the (padded) map are masked with -inf. Queries and output
    keep their shape. ``ct_gate``: see ``CTGate``.
    """

    def __init__(self, dim: int, num_heads: int, rel_pos: Optional[RelPosBias], qkv_bias: bool,
                 geom: StageGeometry, gate: bool):
        super().__init__(dim, num_heads, rel_pos, qkv_bias)
        self.num_ct = geom.ct_per_window
        self.windows = geom.windows
        self.window = geom.window
        self.overlap = geom.overlap
        self.gate = CTGate(dim, num_heads) if gate else None
        self.halo_index: torch.Tensor
        self.halo_mask: torch.Tensor
        if self.overlap:
            index, mask = _halo_geometry(geom)
            self.register_buffer("halo_index", index, persistent=False)
            self.register_buffer("halo_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B_, N, _ = x.shape
        L = self.num_ct
        qkv = self.qkv(x).view(B_, N, 3, self.num_heads, self.head_dim)
        q = qkv[:, :, 0].transpose(1, 2)
        kv = qkv[:, :, 1:]
        bias = self.rel_pos() if self.rel_pos is not None else None
        if self.overlap:
            kv = torch.cat((kv[:, :L], self._halo(kv[:, L:])), dim=1)
            mask = self.halo_mask.repeat(B_ // self.halo_mask.shape[0], 1, 1, 1)
            bias = mask if bias is None else bias + mask
        if self.gate is not None:
            g = self.gate(x[:, :L]).transpose(1, 2).unsqueeze(2)  # (B_, heads, 1, L)
            g = F.pad(g, (0, kv.shape[1] - L))
            bias = g if bias is None else bias + g
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = _attend(q, k, v, bias, self.fused_attn, self.scale)
        return self.proj(_merge_heads(out, self.real_head_dim))

    def _halo(self, kv: torch.Tensor) -> torch.Tensor:
        """(B*windows, ws², 2, heads, hd) keys/values -> (B*windows, (ws+2k)², 2, heads, hd)."""
        (nh, nw), ws, k = self.windows, self.window, self.overlap
        B_, _, two, h, hd = kv.shape
        B = B_ // (nh * nw)
        m = kv.reshape(B, nh, nw, ws, ws, two * h * hd).permute(0, 1, 3, 2, 4, 5).reshape(B, nh * ws, nw * ws, -1)
        m = F.pad(m, (0, 0, k, k, k, k)).flatten(1, 2)
        return m.index_select(1, self.halo_index).view(B_, -1, two, h, hd)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _layer_scale(dim: int, init: Optional[float]) -> Optional[nn.Parameter]:
    return nn.Parameter(init * torch.ones(dim)) if init is not None else None


def _scale(x: torch.Tensor, gamma: Optional[torch.Tensor]) -> torch.Tensor:
    return x if gamma is None else x * gamma


class ConvBlock(nn.Module):
    """x + BN(Conv3x3(GELU(BN(Conv3x3(x))))), optionally layer-scaled."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: Optional[float] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1: nn.Module = nn.BatchNorm2d(dim, eps=1e-5)  # Identity once folded (deploy)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2: nn.Module = nn.BatchNorm2d(dim, eps=1e-5)
        self.gamma = _layer_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class HATBlock(nn.Module):
    """Transformer block of a windowed stage, with hierarchical attention when carrier tokens exist.

    With carrier tokens (CTs): (1) all CTs of an image attend to each other; (2) each window's
    tokens attend together with that window's CTs; (3) they are split again. Without CTs this is a
    plain (window or global) attention block. Local tokens: (B*windows, window², C); CTs:
    (B, windows*ct², C) listed window by window.
    """

    def __init__(self, dim: int, num_heads: int, geom: StageGeometry, ct_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop_path: float, layer_scale: Optional[float], propagate: bool, *,
                 attn_bias: bool = True, pos_bias_1d: bool = True, ct_attention: bool = True,
                 ct_gate: bool = False):
        super().__init__()
        ws = geom.window
        self.window = ws
        self.ct_size = ct_size
        self.num_ct = geom.ct_per_window
        self.has_ct = geom.hat
        hidden = int(dim * mlp_ratio)
        self.pos_embed = TokenPosEmbed(dim, (ws, ws)) if pos_bias_1d else None
        self.norm1 = nn.LayerNorm(dim)
        rel: Optional[RelPosBias] = None
        if attn_bias:
            rel = (HaloRelPosBias(ws, geom.overlap, num_heads, num_prefix=self.num_ct) if geom.overlap
                   else RelPosBias((ws, ws), num_heads, num_prefix=self.num_ct))
        self.attn: Attention
        if geom.overlap or (ct_gate and geom.hat):
            self.attn = WindowAttention(dim, num_heads, rel, qkv_bias, geom, gate=ct_gate and geom.hat)
        else:
            self.attn = Attention(dim, num_heads, rel, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.gamma_attn = _layer_scale(dim, layer_scale)
        self.gamma_mlp = _layer_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.propagate = propagate and geom.hat
        self.ct_attn = None
        if geom.hat:
            order = window_order(geom.ct_grid, ct_size)
            self.ct_pos_embed = TokenPosEmbed(dim, geom.ct_grid, order=order) if pos_bias_1d else None
            if ct_attention:
                self.ct_norm1 = nn.LayerNorm(dim)
                ct_rel = RelPosBias(geom.ct_grid, num_heads, order=order) if attn_bias else None
                self.ct_attn = Attention(dim, num_heads, ct_rel, qkv_bias)
                self.ct_norm2 = nn.LayerNorm(dim)
                self.ct_mlp = Mlp(dim, hidden)
            # gamma_ct_attn also scales the propagation (as in the official code)
            self.gamma_ct_attn = _layer_scale(dim, layer_scale) if ct_attention or self.propagate else None
            self.gamma_ct_mlp = _layer_scale(dim, layer_scale) if ct_attention else None

    def forward(self, x: torch.Tensor, ct: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        if self.has_ct:
            assert ct is not None, "a HAT block with carrier tokens is called with them"
            if self.ct_pos_embed is not None:
                ct = self.ct_pos_embed(ct)
            if self.ct_attn is not None:
                ct = ct + self.drop_path(_scale(self.ct_attn(self.ct_norm1(ct)), self.gamma_ct_attn))
                ct = ct + self.drop_path(_scale(self.ct_mlp(self.ct_norm2(ct)), self.gamma_ct_mlp))
            b_ct, _, c = ct.shape
            x = torch.cat((ct.reshape(x.shape[0], self.num_ct, c), x), dim=1)
        x = x + self.drop_path(_scale(self.attn(self.norm1(x)), self.gamma_attn))
        x = x + self.drop_path(_scale(self.mlp(self.norm2(x)), self.gamma_mlp))
        if self.has_ct:
            ct_w, x = x.split((self.num_ct, x.shape[1] - self.num_ct), dim=1)
            if self.propagate:
                x = x + _scale(self._upsample(ct_w), self.gamma_ct_attn)
            ct = ct_w.reshape(b_ct, -1, c)
        return x, ct

    def _upsample(self, ct_w: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour spread of each window's CTs over its window² tokens (in fp32)."""
        n, _, c = ct_w.shape
        img = ct_w.transpose(1, 2).reshape(n, c, self.ct_size, self.ct_size).float()
        up = F.interpolate(img, size=(self.window, self.window), mode="nearest")
        return up.flatten(2).transpose(1, 2).to(ct_w.dtype)


def _embed_windows(pe: TokenPosEmbed, x: torch.Tensor) -> torch.Tensor:
    """Add a window-shaped positional embedding to every window of a (B, H, W, C) token map."""
    B, H, W, C = x.shape
    ws = pe.grid[0]
    e = (pe.deployed if pe.deployed is not None else pe.embedding()).view(ws, 1, ws, C)
    return (x.view(B, H // ws, ws, W // ws, ws, C) + e).view(B, H, W, C)


def pad_to_windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """NCHW ``x`` zero-padded at the bottom and right to whole ``ws`` x ``ws`` windows (the official any-res rule)."""
    pad_h, pad_w = (-x.shape[-2]) % ws, (-x.shape[-1]) % ws
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


def window_tokens(x: torch.Tensor, ws: int) -> torch.Tensor:
    """Padded NCHW ``(B, C, Hp, Wp)`` -> window tokens ``(B * windows, ws*ws, C)``, windows in raster order."""
    B, C, Hp, Wp = x.shape
    return x.view(B, C, Hp // ws, ws, Wp // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, C)


def window_map(tokens: torch.Tensor, padded: torch.Size, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of ``window_tokens`` for a padded map of shape ``padded``, cropped back to ``H`` x ``W``: an
    NCHW-shaped view with channels-last strides (cheap for the LayerNorm2d after)."""
    B, C, Hp, Wp = padded
    x = tokens.view(B, Hp // ws, Wp // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    x = x.permute(0, 3, 1, 2)
    return x[:, :, :H, :W] if (Hp, Wp) != (H, W) else x


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, ws², C), windows row by row."""
    B, H, W, C = x.shape
    return x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def _merge(x: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of ``_partition``."""
    C = x.shape[-1]
    return x.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


class SubsampledAttention(nn.Module):
    """Global sub-sampled attention (GSA) of Twins (Chu et al., NeurIPS 2021, "Twins: Revisiting the
    Design of Spatial Attention in Vision Transformers", Sec. 3.2).

    Every token queries keys/values computed from a summary of the map: a convolution with kernel =
    stride = ``rate`` followed by LayerNorm (PVT's spatial reduction, which Twins adopts). With
    ``rate`` = windows per side the keys lie on a window x window grid; for window 7 at 224 px this
    is Twins-SVT's sub-sampling 8, 4, 2, 1 over its four stages. Rate (1, 1): plain global attention.
    """

    def __init__(self, dim: int, num_heads: int, rate: tuple[int, int], qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # as in ``Attention``
        self.real_head_dim = self.head_dim
        self.scale = self.head_dim**-0.5
        self.fused_attn = _use_fused(self.head_dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, rate, rate) if rate != (1, 1) else None
        self.sr_norm = nn.LayerNorm(dim) if self.sr is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        B, H, W, C = x.shape
        q = self.q(x).view(B, H * W, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr is not None and self.sr_norm is not None:
            s = self.sr_norm(self.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2))
        else:
            s = x.reshape(B, H * W, C)
        k, v = self.kv(s).view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = _attend(q, k, v, None, self.fused_attn, self.scale)
        return self.proj(_merge_heads(out, self.real_head_dim).view(B, H, W, -1))


class TwinsBlock(nn.Module):
    """A Twins-SVT block (Chu et al., 2021, Sec. 3.2): LSA or GSA, each followed by an MLP.

    LSA (locally-grouped self-attention) is attention inside each window of the stage, with this
    space's relative position bias (``attn_bias``); GSA is ``SubsampledAttention``. A stage
    alternates LSA, GSA, LSA, ... as Twins-SVT does. Positional information: this space's absolute
    window embedding (``pos_bias_1d``) in place of Twins' convolutional PEG, so that the
    comparison with HAT changes the attention only. Tokens: (B, H, W, C) on the padded map.
    """

    def __init__(self, dim: int, num_heads: int, geom: StageGeometry, mlp_ratio: float, qkv_bias: bool,
                 drop_path: float, layer_scale: Optional[float], *, global_attn: bool, attn_bias: bool = True,
                 pos_bias_1d: bool = True):
        super().__init__()
        ws = geom.window
        self.window = ws
        self.global_attn = global_attn
        self.pos_embed = TokenPosEmbed(dim, (ws, ws)) if pos_bias_1d else None
        self.norm1 = nn.LayerNorm(dim)
        if global_attn:
            self.attn: nn.Module = SubsampledAttention(dim, num_heads, geom.windows, qkv_bias)
        else:
            self.attn = Attention(dim, num_heads, RelPosBias((ws, ws), num_heads) if attn_bias else None, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_attn = _layer_scale(dim, layer_scale)
        self.gamma_mlp = _layer_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = _embed_windows(self.pos_embed, x)
        B, H, W, C = x.shape
        y = self.norm1(x)
        y = self.attn(y) if self.global_attn else _merge(self.attn(_partition(y, self.window)), self.window, H, W)
        x = x + self.drop_path(_scale(y, self.gamma_attn))
        return x + self.drop_path(_scale(self.mlp(self.norm2(x)), self.gamma_mlp))


class EdgeViTBlock(nn.Module):
    """A local-global-local (LGL) block of EdgeViT (Pan et al., ECCV 2022, "EdgeViTs: Competing
    Light-weight CNNs on Mobile Devices with Vision Transformers", Sec. 3.2).

    (1) Local aggregation: BatchNorm, point-wise, 3x3 depth-wise and point-wise convolutions
    (residual). (2) Global sparse attention: one delegate token every ``rate`` pixels per axis
    attends to all delegates; local propagation spreads the result back to every pixel with a
    transposed depth-wise convolution (kernel = stride = rate), then LayerNorm and a projection
    (residual). (3) MLP (residual). ``rate`` = windows per side, so the delegates lie on a
    window x window grid (rate 2 on FasterViT's 14x14 stage 3 at 224 px, EdgeViT-S's rate there);
    rate (1, 1) is global attention without propagation. The paper's LGL has an MLP after step
    (1) too; one MLP per block keeps a block's cost near a HAT block's (as Table 6's GFLOPs are).
    """

    def __init__(self, dim: int, num_heads: int, geom: StageGeometry, mlp_ratio: float, qkv_bias: bool,
                 drop_path: float, layer_scale: Optional[float], *, attn_bias: bool = True,
                 pos_bias_1d: bool = True):
        super().__init__()
        ws = geom.window
        self.rate = geom.windows
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # as in ``Attention``
        self.real_head_dim = self.head_dim
        self.scale = self.head_dim**-0.5
        self.fused_attn = _use_fused(self.head_dim)
        self.pos_embed = TokenPosEmbed(dim, (ws, ws)) if pos_bias_1d else None
        self.local_norm = nn.BatchNorm2d(dim)
        self.local_pw1 = nn.Conv2d(dim, dim, 1)
        self.local_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.local_pw2 = nn.Conv2d(dim, dim, 1)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.rel_pos = RelPosBias((ws, ws), num_heads) if attn_bias else None
        propagate = self.rate != (1, 1)
        self.prop = nn.ConvTranspose2d(dim, dim, self.rate, self.rate, groups=dim) if propagate else None
        self.prop_norm = nn.LayerNorm(dim) if propagate else None
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_local = _layer_scale(dim, layer_scale)
        self.gamma_attn = _layer_scale(dim, layer_scale)
        self.gamma_mlp = _layer_scale(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = _embed_windows(self.pos_embed, x)
        img = x.permute(0, 3, 1, 2)
        y = self.local_pw2(self.local_dw(self.local_pw1(self.local_norm(img)))).permute(0, 2, 3, 1)
        x = x + self.drop_path(_scale(y, self.gamma_local))
        x = x + self.drop_path(_scale(self._global(self.norm1(x)), self.gamma_attn))
        return x + self.drop_path(_scale(self.mlp(self.norm2(x)), self.gamma_mlp))

    def _global(self, y: torch.Tensor) -> torch.Tensor:
        B = y.shape[0]
        rh, rw = self.rate
        d = y[:, ::rh, ::rw]  # delegates: (B, H/rh, W/rw, C)
        gh, gw = d.shape[1], d.shape[2]
        q, k, v = self.qkv(d).view(B, gh * gw, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_pos() if self.rel_pos is not None else None
        out = _merge_heads(_attend(q, k, v, bias, self.fused_attn, self.scale), self.real_head_dim).view(B, gh, gw, -1)
        if self.prop is not None and self.prop_norm is not None:
            out = self.prop_norm(self.prop(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return self.proj(out)


class CarrierTokenInit(nn.Module):
    """Carrier tokens of a stage: depth-wise conv (positional encoding), then average pooling.

    Pooling follows the official rule per axis: out = ct*windows, stride = floor(size/out),
    kernel = size - (out-1)*stride (overlapping when the window is not a multiple of ct_size).
    ``kernel_size`` is the CT-init conv kernel (3 in the paper; 5 = overlapping variant);
    ``conv=False`` (the ``ct_init`` ablation) pools the features without the convolution.
    """

    def __init__(self, dim: int, geom: StageGeometry, ct_size: int, kernel_size: int = 3, conv: bool = True):
        super().__init__()
        self.pos_conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim) if conv else None
        kernel, stride = [], []
        for size, out in zip(geom.padded, geom.ct_grid):
            s = size // out
            kernel.append(size - (out - 1) * s)
            stride.append(s)
        self.pool = nn.AvgPool2d(kernel_size=(kernel[0], kernel[1]), stride=(stride[0], stride[1]))
        self.ct_size = ct_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.pos_conv(x) if self.pos_conv is not None else x)
        B, C, H, W = x.shape
        k = self.ct_size
        x = x.view(B, C, H // k, k, W // k, k).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, -1, C)


class Downsample(nn.Module):
    """LayerNorm over channels, then a 3x3 stride-2 convolution that doubles the width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.conv = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class Stem(nn.Module):
    """Two 3x3 stride-2 convolutions with BatchNorm and ReLU: 224² -> 56² (``stem='conv'``).

    ``stem='hybrid'`` (the course reproduction's "stronger patch embedding"; this design is ours):
    a third, stride-1 3x3 conv-BN-ReLU between the two (a deeper convolutional stem, as in Xiao et
    al., NeurIPS 2021, "Early Convolutions Help Transformers See Better"), plus a 4x4 stride-4
    patchify branch (ViT's patch embedding, conv + BN; the image padded to a multiple of 4) added
    before the last ReLU, so that the stem mixes overlapping-convolution and patch features.
    """

    def __init__(self, in_chans: int, in_dim: int, dim: int, hybrid: bool = False,
                 resolution: tuple[int, int] = (224, 224)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False)
        self.norm1: nn.Module = nn.BatchNorm2d(in_dim, eps=1e-4)
        self.act1 = nn.ReLU()
        if hybrid:
            self.conv_mid = nn.Conv2d(in_dim, in_dim, 3, 1, 1, bias=False)
            self.norm_mid: nn.Module = nn.BatchNorm2d(in_dim, eps=1e-4)
            self.act_mid = nn.ReLU()
        self.conv2 = nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False)
        self.norm2: nn.Module = nn.BatchNorm2d(dim, eps=1e-4)
        self.act2 = nn.ReLU()
        self.hybrid = hybrid
        if hybrid:
            self.patch = nn.Conv2d(in_chans, dim, 4, 4, bias=False)
            self.patch_norm: nn.Module = nn.BatchNorm2d(dim, eps=1e-4)
            self.patch_pad = (0, (-resolution[1]) % 4, 0, (-resolution[0]) % 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        if not self.hybrid:
            return self.act2(self.norm2(self.conv2(y)))
        y = self.norm2(self.conv2(self.act_mid(self.norm_mid(self.conv_mid(y)))))
        p = F.pad(x, self.patch_pad) if any(self.patch_pad) else x
        return self.act2(y + self.patch_norm(self.patch(p)))


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
class ConvStage(nn.Module):
    def __init__(self, geom: StageGeometry, depth: int, drop_path: list[float],
                 layer_scale: Optional[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(geom.width, drop_path[i], layer_scale) for i in range(depth))
        self.downsample = Downsample(geom.width) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TransformerStage(nn.Module):
    """Windowed transformer stage: pad to whole windows, make carrier tokens, run blocks, un-pad."""

    def __init__(self, geom: StageGeometry, cfg: FasterViTConfig, drop_path: list[float], downsample: bool):
        super().__init__()
        i = geom.index
        self.geom = geom
        self.window = geom.window
        self.attention = cfg.attention
        self.ct_init = (CarrierTokenInit(geom.width, geom, cfg.ct_size, cfg.ct_init_kernel, conv=cfg.ct_init)
                        if geom.hat else None)
        depth = cfg.depths[i]
        knobs: dict[str, Any] = dict(attn_bias=cfg.attn_bias, pos_bias_1d=cfg.pos_bias_1d)
        args = (geom.width, cfg.num_heads[i], geom)
        if cfg.attention == "twins":
            blocks: list[nn.Module] = [
                TwinsBlock(*args, cfg.mlp_ratio, cfg.qkv_bias, drop_path[j], cfg.layer_scale, global_attn=j % 2 == 1,
                           **knobs) for j in range(depth)]
        elif cfg.attention == "edgevit":
            blocks = [EdgeViTBlock(*args, cfg.mlp_ratio, cfg.qkv_bias, drop_path[j], cfg.layer_scale, **knobs)
                      for j in range(depth)]
        else:
            blocks = [HATBlock(*args, cfg.ct_size, cfg.mlp_ratio, cfg.qkv_bias, drop_path[j], cfg.layer_scale,
                               propagate=cfg.do_propagation and j == depth - 1, ct_attention=cfg.ct_attention,
                               ct_gate=cfg.ct_gate, **knobs) for j in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.downsample = Downsample(geom.width) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = pad_to_windows(x, self.window)
        if self.attention != "hat":
            return self._forward_map(x, H, W)
        ct = self.ct_init(x) if self.ct_init is not None else None
        tokens = window_tokens(x, self.window)
        for blk in self.blocks:
            if self.grad_checkpointing and tokens.requires_grad:
                tokens, ct = torch.utils.checkpoint.checkpoint(blk, tokens, ct, use_reentrant=False)
            else:
                tokens, ct = blk(tokens, ct)
        x = window_map(tokens, x.shape, self.window, H, W)
        return x if self.downsample is None else self.downsample(x)

    def _forward_map(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Twins / EdgeViT blocks: tokens stay a (B, Hp, Wp, C) map; each block windows what it needs."""
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            if self.grad_checkpointing and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = x.permute(0, 3, 1, 2)[:, :, :H, :W]
        return x if self.downsample is None else self.downsample(x)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
@dataclass
class ChannelPadding:
    """What ``search_spaces.padding.pad_channels`` did to a deployed model (``model.channel_padding``).

    ``padded``: (part, real size, padded size) of every width or head dim rounded up to ``multiple``;
    ``kept``: (part, reason) of every part left at a size that is not a multiple of it.
    """

    multiple: int
    padded: list[tuple[str, int, int]] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(multiple=self.multiple,
                    padded=[dict(part=p, real=r, padded=q) for p, r, q in self.padded],
                    kept=[dict(part=p, reason=why) for p, why in self.kept])


@dataclass
class GeluEpilogue:
    """What ``search_spaces.gelu_epilogue.fuse_gelu_epilogue`` did to a deployed model (``model.gelu_epilogue``).

    ``fused``: names of the MLPs whose fc1 GEMM now applies bias and GELU in its epilogue;
    ``kept``: (part, reason) of every GELU left as a separate operation.
    """

    fused: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(fused=list(self.fused), kept=[dict(part=p, reason=why) for p, why in self.kept])


class FasterViT(nn.Module):
    """FasterViT built from a ``FasterViTConfig``."""

    def __init__(self, cfg: FasterViTConfig):
        super().__init__()
        if not isinstance(cfg, FasterViTConfig):
            raise TypeError(f"FasterViT needs a FasterViTConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.num_features = cfg.num_features
        self.stem = Stem(cfg.in_chans, cfg.in_dim, cfg.dim, hybrid=cfg.stem == "hybrid", resolution=cfg.resolution)
        n = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * j / (n - 1) if n > 1 else 0.0 for j in range(n)]  # linspace(0, rate, n)
        stages: list[nn.Module] = []
        for geom in cfg.stages:
            i = geom.index
            rates = dpr[sum(cfg.depths[:i]):sum(cfg.depths[: i + 1])]
            last = i == len(cfg.stages) - 1
            if geom.transformer:
                stages.append(TransformerStage(geom, cfg, rates, downsample=not last))
            else:
                stages.append(ConvStage(geom, cfg.depths[i], rates, cfg.layer_scale_conv, downsample=not last))
        self.stages = nn.ModuleList(stages)
        self.norm = LayerNorm2d(self.num_features) if cfg.layer_norm_last else nn.BatchNorm2d(self.num_features)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.deployed = False
        self.channel_padding: Optional[ChannelPadding] = None  # set by search_spaces.padding.pad_channels
        self.gelu_epilogue: Optional[GeluEpilogue] = None  # set by search_spaces.gelu_epilogue.fuse_gelu_epilogue
        self.feature_info = self._feature_info()
        self.apply(self._init_weights)

    def _feature_info(self) -> list[dict[str, Any]]:
        """timm's ``feature_info``: channels and stride of each module's output map (stem, stages).

        A stage's output is after its downsampler (so stage 3 and 4 outputs are both at stride 32).
        """
        cfg = self.config
        info = [dict(num_chs=cfg.dim, reduction=4, module="stem")]
        for g in cfg.stages:
            last = g.index == len(cfg.stages) - 1
            info.append(dict(num_chs=g.width * (1 if last else 2), reduction=4 * 2 ** (g.index + (0 if last else 1)),
                             module=f"stages.{g.index}"))
        return info

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, LayerNorm2d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # timm-style API ---------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            assert isinstance(s, (ConvStage, TransformerStage))
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new (randomly initialised) head; ``config`` follows (``num_classes`` is not stale)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r}: FasterViT pools by average only ('avg')")
        self.config = self.config.replace(num_classes=num_classes)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimiser factory should not decay: layer scales, positional MLPs, CT gates.

        (Norm weights and biases are 1-D and skipped by timm anyway.)
        """
        out = set()
        for name, _ in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("gamma") or ".rel_pos." in name or "pos_embed." in name or ".gate." in name:
                out.add(name)
        return out

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter grouping (layer-wise LR decay): stem, then stages (coarse) or blocks."""
        if coarse:
            return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)", None), (r"^norm", (99999,))])
        return dict(stem=r"^stem", blocks=[
            (r"^stages\.(\d+)\.ct_init", (0,)),
            (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^stages\.(\d+)\.downsample", (99998,)),
            (r"^norm", (99999,)),
        ])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # deploy -----------------------------------------------------------------------------------
    @torch.no_grad()
    def switch_to_deploy(self, dtype: Optional[torch.dtype] = None, fuse_bn: bool = True) -> "FasterViT":
        """Precompute every positional bias (for this resolution) and fold BatchNorm into convs.

        Args:
            dtype: dtype to store the biases in (the dtype the model will run in, e.g.
                ``torch.float16`` under AMP); default: the parameters' dtype.
            fuse_bn: fold eval-mode BatchNorm into the preceding conv (stem, conv blocks).

        The model is for inference afterwards (``eval()`` is called); outputs are unchanged.
        """
        self.eval()
        for m in self.modules():
            if isinstance(m, DEPLOYABLE):
                m.deploy(dtype)
        if fuse_bn:
            s = self.stem
            s.conv1, s.norm1 = _fuse_conv_bn(s.conv1, s.norm1), nn.Identity()
            s.conv2, s.norm2 = _fuse_conv_bn(s.conv2, s.norm2), nn.Identity()
            if s.hybrid:
                s.conv_mid, s.norm_mid = _fuse_conv_bn(s.conv_mid, s.norm_mid), nn.Identity()
                s.patch, s.patch_norm = _fuse_conv_bn(s.patch, s.patch_norm), nn.Identity()
            for m in self.modules():
                if isinstance(m, ConvBlock):
                    m.conv1, m.norm1 = _fuse_conv_bn(m.conv1, m.norm1), nn.Identity()
                    m.conv2, m.norm2 = _fuse_conv_bn(m.conv2, m.norm2), nn.Identity()
        self.deployed = True
        return self

    def train(self, mode: bool = True) -> "FasterViT":
        if mode and self.deployed:
            raise RuntimeError("this FasterViT was switched to deploy (biases frozen, BN folded); build a new one to "
                               "train")
        return super().train(mode)


def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    return v[0], v[1]


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    if not isinstance(bn, nn.BatchNorm2d):
        return conv
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                      conv.padding if isinstance(conv.padding, str) else _pair(conv.padding), _pair(conv.dilation),
                      conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None  # BatchNorm2d built here tracks running statistics
    scale = bn.weight / torch.sqrt(var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    assert fused.bias is not None  # built with bias=True
    fused.bias.copy_((bias - mean) * scale + bn.bias)
    return fused


def build_model(cfg: Union[FasterViTConfig, str, Mapping[str, Any]], **overrides: Any) -> FasterViT:
    """Build a FasterViT from a config, a preset name, a config dict or a JSON file path.

    ``overrides`` replace config fields (e.g. ``num_classes=10``) and are validated.
    """
    cfg = resolve_config(cfg)
    if overrides:
        cfg = cfg.replace(**overrides)
    return FasterViT(cfg)


# ---------------------------------------------------------------------------------------------
# official checkpoints
# ---------------------------------------------------------------------------------------------
_KEY_RULES: list[tuple[str, str]] = [
    (r"^patch_embed\.conv_down\.0\.", "stem.conv1."),
    (r"^patch_embed\.conv_down\.1\.", "stem.norm1."),
    (r"^patch_embed\.conv_down\.3\.", "stem.conv2."),
    (r"^patch_embed\.conv_down\.4\.", "stem.norm2."),
    (r"^levels\.", "stages."),
    (r"\.downsample\.reduction\.0\.", ".downsample.conv."),
    (r"\.global_tokenizer\.pos_embed\.", ".ct_init.pos_conv."),
    (r"\.pos_emb_funct\.", ".rel_pos."),
    (r"\.cpb_mlp\.0\.", ".mlp.fc1."),
    (r"\.cpb_mlp\.2\.", ".mlp.fc2."),
    (r"\.hat_pos_embed\.", ".ct_pos_embed."),
    (r"\.hat_norm1\.", ".ct_norm1."),
    (r"\.hat_norm2\.", ".ct_norm2."),
    (r"\.hat_attn\.", ".ct_attn."),
    (r"\.hat_mlp\.", ".ct_mlp."),
    (r"\.gamma1$", ".gamma_ct_attn"),
    (r"\.gamma2$", ".gamma_ct_mlp"),
    (r"\.gamma3$", ".gamma_attn"),
    (r"\.gamma4$", ".gamma_mlp"),
]
# buffers of the official code that are caches or pure geometry: recomputed here, never loaded
_DROP = re.compile(r"(relative_bias|relative_coords_table|relative_position_index)$|"
                   r"\.global_tokenizer\.to_global_feature\.pos\.")


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: Optional[nn.Module] = None
                         ) -> dict[str, torch.Tensor]:
    """Map an official FasterViT checkpoint (or ``state_dict()``) to this implementation's keys.

    Accepts a raw state dict or a checkpoint holding one under ``state_dict``/``model``, with or
    without a ``module.`` prefix. Cached/geometric buffers are dropped (they are recomputed). Where
    the official any-resolution code builds a carrier-token initialiser that it never uses (a HAT
    stage with one window), its weights are dropped when ``model`` has no such module.
    """
    for holder in ("state_dict", "model"):  # a checkpoint holding the state dict
        if holder in state_dict:
            state_dict = state_dict[holder]  # type: ignore[assignment]
            break
    ours = set(model.state_dict()) if model is not None else None
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if _DROP.search(k):
            continue
        for pattern, repl in _KEY_RULES:
            k = re.sub(pattern, repl, k)
        if ours is not None and ".ct_init." in k and k not in ours:
            continue
        out[k] = v
    return out


def load_official_state_dict(model: FasterViT, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
    """Load an official checkpoint into ``model`` (strict by default)."""
    return model.load_state_dict(checkpoint_filter_fn(state_dict, model), strict=strict)


def iter_deployable(model: nn.Module) -> Iterable[nn.Module]:
    """Modules whose positional tables ``switch_to_deploy`` precomputes."""
    return (m for m in model.modules() if isinstance(m, DEPLOYABLE))
