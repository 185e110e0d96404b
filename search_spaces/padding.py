"""Channel padding: widths and attention head dims of a deployed FasterViT rounded up to a multiple.

A deploy-time transform, run after ``switch_to_deploy`` (``pad_channels(model, 8)``), that leaves
the logits unchanged. Why: tensor-core convolutions and GEMMs want channel counts that are
multiples of 8 in fp16 (cuDNN otherwise pads FasterViT-4's 196-wide stage 1 on every call), and
the fused SDPA kernels want head_dim % 8 == 0 (FasterViT-4's 49 takes the explicit path).

Why the outputs stay equal:

- Widths (the stem's two, every stage's, every MLP's hidden one): the extra channels are zero and
  stay zero. Layers writing them get zero weights and zero biases, layers reading them zero
  weights; ReLU and GELU map 0 to 0; layer scales, unfolded BatchNorms and the precomputed
  positional embeddings are zero there. A LayerNorm on a padded width (``PaddedLayerNorm``)
  takes its statistics over the real channels only and writes zeros to the others.
- Head dims: every head's q, k and v get zero channels (q·kᵀ is unchanged), the softmax keeps the
  real head dim's scale, and the extra channels of the output are dropped before the projection.

Parts left at a size that is not a multiple are listed with their reason in
``model.channel_padding.kept`` (``ChannelPadding``), for the profiler's record. A padded model's
``forward_features`` returns the padded map (its extra channels are zero); the logits keep their shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from .config import FasterViTConfig, StageGeometry
from .fastervit import (
    Attention,
    ChannelPadding,
    ConvBlock,
    ConvStage,
    EdgeViTBlock,
    FasterViT,
    HATBlock,
    Mlp,
    Stem,
    SubsampledAttention,
    TokenPosEmbed,
    TransformerStage,
    TwinsBlock,
    WindowAttention,
    _use_fused,
)

__all__ = ["pad_channels", "channel_padding_plan", "PaddedLayerNorm", "PaddedLayerNorm2d"]


def _norm_of_real_channels(norm: nn.LayerNorm, size: int, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm of the first ``normalized_shape`` channels of ``x``'s last dim, zero-padded to ``size``."""
    real = norm.normalized_shape[0]
    y = F.layer_norm(x[..., :real], (real,), norm.weight, norm.bias, norm.eps)
    return F.pad(y, (0, size - real))


class PaddedLayerNorm(nn.LayerNorm):
    """A LayerNorm (its weights, eps) over the real channels of a last dimension zero-padded to ``size``.

    Statistics come from the real channels only (a LayerNorm over ``size`` would count the zeros);
    the padded channels come out zero.
    """

    def __init__(self, norm: nn.LayerNorm, size: int):
        super().__init__(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)
        self.weight, self.bias, self.size = norm.weight, norm.bias, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_of_real_channels(self, self.size, x)


class PaddedLayerNorm2d(LayerNorm2d):
    """``PaddedLayerNorm`` over the channels of an NCHW map (in place of timm's ``LayerNorm2d``)."""

    def __init__(self, norm: LayerNorm2d, size: int):
        super().__init__(norm.normalized_shape[0], eps=norm.eps, affine=False)
        self.weight, self.bias, self.size = norm.weight, norm.bias, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_of_real_channels(self, self.size, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def pad_channels(model: FasterViT, multiple: int = 8) -> ChannelPadding:
    """Zero-pad the widths and head dims of a deployed ``model`` (in place) to multiples of ``multiple``.

    The logits are unchanged (see the module docstring). Returns what was padded and what was kept
    with its reason; the same record is left in ``model.channel_padding``.

    Raises ``ValueError`` for a model that is not deployed or already padded, or a bad ``multiple``.
    """
    if not isinstance(model, FasterViT):
        raise TypeError(f"pad_channels needs a FasterViT, got {type(model).__name__}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple={multiple!r} must be an integer >= 1")
    if not model.deployed:
        raise ValueError("pad_channels pads a deployed model (positional tables precomputed, BatchNorm folded): "
                         "call model.switch_to_deploy() first")
    if model.channel_padding is not None:
        raise ValueError(f"this model is already padded (multiple={model.channel_padding.multiple}); build and "
                         "deploy a fresh one to pad it again")
    pad = _Padding(multiple)
    cfg = model.config
    if cfg.in_chans % multiple:
        pad.keep("stem input", f"in_chans={cfg.in_chans}: the image's channels, as the caller passes them")
    stem_width = pad.size("stem in_dim", cfg.in_dim)
    stages: list[_Stage] = [s for s in model.stages if isinstance(s, (ConvStage, TransformerStage))]
    unknown = [_unknown_blocks(pad, i, stage, g) for i, (stage, g) in enumerate(zip(stages, cfg.stages))]
    widths = [g.width if skip else pad.size(f"stages.{i} width", g.width)
              for i, (g, skip) in enumerate(zip(cfg.stages, unknown))]
    _pad_stem(model.stem, stem_width, widths[0])
    for i, (stage, g) in enumerate(zip(stages, cfg.stages)):
        if not unknown[i]:
            _pad_stage(pad, stage, g, _stage_sizes(pad, cfg, g, widths[i]))
        if stage.downsample is not None:
            stage.downsample.norm = _padded_norm(stage.downsample.norm, widths[i])
            _pad_conv(stage.downsample.conv, widths[i], widths[i + 1])
    _pad_final_norm_and_head(model, widths[-1], pad)
    model.channel_padding = pad.record
    return pad.record


def channel_padding_plan(cfg: FasterViTConfig, multiple: int = 8) -> ChannelPadding:
    """What ``pad_channels(model, multiple)`` would do to a deployed model of ``cfg``, without its weights.

    The model is built, deployed and padded on PyTorch's ``meta`` device (shapes only, no memory),
    so it costs well under a second even for FasterViT-6; used where only the record is wanted (a
    model card).
    """
    with torch.device("meta"):
        model = FasterViT(cfg).eval()
        model.switch_to_deploy()
        return pad_channels(model, multiple)


# ---------------------------------------------------------------------------------------------
# plan and stages
# ---------------------------------------------------------------------------------------------
class _Padding:
    """Rounds sizes up to the multiple and writes down every change and every part kept."""

    def __init__(self, multiple: int):
        self.record = ChannelPadding(multiple)

    def round(self, real: int) -> int:
        m = self.record.multiple
        return -(-real // m) * m

    def size(self, part: str, real: int) -> int:
        """``real`` rounded up; a change is recorded under ``part``."""
        padded = self.round(real)
        if padded != real:
            self.record.padded.append((part, real, padded))
        return padded

    def keep(self, part: str, reason: str) -> None:
        if (part, reason) not in self.record.kept:
            self.record.kept.append((part, reason))


_Stage = Union[ConvStage, TransformerStage]


@dataclass(frozen=True)
class _StageSizes:
    width: int  # residual width (padded)
    real: int  # residual width (real)
    hidden: int  # MLP hidden width (padded; transformer stages)
    head_dim: int  # per-head channels of q, k, v (padded; transformer stages)


def _unknown_blocks(pad: _Padding, i: int, stage: _Stage, g: StageGeometry) -> bool:
    """True (and recorded) when a block of stage ``i`` has no padding rule: the stage is left as it is."""
    missing = sorted({type(b).__name__ for b in stage.blocks if type(b) not in _BLOCK_RULES})
    if missing:
        pad.keep(f"stages.{i}", f"width {g.width}: no padding rule for {', '.join(missing)} (the stage is left as is)")
    return bool(missing)


def _stage_sizes(pad: _Padding, cfg: FasterViTConfig, g: StageGeometry, width: int) -> _StageSizes:
    if not g.transformer:
        return _StageSizes(width, g.width, 0, 0)
    i = g.index
    return _StageSizes(width, g.width, pad.size(f"stages.{i} mlp hidden", int(g.width * cfg.mlp_ratio)),
                       pad.size(f"stages.{i} head_dim", g.width // cfg.num_heads[i]))


def _pad_stage(pad: _Padding, stage: _Stage, g: StageGeometry, s: _StageSizes) -> None:
    for block in stage.blocks:
        _BLOCK_RULES[type(block)](block, s)
    if not isinstance(stage, TransformerStage):
        return
    if stage.ct_init is not None and stage.ct_init.pos_conv is not None:
        _pad_depthwise(stage.ct_init.pos_conv, s.width)
    i = g.index
    if s.width != s.real:
        pad.keep(f"stages.{i} attention output", f"{s.real} channels (heads x real head_dim) reach the output "
                 "projection: the heads' padded channels are dropped before it")
        if g.attention == "edgevit" and g.windows != (1, 1):
            pad.keep(f"stages.{i} EdgeViT propagation", f"its transposed depth-wise conv and LayerNorm run on the "
                     f"attention output ({s.real} channels)")
    if not _use_fused(s.head_dim):
        why = ("timm's fused attention is off (use_fused_attn())" if s.head_dim % 8 == 0 else
               f"head_dim {s.head_dim} is not a multiple of 8")
        pad.keep(f"stages.{i} attention", f"explicit softmax(q kᵀ) v instead of fused SDPA: {why}")


def _pad_stem(stem: Stem, mid: int, out: int) -> None:
    _pad_conv(stem.conv1, out_size=mid)
    _pad_batchnorm(stem.norm1, mid)
    if stem.hybrid:
        _pad_conv(stem.conv_mid, mid, mid)
        _pad_batchnorm(stem.norm_mid, mid)
        _pad_conv(stem.patch, out_size=out)
        _pad_batchnorm(stem.patch_norm, out)
    _pad_conv(stem.conv2, mid, out)
    _pad_batchnorm(stem.norm2, out)


def _pad_final_norm_and_head(model: FasterViT, width: int, pad: _Padding) -> None:
    if isinstance(model.norm, LayerNorm2d):
        model.norm = _padded_norm(model.norm, width)
    else:
        _pad_batchnorm(model.norm, width)
    if isinstance(model.head, nn.Linear):
        _pad_linear(model.head, in_size=width)
        if model.num_classes % pad.record.multiple:
            pad.keep("head output", f"num_classes={model.num_classes}: the logits keep their shape")


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
def _pad_conv_block(b: ConvBlock, s: _StageSizes) -> None:
    _pad_conv(b.conv1, s.width, s.width)
    _pad_conv(b.conv2, s.width, s.width)
    _pad_batchnorm(b.norm1, s.width)
    _pad_batchnorm(b.norm2, s.width)
    _pad_tensor(b, "gamma", 0, s.width)


def _pad_hat_block(b: HATBlock, s: _StageSizes) -> None:
    _pad_pos_embed(b.pos_embed, s.width)
    b.norm1, b.norm2 = _padded_norm(b.norm1, s.width), _padded_norm(b.norm2, s.width)
    _pad_attention(b.attn, s)
    _pad_mlp(b.mlp, s)
    for name in ("gamma_attn", "gamma_mlp", "gamma_ct_attn", "gamma_ct_mlp"):
        _pad_tensor(b, name, 0, s.width)
    if not b.has_ct:
        return
    _pad_pos_embed(b.ct_pos_embed, s.width)
    if isinstance(b.ct_attn, Attention):
        b.ct_norm1, b.ct_norm2 = _padded_norm(b.ct_norm1, s.width), _padded_norm(b.ct_norm2, s.width)
        _pad_attention(b.ct_attn, s)
        _pad_mlp(b.ct_mlp, s)


def _pad_twins_block(b: TwinsBlock, s: _StageSizes) -> None:
    _pad_pos_embed(b.pos_embed, s.width)
    b.norm1, b.norm2 = _padded_norm(b.norm1, s.width), _padded_norm(b.norm2, s.width)
    if isinstance(b.attn, SubsampledAttention):
        a = b.attn
        _pad_linear(a.q, s.width, s.head_dim, a.num_heads)
        _pad_linear(a.kv, s.width, s.head_dim, 2 * a.num_heads)
        _pad_linear(a.proj, out_size=s.width)
        if a.sr is not None and a.sr_norm is not None:
            _pad_conv(a.sr, s.width, s.width)
            a.sr_norm = _padded_norm(a.sr_norm, s.width)
        _set_head_dim(a, s.head_dim)
    else:
        assert isinstance(b.attn, Attention), type(b.attn)  # LSA
        _pad_attention(b.attn, s)
    _pad_mlp(b.mlp, s)
    for name in ("gamma_attn", "gamma_mlp"):
        _pad_tensor(b, name, 0, s.width)


def _pad_edgevit_block(b: EdgeViTBlock, s: _StageSizes) -> None:
    _pad_pos_embed(b.pos_embed, s.width)
    _pad_batchnorm(b.local_norm, s.width)
    _pad_conv(b.local_pw1, s.width, s.width)
    _pad_depthwise(b.local_dw, s.width)
    _pad_conv(b.local_pw2, s.width, s.width)
    b.norm1, b.norm2 = _padded_norm(b.norm1, s.width), _padded_norm(b.norm2, s.width)
    _pad_linear(b.qkv, s.width, s.head_dim, 3 * b.num_heads)
    _pad_linear(b.proj, out_size=s.width)  # its input, the attention output, keeps the real width
    _set_head_dim(b, s.head_dim)
    _pad_mlp(b.mlp, s)
    for name in ("gamma_local", "gamma_attn", "gamma_mlp"):
        _pad_tensor(b, name, 0, s.width)


#: How each block type is padded (exact types: a subclass may add layers that no rule knows).
_BLOCK_RULES: dict[type, Callable[[Any, _StageSizes], None]] = {
    ConvBlock: _pad_conv_block, HATBlock: _pad_hat_block, TwinsBlock: _pad_twins_block,
    EdgeViTBlock: _pad_edgevit_block,
}


def _pad_attention(attn: Attention, s: _StageSizes) -> None:
    _pad_linear(attn.qkv, s.width, s.head_dim, 3 * attn.num_heads)
    _pad_linear(attn.proj, out_size=s.width)
    if isinstance(attn, WindowAttention) and attn.gate is not None:
        _pad_tensor(attn.gate, "weight", 1, s.width)
    _set_head_dim(attn, s.head_dim)


def _set_head_dim(attn: Union[Attention, SubsampledAttention, EdgeViTBlock], head_dim: int) -> None:
    """Lay q, k, v out with ``head_dim`` channels per head (``real_head_dim`` and ``scale`` stay)."""
    attn.head_dim = head_dim
    attn.fused_attn = _use_fused(head_dim)


def _pad_mlp(mlp: Mlp, s: _StageSizes) -> None:
    _pad_linear(mlp.fc1, s.width, s.hidden)
    _pad_linear(mlp.fc2, s.hidden, s.width)


# ---------------------------------------------------------------------------------------------
# layers and tensors
# ---------------------------------------------------------------------------------------------
def _padded(t: torch.Tensor, dim: int, size: int, groups: int = 1, fill: float = 0.0) -> torch.Tensor:
    """``t`` with axis ``dim`` cut into ``groups`` equal parts, each extended with ``fill`` to ``size``."""
    real = t.shape[dim] // groups
    if real == size:
        return t
    parts = t.unflatten(dim, (groups, real))
    extra = list(parts.shape)
    extra[dim + 1] = size - real
    return torch.cat((parts, parts.new_full(extra, fill)), dim + 1).flatten(dim, dim + 1)


def _pad_tensor(module: nn.Module, name: str, dim: int, size: int, groups: int = 1, fill: float = 0.0) -> None:
    """Pad ``module.<name>`` (a parameter or buffer; absent or None: nothing) along ``dim``."""
    old = getattr(module, name, None)
    if old is None:
        return
    new = _padded(old.detach(), dim, size, groups, fill)
    setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new)


def _pad_linear(m: nn.Linear, in_size: Optional[int] = None, out_size: Optional[int] = None,
                out_groups: int = 1) -> None:
    """Zero inputs up to ``in_size``; outputs in ``out_groups`` parts, each zero-padded to ``out_size``."""
    if in_size is not None:
        _pad_tensor(m, "weight", 1, in_size)
        m.in_features = in_size
    if out_size is not None:
        _pad_tensor(m, "weight", 0, out_size, out_groups)
        _pad_tensor(m, "bias", 0, out_size, out_groups)
        m.out_features = out_size * out_groups


def _pad_conv(m: nn.Conv2d, in_size: Optional[int] = None, out_size: Optional[int] = None) -> None:
    if m.groups != 1:
        raise ValueError(f"_pad_conv pads dense convolutions; this one has groups={m.groups}")
    if in_size is not None:
        _pad_tensor(m, "weight", 1, in_size)
        m.in_channels = in_size
    if out_size is not None:
        _pad_tensor(m, "weight", 0, out_size)
        _pad_tensor(m, "bias", 0, out_size)
        m.out_channels = out_size


def _pad_depthwise(m: nn.Conv2d, size: int) -> None:
    _pad_tensor(m, "weight", 0, size)
    _pad_tensor(m, "bias", 0, size)
    m.in_channels = m.out_channels = m.groups = size


def _pad_batchnorm(m: nn.Module, size: int) -> None:
    """An eval-mode BatchNorm (not folded) maps its extra channels to 0; ``Identity`` (folded): nothing."""
    if not isinstance(m, nn.BatchNorm2d):
        return
    for name in ("weight", "bias", "running_mean"):
        _pad_tensor(m, name, 0, size)
    _pad_tensor(m, "running_var", 0, size, fill=1.0)
    m.num_features = size


_Norm = TypeVar("_Norm", bound=nn.LayerNorm)


def _padded_norm(norm: _Norm, size: int) -> _Norm:
    """``norm`` (a LayerNorm over channels) for a width padded to ``size``."""
    if norm.normalized_shape[0] == size:
        return norm
    return cast(_Norm, PaddedLayerNorm2d(norm, size) if isinstance(norm, LayerNorm2d) else PaddedLayerNorm(norm, size))


def _pad_pos_embed(pe: Optional[TokenPosEmbed], size: int) -> None:
    if pe is None:
        return
    if pe.deployed is None:
        raise ValueError("a positional embedding was not precomputed: pad_channels needs a deployed model")
    pe.deployed = _padded(pe.deployed, pe.deployed.dim() - 1, size)
