"""The elastic FasterViT: one weight-sharing supernet that runs every config of a search space.

``ElasticFasterViT(space, resolution=R)`` holds the largest weights any config of ``space`` needs
(widest stem and stages, deepest stages, most heads, widest MLPs, the 5x5 carrier-token kernel,
carrier-token modules wherever a config can have HAT) and runs one config at a time
(``set_active(cfg)``, then ``forward``) on slices of them, as Once-for-All (Cai et al., ICLR 2020)
and AutoFormer's weight entanglement (Chen et al., ICCV 2021) do:

- depth: the first d blocks of a stage;
- widths (``in_dim``, ``dim``): the first channels of every weight, norm and bias;
- heads: the same q/k/v weights split into more or fewer heads; the position-bias MLP gives the
  first ``heads`` outputs;
- MLP ratio: the first hidden units;
- window size and ``ct_size``: no weights at all (the positional MLPs read continuous
  coordinates, so any window or carrier-token grid is one more input to the same MLP);
- CT-init kernel: the 3x3 kernel is the centre of the 5x5;
- HAT, propagation, layer scale and the ablation toggles (``attn_bias``, ``pos_bias_1d``,
  ``ct_attention``, ``ct_init``): a module (or scale) used or skipped.

Knobs that cannot share weights (the attention type, the stem, ``qkv_bias``, ...) are refused at
construction with a ``SupernetError`` naming the knob, its values and why. The supernet runs at one
training resolution: every config is moved there with ``cfg.at_resolution(R)`` (windows per side
kept), as the ``train`` proxy does.

``extract(cfg)`` returns the plain generator model (``build_model``) with the slices copied in; its
output equals the elastic forward on that config. Every elastic op slices its full tensors in one
method (``active_tensor``) that both its ``forward`` and ``extract`` call, and the elastic modules
carry the generator's parameter names, so the extracted state dict loads strictly.

    >>> from search_spaces.elastic import ElasticFasterViT                # doctest: +SKIP
    >>> net = ElasticFasterViT("default", resolution=64, num_classes=10)  # doctest: +SKIP
    >>> net.set_active(cfg); logits = net(images)                         # doctest: +SKIP
    >>> model = net.extract(cfg)   # a FasterViT with the shared weights    # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import drop_path, trunc_normal_

from .config import CONV_STAGES, NUM_STAGES, FasterViTConfig, StageGeometry, as_resolution
from .fastervit import (
    _BIAS_ALIGN,
    CarrierTokenInit,
    FasterViT,
    _attend,
    _use_fused,
    pad_to_windows,
    rel_pos_geometry,
    token_coords,
    window_map,
    window_order,
    window_tokens,
)
from .presets import resolve_config
from .space import SearchSpace, load_space

__all__ = ["ElasticFasterViT", "Capacity", "SupernetError", "ELASTIC_KNOBS", "REFUSED_KNOBS", "extreme_configs",
           "sample_subnet", "config_params"]

#: Knobs a supernet shares weights over (config fields).
ELASTIC_KNOBS = ("in_dim", "dim", "depths", "num_heads", "mlp_ratio", "window_size", "ct_size", "ct_init_kernel",
                 "hat", "do_propagation", "layer_scale", "layer_scale_conv", "attn_bias", "pos_bias_1d",
                 "ct_attention", "ct_init", "drop_path_rate")
#: Knobs that cannot be elastic, with the reason (they may still be fixed, see ``_SUPPORTED_VALUES``).
REFUSED_KNOBS = {
    "resolution": "the supernet trains and ranks every config at one training resolution (resolution=R); "
                  "BatchNorm statistics and the learned positional tables would have to serve several",
    "in_chans": "the input channels are set by the data",
    "num_classes": "the class count is set by the data",
    "attention": "Twins and EdgeViT blocks hold other weights than HAT blocks: nothing to share",
    "stem": "the hybrid stem inserts a convolution between the conv stem's two; the shared stem would "
            "compute another function in each choice",
    "qkv_bias": "fix it: a q/k/v bias present in some subnets and absent in others is not shared training",
    "layer_norm_last": "the last norm is a BatchNorm in one choice and a LayerNorm in the other",
    "window_overlap": "halo attention is not implemented in the elastic FasterViT",
    "ct_gate": "the carrier-token gate is not implemented in the elastic FasterViT",
}
#: Values the elastic FasterViT implements for fields that are not elastic.
_SUPPORTED_VALUES: dict[str, Any] = dict(attention="hat", stem="conv", window_overlap=0, ct_gate=False)
#: Knobs whose larger value (on > off, a layer scale > none) is the larger network: the sandwich's
#: extremes take their max / min.
_MONOTONE = ("in_dim", "dim", "depths", "num_heads", "mlp_ratio", "ct_size", "ct_init_kernel", "hat",
             "do_propagation", "layer_scale", "layer_scale_conv", "attn_bias", "pos_bias_1d", "ct_attention",
             "ct_init")
#: Leaves of the extreme-config search beyond which it falls back to a greedy rule.
_MAX_BRANCHES = 256


class SupernetError(ValueError):
    """A space or config the supernet cannot share weights over; the message names knob and value."""


# ---------------------------------------------------------------------------------------------
# what the space needs: the capacity of the supernet
# ---------------------------------------------------------------------------------------------
def _knob_values(knob: Any) -> list[Any]:
    """Every value a knob can take (a continuous range: its two ends)."""
    if knob.choices is not None:
        return list(knob.choices)
    return knob.values() if knob.size() != math.inf else [knob.low, knob.high]


def _field_values(space: SearchSpace, field: str, index: Optional[int] = None) -> list[Any]:
    """Every value ``field`` (stage ``index`` of a per-stage field) takes in ``space``."""
    base = space.apply({})
    v = getattr(base, field)
    out = [v[index] if index is not None else v]
    for k in space.knobs:
        if k.field != field:
            continue
        for value in _knob_values(k):
            if k.index is not None:
                if index is None or k.index == index:
                    out.append(value)
            else:
                out.append(value[index] if index is not None and isinstance(value, (list, tuple)) else value)
    return out


def _varying(space: SearchSpace) -> dict[str, list[Any]]:
    """Knob field -> the values its knobs list."""
    out: dict[str, list[Any]] = {}
    for k in space.knobs:
        out.setdefault(k.field, []).extend(_knob_values(k))
    return out


@dataclass(frozen=True)
class Capacity:
    """The largest weights the configs of a space need (what the supernet allocates)."""

    in_chans: int
    in_dim: int
    dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: float
    ct_init_kernel: int
    hat: tuple[bool, ...]  # carrier-token modules in this stage
    layer_scale: Optional[float]
    layer_scale_conv: Optional[float]
    attn_bias: bool
    pos_bias_1d: bool
    ct_attention: bool
    ct_init: bool
    qkv_bias: bool
    layer_norm_last: bool

    def hidden(self, stage: int) -> int:
        return int(self.dim * 2**stage * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of_space(cls, space: SearchSpace) -> "Capacity":
        """The capacity of ``space``; refuses knobs that cannot share weights (``SupernetError``)."""
        _refuse_unshareable(space)

        def top(field: str, index: Optional[int] = None) -> Any:
            return max(_field_values(space, field, index))

        def some(field: str, index: Optional[int] = None) -> bool:
            return any(bool(v) for v in _field_values(space, field, index))

        def scale(field: str) -> Optional[float]:
            values = {float(v) for v in _field_values(space, field) if v is not None}
            return values.pop() if values else None

        base = space.apply({})
        return cls(in_chans=base.in_chans, in_dim=top("in_dim"), dim=top("dim"),
                   depths=tuple(top("depths", i) for i in range(NUM_STAGES)),
                   num_heads=tuple(top("num_heads", i) for i in range(NUM_STAGES)),
                   mlp_ratio=float(top("mlp_ratio")), ct_init_kernel=top("ct_init_kernel"),
                   hat=tuple(some("hat", i) for i in range(NUM_STAGES)),
                   layer_scale=scale("layer_scale"), layer_scale_conv=scale("layer_scale_conv"),
                   attn_bias=some("attn_bias"), pos_bias_1d=some("pos_bias_1d"),
                   ct_attention=some("ct_attention"), ct_init=some("ct_init"),
                   qkv_bias=base.qkv_bias, layer_norm_last=base.layer_norm_last)

    def check(self, cfg: FasterViTConfig) -> None:
        """Raise ``SupernetError`` when ``cfg`` needs weights this capacity does not hold."""
        def refuse(what: str) -> None:
            raise SupernetError(f"config {cfg.summary()} does not fit this supernet: {what}")

        for name in ("in_chans", "qkv_bias", "layer_norm_last"):
            if getattr(cfg, name) != getattr(self, name):
                refuse(f"{name}={getattr(cfg, name)!r}, the supernet holds {name}={getattr(self, name)!r}")
        for name, value in _SUPPORTED_VALUES.items():
            if getattr(cfg, name) != value:
                refuse(f"{name}={getattr(cfg, name)!r} is not elastic ({REFUSED_KNOBS[name]})")
        for name in ("in_dim", "dim"):
            if getattr(cfg, name) > getattr(self, name):
                refuse(f"{name}={getattr(cfg, name)} > the supernet's {getattr(self, name)}")
        for g in cfg.stages:
            i = g.index
            if cfg.depths[i] > self.depths[i]:
                refuse(f"depths[{i}]={cfg.depths[i]} > the supernet's {self.depths[i]}")
            if not g.transformer:
                continue
            if cfg.num_heads[i] > self.num_heads[i]:
                refuse(f"num_heads[{i}]={cfg.num_heads[i]} > the supernet's {self.num_heads[i]}")
            if int(g.width * cfg.mlp_ratio) > self.hidden(i):
                refuse(f"mlp_ratio={cfg.mlp_ratio:g} gives {int(g.width * cfg.mlp_ratio)} hidden units in stage "
                       f"{i + 1}, the supernet holds {self.hidden(i)}")
            if g.hat and not self.hat[i]:
                refuse(f"hat[{i}]=true: the supernet has no carrier-token modules in stage {i + 1}")
            if g.hat and cfg.ct_init and cfg.ct_init_kernel > self.ct_init_kernel:
                refuse(f"ct_init_kernel={cfg.ct_init_kernel} > the supernet's {self.ct_init_kernel}")
        for name in ("attn_bias", "pos_bias_1d", "ct_attention", "ct_init"):
            if getattr(cfg, name) and not getattr(self, name):
                refuse(f"{name}=true: no config of the space has it, so the supernet holds no weights for it")
        for name in ("layer_scale", "layer_scale_conv"):
            if getattr(cfg, name) is not None and getattr(self, name) is None:
                refuse(f"{name}={getattr(cfg, name)}: the supernet holds no layer scales")


def _refuse_unshareable(space: SearchSpace) -> None:
    """``SupernetError`` for a knob (or fixed value) the elastic FasterViT cannot share weights over."""
    for field, values in _varying(space).items():
        if field in REFUSED_KNOBS and len({repr(v) for v in _field_values(space, field)}) > 1:
            raise SupernetError(f"knob {field} (values {values}) cannot share weights in a supernet: "
                                f"{REFUSED_KNOBS[field]}")
    for field, value in _SUPPORTED_VALUES.items():
        for v in _field_values(space, field):
            if v != value:
                raise SupernetError(f"{field}={v!r} is not supported by the elastic FasterViT (it implements "
                                    f"{field}={value!r} only): {REFUSED_KNOBS[field]}")
    for field in ("layer_scale", "layer_scale_conv"):
        scales = sorted({float(v) for v in _field_values(space, field) if v is not None})
        if len(scales) > 1:
            raise SupernetError(f"knob {field} (values {scales}) cannot share weights in a supernet: the values "
                                f"differ only in the initial value of one shared scale; keep one value (and null)")


# ---------------------------------------------------------------------------------------------
# elastic ops: full weights, sliced in one place for forward and export
# ---------------------------------------------------------------------------------------------
class Elastic:
    """An op that runs on slices of its full tensors; ``active_tensor(name)`` is the slice of one."""

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        raise NotImplementedError

    def active_weight(self) -> torch.Tensor:
        """``active_tensor("weight")`` of an op that always has a weight (linear, convolution)."""
        w = self.active_tensor("weight")
        if w is None:
            raise RuntimeError(f"{type(self).__name__} has no weight to slice")
        return w


class ElasticLinear(nn.Linear, Elastic):
    """``nn.Linear`` on ``weight[:out, :in]``; with ``chunks`` (3 for q/k/v) the output is that many
    equal parts, each sliced to its first ``out / chunks`` rows."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, chunks: int = 1):
        super().__init__(in_features, out_features, bias=bias)
        self.chunks = chunks
        self.active_in, self.active_out = in_features, out_features

    def configure(self, in_features: int, out_features: int) -> None:
        self.active_in, self.active_out = in_features, out_features

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        t = getattr(self, name)
        if t is None:
            return None
        n, out, i = self.chunks, self.active_out // self.chunks, self.active_in
        if n == 1:
            return t[:out, :i] if name == "weight" else t[:out]
        if name == "weight":
            return t.view(n, -1, t.shape[1])[:, :out, :i].reshape(n * out, i)
        return t.view(n, -1)[:, :out].reshape(n * out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.active_weight(), self.active_tensor("bias"))


class ElasticConv2d(nn.Conv2d, Elastic):
    """``nn.Conv2d`` on ``weight[:out, :in]``; depth-wise (``groups == channels``) it also takes the
    centre ``k x k`` of its kernel (the 3x3 CT-init kernel is the centre of the 5x5), padded to keep
    the map size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.depthwise = groups > 1
        self.active_in, self.active_out, self.active_kernel = in_channels, out_channels, kernel_size

    def configure(self, in_channels: int, out_channels: int, kernel_size: Optional[int] = None) -> None:
        self.active_in, self.active_out = in_channels, out_channels
        self.active_kernel = kernel_size or self.kernel_size[0]

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        t = getattr(self, name)
        if t is None:
            return None
        if name == "bias":
            return t[: self.active_out]
        if self.depthwise:
            o = (self.kernel_size[0] - self.active_kernel) // 2
            return t[: self.active_out, :, o:o + self.active_kernel, o:o + self.active_kernel]
        return t[: self.active_out, : self.active_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # __init__ takes an int padding, so nn.Conv2d holds it as a tuple (never "same"/"valid")
        pad = self.active_kernel // 2 if self.depthwise else cast(tuple[int, ...], self.padding)
        return F.conv2d(x, self.active_weight(), self.active_tensor("bias"), self.stride, pad, self.dilation,
                        self.active_out if self.depthwise else 1)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of a process group; the gradient is summed the same way (SyncBatchNorm's rule)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class ElasticBatchNorm2d(nn.BatchNorm2d, Elastic):
    """``nn.BatchNorm2d`` on the first ``active`` channels of its weights and running statistics.

    With ``sync_group`` set (distributed training) the batch statistics of a training forward are
    summed over the group's ranks, so N processes normalise as one process on their joint batch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.active = num_features
        self.sync_group: Any = None

    def configure(self, channels: int) -> None:
        self.active = channels

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        t = getattr(self, name)
        return t if t is None or name == "num_batches_tracked" else t[: self.active]

    def _momentum(self) -> float:
        """The running-statistics factor of this forward (nn.BatchNorm's rule); counts the batch."""
        if not (self.training and self.track_running_stats):
            return 0.0
        tracked = self.num_batches_tracked
        if tracked is not None:
            tracked.add_(1)
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(tracked) if tracked is not None else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = self._momentum()
        w, b = self.active_tensor("weight"), self.active_tensor("bias")
        rm, rv = self.active_tensor("running_mean"), self.active_tensor("running_var")
        if self.training and self.sync_group is not None:
            return self._sync_forward(x, w, b, rm, rv, momentum)
        return F.batch_norm(x, rm, rv, w, b, self.training, momentum, self.eps)

    def _sync_forward(self, x: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor],
                      rm: Optional[torch.Tensor], rv: Optional[torch.Tensor], momentum: float) -> torch.Tensor:
        """Batch norm over the group's joint batch; like ``F.batch_norm``, the running statistics
        are updated when held and the affine transform applied when the layer has one."""
        xf = x.float()
        count = torch.full((1,), xf.numel() // xf.shape[1], dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat((xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count)), self.sync_group)
        c = xf.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if rm is not None and rv is not None:
            with torch.no_grad():
                rm.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                rv.mul_(1 - momentum).add_(var.detach() * (n / (n - 1).clamp_min(1.0)), alpha=momentum)
        shape = (1, -1, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if w is not None:
            y = y * w.view(shape)
        if b is not None:
            y = y + b.view(shape)
        return y.to(x.dtype)


class ElasticLayerNorm(nn.LayerNorm, Elastic):
    """``nn.LayerNorm`` over the first ``active`` channels (the last dimension)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.active = num_features

    def configure(self, channels: int) -> None:
        self.active = channels

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        return getattr(self, name)[: self.active]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.active,), self.active_tensor("weight"), self.active_tensor("bias"), self.eps)


class ElasticLayerNorm2d(ElasticLayerNorm):
    """timm's ``LayerNorm2d`` (channels of an NCHW map) over the first ``active`` channels."""

    def __init__(self, num_features: int, eps: float = 1e-6):
        super().__init__(num_features, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _Scales(nn.Module, Elastic):
    """Holds a block's layer-scale vectors (``gamma*``); ``active_tensor`` gives their first channels."""

    active_width: int = 0

    def active_tensor(self, name: str) -> Optional[torch.Tensor]:
        return getattr(self, name)[: self.active_width]

    def scale(self, name: str, on: bool) -> Optional[torch.Tensor]:
        return self.active_tensor(name) if on and getattr(self, name, None) is not None else None


def _layer_scale(dim: int, init: Optional[float]) -> Optional[nn.Parameter]:
    return nn.Parameter(init * torch.ones(dim)) if init is not None else None


def _scale(x: torch.Tensor, gamma: Optional[torch.Tensor]) -> torch.Tensor:
    return x if gamma is None else x * gamma


# ---------------------------------------------------------------------------------------------
# positional encodings (the MLPs are shared; coordinates follow the active geometry)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _coords(grid: tuple[int, int], ct_size: int, device: str) -> torch.Tensor:
    order = window_order(grid, ct_size) if ct_size else None
    return token_coords(grid, order).to(device)


@functools.lru_cache(maxsize=256)
def _rel_geometry(grid: tuple[int, int], ct_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    order = window_order(grid, ct_size) if ct_size else None
    table, index = rel_pos_geometry(grid, order)
    return table.to(device), index.to(device)


class ElasticCoordMLP(nn.Module):
    """Linear(2, 512) -> ReLU -> Linear(512, out): the first ``out`` outputs of the full MLP."""

    def __init__(self, out_features: int, hidden: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.act = nn.ReLU()
        self.fc2 = ElasticLinear(hidden, out_features, bias=False)

    def configure(self, out_features: int) -> None:
        self.fc2.configure(self.fc2.in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ElasticTokenPosEmbed(nn.Module):
    """``TokenPosEmbed`` over the active grid (window order of carrier tokens when ``ct_size``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = ElasticCoordMLP(dim)
        self.grid, self.ct_size = (1, 1), 0

    def configure(self, dim: int, grid: tuple[int, int], ct_size: int = 0) -> None:
        self.mlp.configure(dim)
        self.grid, self.ct_size = grid, ct_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = _coords(self.grid, self.ct_size, str(self.mlp.fc1.weight.device))
        return x + self.mlp(coords.to(self.mlp.fc1.weight.dtype)).unsqueeze(0)


class ElasticRelPosBias(nn.Module):
    """``RelPosBias`` for the active grid and heads (the first ``heads`` MLP outputs)."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.mlp = ElasticCoordMLP(num_heads)
        self.grid, self.ct_size, self.heads, self.num_prefix = (1, 1), 0, num_heads, 0

    def configure(self, heads: int, grid: tuple[int, int], num_prefix: int = 0, ct_size: int = 0) -> None:
        self.mlp.configure(heads)
        self.grid, self.ct_size, self.heads, self.num_prefix = grid, ct_size, heads, num_prefix

    def forward(self) -> torch.Tensor:
        table, index = _rel_geometry(self.grid, self.ct_size, str(self.mlp.fc1.weight.device))
        nq, nk = index.shape
        b = 16 * torch.sigmoid(self.mlp(table.to(self.mlp.fc1.weight.dtype)).t()[:, index.reshape(-1)]
                               .view(self.heads, nq, nk))
        p = self.num_prefix
        rows, cols = p + nq, p + nk
        out = b.new_zeros(self.heads, rows, -(-cols // _BIAS_ALIGN) * _BIAS_ALIGN)
        out[:, p:, p:cols] = b
        return out[None, :, :, :cols]


# ---------------------------------------------------------------------------------------------
# attention, MLP and blocks
# ---------------------------------------------------------------------------------------------
class ElasticAttention(nn.Module):
    """Multi-head self-attention on the active width and head count (same q/k/v weights)."""

    def __init__(self, dim: int, num_heads: int, attn_bias: bool, qkv_bias: bool):
        super().__init__()
        self.qkv = ElasticLinear(dim, 3 * dim, bias=qkv_bias, chunks=3)
        self.proj = ElasticLinear(dim, dim)
        self.rel_pos = ElasticRelPosBias(num_heads) if attn_bias else None
        self.heads, self.use_bias = num_heads, attn_bias

    def configure(self, dim: int, heads: int, grid: tuple[int, int], *, attn_bias: bool, num_prefix: int = 0,
                  ct_size: int = 0) -> None:
        self.qkv.configure(dim, 3 * dim)
        self.proj.configure(dim, dim)
        self.heads, self.use_bias = heads, attn_bias
        if self.rel_pos is not None:
            self.rel_pos.configure(heads, grid, num_prefix, ct_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        hd = C // self.heads
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_pos() if self.use_bias and self.rel_pos is not None else None  # present if usable
        out = _attend(q, k, v, bias, _use_fused(hd), hd**-0.5)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class ElasticMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = ElasticLinear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = ElasticLinear(hidden, dim)

    def configure(self, dim: int, hidden: int) -> None:
        self.fc1.configure(dim, hidden)
        self.fc2.configure(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@dataclass(frozen=True)
class _BlockSpec:
    """What one block of the active config is."""

    width: int
    heads: int
    hidden: int
    geom: StageGeometry
    ct_size: int
    drop_path: float
    layer_scale: bool
    propagate: bool
    attn_bias: bool
    pos_bias_1d: bool
    ct_attention: bool


class ElasticConvBlock(_Scales):
    """``ConvBlock`` on the active width."""

    def __init__(self, dim: int, layer_scale: Optional[float]):
        super().__init__()
        self.conv1 = ElasticConv2d(dim, dim, 3, 1, 1)
        self.norm1 = ElasticBatchNorm2d(dim, eps=1e-5)
        self.act = nn.GELU()
        self.conv2 = ElasticConv2d(dim, dim, 3, 1, 1)
        self.norm2 = ElasticBatchNorm2d(dim, eps=1e-5)
        self.gamma = _layer_scale(dim, layer_scale)
        self.use_scale, self.drop_path = layer_scale is not None, 0.0

    def configure(self, width: int, layer_scale: bool, drop_path_rate: float) -> None:
        self.conv1.configure(width, width)
        self.conv2.configure(width, width)
        self.norm1.configure(width)
        self.norm2.configure(width)
        self.active_width, self.use_scale, self.drop_path = width, layer_scale, drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        gamma = self.scale("gamma", self.use_scale)
        if gamma is not None:
            y = y * gamma.view(1, -1, 1, 1)
        return x + drop_path(y, self.drop_path, self.training)


class ElasticHATBlock(_Scales):
    """``HATBlock`` on the active config: width, heads, MLP width, window, carrier tokens, toggles."""

    def __init__(self, dim: int, num_heads: int, hidden: int, cap: Capacity, ct_modules: bool):
        super().__init__()
        ls = cap.layer_scale
        self.pos_embed = ElasticTokenPosEmbed(dim) if cap.pos_bias_1d else None
        self.norm1 = ElasticLayerNorm(dim)
        self.attn = ElasticAttention(dim, num_heads, cap.attn_bias, cap.qkv_bias)
        self.norm2 = ElasticLayerNorm(dim)
        self.mlp = ElasticMlp(dim, hidden)
        self.gamma_attn = _layer_scale(dim, ls)
        self.gamma_mlp = _layer_scale(dim, ls)
        self.ct_pos_embed = ElasticTokenPosEmbed(dim) if ct_modules and cap.pos_bias_1d else None
        self.ct_attn: Optional[ElasticAttention] = None
        if ct_modules and cap.ct_attention:
            self.ct_norm1 = ElasticLayerNorm(dim)
            self.ct_attn = ElasticAttention(dim, num_heads, cap.attn_bias, cap.qkv_bias)
            self.ct_norm2 = ElasticLayerNorm(dim)
            self.ct_mlp = ElasticMlp(dim, hidden)
        self.gamma_ct_attn = _layer_scale(dim, ls) if ct_modules else None
        self.gamma_ct_mlp = _layer_scale(dim, ls) if ct_modules and cap.ct_attention else None
        self.spec: Optional[_BlockSpec] = None

    def configure(self, spec: _BlockSpec) -> None:
        g, c = spec.geom, spec.width
        ws = g.window
        self.spec, self.active_width = spec, c
        if self.pos_embed is not None:
            self.pos_embed.configure(c, (ws, ws))
        self.norm1.configure(c)
        self.norm2.configure(c)
        self.attn.configure(c, spec.heads, (ws, ws), attn_bias=spec.attn_bias, num_prefix=g.ct_per_window)
        self.mlp.configure(c, spec.hidden)
        if not g.hat:
            return
        if self.ct_pos_embed is not None:
            self.ct_pos_embed.configure(c, g.ct_grid, spec.ct_size)
        if self.ct_attn is not None:
            self.ct_norm1.configure(c)
            self.ct_norm2.configure(c)
            self.ct_attn.configure(c, spec.heads, g.ct_grid, attn_bias=spec.attn_bias, ct_size=spec.ct_size)
            self.ct_mlp.configure(c, spec.hidden)

    def forward(self, x: torch.Tensor, ct: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = self.spec
        assert s is not None, "set_active(cfg) first"
        dp = functools.partial(drop_path, drop_prob=s.drop_path, training=self.training)
        ls = s.layer_scale
        if s.pos_bias_1d and self.pos_embed is not None:  # present whenever a config can use it (Capacity)
            x = self.pos_embed(x)
        has_ct = s.geom.hat
        num_ct = s.geom.ct_per_window
        if has_ct:
            assert ct is not None
            if s.pos_bias_1d and self.ct_pos_embed is not None:
                ct = self.ct_pos_embed(ct)
            if s.ct_attention and self.ct_attn is not None:
                ct = ct + dp(_scale(self.ct_attn(self.ct_norm1(ct)), self.scale("gamma_ct_attn", ls)))
                ct = ct + dp(_scale(self.ct_mlp(self.ct_norm2(ct)), self.scale("gamma_ct_mlp", ls)))
            b_ct, _, c = ct.shape
            x = torch.cat((ct.reshape(x.shape[0], num_ct, c), x), dim=1)
        x = x + dp(_scale(self.attn(self.norm1(x)), self.scale("gamma_attn", ls)))
        x = x + dp(_scale(self.mlp(self.norm2(x)), self.scale("gamma_mlp", ls)))
        if has_ct:
            ct_w, x = x.split((num_ct, x.shape[1] - num_ct), dim=1)
            if s.propagate:
                x = x + _scale(self._upsample(ct_w), self.scale("gamma_ct_attn", ls))
            ct = ct_w.reshape(b_ct, -1, c)
        return x, ct

    def _upsample(self, ct_w: torch.Tensor) -> torch.Tensor:
        assert self.spec is not None
        n, _, c = ct_w.shape
        k, ws = self.spec.ct_size, self.spec.geom.window
        img = ct_w.transpose(1, 2).reshape(n, c, k, k).float()
        up = F.interpolate(img, size=(ws, ws), mode="nearest")
        return up.flatten(2).transpose(1, 2).to(ct_w.dtype)


class ElasticCarrierTokenInit(nn.Module):
    """``CarrierTokenInit``: the depth-wise conv (3x3 = centre of 5x5) on the active width, then the
    generator's own pooling for the active geometry."""

    def __init__(self, dim: int, kernel_size: int, conv: bool):
        super().__init__()
        self.pos_conv = ElasticConv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim) if conv else None
        self.use_conv = conv
        self._pools: dict[tuple, CarrierTokenInit] = {}
        self._key: tuple = ()

    def configure(self, width: int, kernel: int, geom: StageGeometry, ct_size: int, conv: bool) -> None:
        if self.pos_conv is not None:
            self.pos_conv.configure(width, width, kernel)
        self.use_conv = conv
        self._key = (geom.padded, geom.ct_grid, ct_size)
        if self._key not in self._pools:  # no parameters: the generator's pooling rule, as is
            self._pools[self._key] = CarrierTokenInit(1, geom, ct_size, conv=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv and self.pos_conv is not None:
            x = self.pos_conv(x)
        return self._pools[self._key](x)


class ElasticDownsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = ElasticLayerNorm2d(dim)
        self.conv = ElasticConv2d(dim, 2 * dim, 3, 2, 1, bias=False)

    def configure(self, width: int) -> None:
        self.norm.configure(width)
        self.conv.configure(width, 2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class ElasticStem(nn.Module):
    def __init__(self, in_chans: int, in_dim: int, dim: int):
        super().__init__()
        self.conv1 = ElasticConv2d(in_chans, in_dim, 3, 2, 1, bias=False)
        self.norm1 = ElasticBatchNorm2d(in_dim, eps=1e-4)
        self.act1 = nn.ReLU()
        self.conv2 = ElasticConv2d(in_dim, dim, 3, 2, 1, bias=False)
        self.norm2 = ElasticBatchNorm2d(dim, eps=1e-4)
        self.act2 = nn.ReLU()

    def configure(self, in_chans: int, in_dim: int, dim: int) -> None:
        self.conv1.configure(in_chans, in_dim)
        self.norm1.configure(in_dim)
        self.conv2.configure(in_dim, dim)
        self.norm2.configure(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))


class ElasticConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, cap: Capacity, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ElasticConvBlock(dim, cap.layer_scale_conv) for _ in range(depth))
        self.downsample = ElasticDownsample(dim) if downsample else None
        self.depth = depth

    def configure(self, geom: StageGeometry, cfg: FasterViTConfig, rates: Sequence[float]) -> None:
        self.depth = cfg.depths[geom.index]
        for j in range(self.depth):
            blk = cast(ElasticConvBlock, self.blocks[j])  # built as such in __init__
            blk.configure(geom.width, cfg.layer_scale_conv is not None, rates[j])
        if self.downsample is not None:
            self.downsample.configure(geom.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks[: self.depth]:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class ElasticTransformerStage(nn.Module):
    def __init__(self, index: int, dim: int, depth: int, cap: Capacity, downsample: bool):
        super().__init__()
        ct = cap.hat[index]
        self.ct_init = ElasticCarrierTokenInit(dim, cap.ct_init_kernel, cap.ct_init) if ct else None
        self.blocks = nn.ModuleList(ElasticHATBlock(dim, cap.num_heads[index], cap.hidden(index), cap, ct)
                                    for _ in range(depth))
        self.downsample = ElasticDownsample(dim) if downsample else None
        self.depth, self.window, self.hat = depth, 1, False

    def configure(self, geom: StageGeometry, cfg: FasterViTConfig, rates: Sequence[float]) -> None:
        i = geom.index
        self.depth, self.window, self.hat = cfg.depths[i], geom.window, geom.hat
        if geom.hat and self.ct_init is not None:
            self.ct_init.configure(geom.width, cfg.ct_init_kernel, geom, cfg.ct_size, cfg.ct_init)
        for j in range(self.depth):
            blk = cast(ElasticHATBlock, self.blocks[j])  # built as such in __init__
            blk.configure(_BlockSpec(
                width=geom.width, heads=cfg.num_heads[i], hidden=int(geom.width * cfg.mlp_ratio), geom=geom,
                ct_size=cfg.ct_size, drop_path=rates[j], layer_scale=cfg.layer_scale is not None,
                propagate=cfg.do_propagation and geom.hat and j == self.depth - 1, attn_bias=cfg.attn_bias,
                pos_bias_1d=cfg.pos_bias_1d, ct_attention=cfg.ct_attention))
        if self.downsample is not None:
            self.downsample.configure(geom.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = pad_to_windows(x, self.window)
        ct = self.ct_init(x) if self.hat and self.ct_init is not None else None
        tokens = window_tokens(x, self.window)
        for blk in self.blocks[: self.depth]:
            tokens, ct = blk(tokens, ct)
        x = window_map(tokens, x.shape, self.window, H, W)
        return x if self.downsample is None else self.downsample(x)


ElasticStage = Union[ElasticConvStage, ElasticTransformerStage]


# ---------------------------------------------------------------------------------------------
# the supernet
# ---------------------------------------------------------------------------------------------
SpaceLike = Union[str, Mapping[str, Any], SearchSpace]
ResolutionLike = Union[int, tuple[int, int]]


class ElasticFasterViT(nn.Module):
    """The largest network of a search space, running any config of it on shared weights.

    Args:
        space: a search space (name, file, dict or ``SearchSpace``); its knobs must be elastic
            (``ELASTIC_KNOBS``), else ``SupernetError`` names the knob, its values and why.
        resolution: the training resolution R (default: the space's); configs are moved there with
            ``at_resolution`` (windows per side kept).
        num_classes: classes of the head (default: the space's).
    """

    def __init__(self, space: SpaceLike, resolution: Optional[ResolutionLike] = None,
                 num_classes: Optional[int] = None):
        super().__init__()
        self.space = load_space(space)
        self.capacity = cap = Capacity.of_space(self.space)
        base = self.space.apply({})
        self.resolution = as_resolution(resolution if resolution is not None else base.resolution, "resolution", 16)
        self.num_classes = base.num_classes if num_classes is None else num_classes
        self.stem = ElasticStem(cap.in_chans, cap.in_dim, cap.dim)
        stages: list[nn.Module] = []
        for i in range(NUM_STAGES):
            width, last = cap.dim * 2**i, i == NUM_STAGES - 1
            stages.append(ElasticConvStage(width, cap.depths[i], cap, not last) if i in CONV_STAGES
                          else ElasticTransformerStage(i, width, cap.depths[i], cap, not last))
        self.stages = nn.ModuleList(stages)
        nf = cap.dim * 2 ** (NUM_STAGES - 1)
        self.norm = ElasticLayerNorm2d(nf) if cap.layer_norm_last else ElasticBatchNorm2d(nf)
        self.head = ElasticLinear(nf, self.num_classes)
        self.active_config: Optional[FasterViTConfig] = None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:  # the generator's rule
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ configs
    def conform(self, cfg: Union[FasterViTConfig, str, Mapping[str, Any]]) -> FasterViTConfig:
        """``cfg`` at the supernet's resolution and class count, checked against its capacity."""
        cfg = resolve_config(cfg)
        if cfg.resolution != self.resolution:
            cfg = cfg.at_resolution(self.resolution)
        if cfg.num_classes != self.num_classes:
            cfg = cfg.replace(num_classes=self.num_classes)
        self.capacity.check(cfg)
        return cfg

    def set_active(self, cfg: Union[FasterViTConfig, str, Mapping[str, Any]]) -> FasterViTConfig:
        """Run ``cfg`` from now on (returns it at the supernet's resolution and class count).

        Stochastic depth follows ``cfg.drop_path_rate`` over the config's own blocks, as in the
        generator (a trainer passes 0 for the subnets it does not regularise).
        """
        cfg = self.conform(cfg)
        self.stem.configure(cfg.in_chans, cfg.in_dim, cfg.dim)
        n = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * j / (n - 1) if n > 1 else 0.0 for j in range(n)]
        for geom, module in zip(cfg.stages, self.stages):
            i = geom.index
            stage = cast(ElasticStage, module)  # built as one in __init__
            stage.configure(geom, cfg, dpr[sum(cfg.depths[:i]):sum(cfg.depths[: i + 1])])
        self.norm.configure(cfg.num_features)
        self.head.configure(cfg.num_features, self.num_classes)
        self.active_config = cfg
        return cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active_config is None:
            raise RuntimeError("ElasticFasterViT: call set_active(cfg) before forward")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.norm(x).mean(dim=(2, 3)))

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def extract(self, cfg: Union[FasterViTConfig, str, Mapping[str, Any]]) -> FasterViT:
        """A plain ``FasterViT`` of ``cfg`` (at the supernet's resolution) with the shared weights
        copied in (BatchNorm statistics as the supernet holds them; recalibrate first for a
        subnet's own). Loads strictly; the active config is left unchanged."""
        previous = self.active_config
        cfg = self.set_active(cfg)
        try:
            device = self.head.weight.device
            with torch.random.fork_rng(devices=[]):  # its throw-away init leaves the caller's RNG alone
                model = FasterViT(cfg)
            model.load_state_dict(self.active_state_dict(model.state_dict()), strict=True)
            return model.to(device).train(self.training)
        finally:
            if previous is not None:
                self.set_active(previous)

    def active_state_dict(self, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The active slices under the keys (and shapes) of a generator state dict ``like``."""
        out = {}
        for key, ref in like.items():
            module_name, leaf = key.rsplit(".", 1)
            try:
                module = self.get_submodule(module_name)
            except AttributeError:
                raise RuntimeError(f"extract: the supernet has no module {module_name!r} for {key}") from None
            t = module.active_tensor(leaf) if isinstance(module, Elastic) else getattr(module, leaf)
            if t is None or tuple(t.shape) != tuple(ref.shape):
                raise RuntimeError(f"extract: {key} is {None if t is None else tuple(t.shape)} in the supernet's "
                                   f"slice, {tuple(ref.shape)} in the generator")
            out[key] = t.detach().clone().cpu()
        return out


# ---------------------------------------------------------------------------------------------
# subnets of a space: the sandwich's extremes and random draws
# ---------------------------------------------------------------------------------------------
def config_params(cfg: FasterViTConfig) -> int:
    """Parameters of ``cfg`` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = FasterViT(cfg)
    return sum(p.numel() for p in model.parameters())


def _at(cfg: FasterViTConfig, resolution: Optional[tuple[int, int]]) -> Optional[FasterViTConfig]:
    try:
        return cfg.at_resolution(resolution) if resolution is not None else cfg
    except ValueError:
        return None


def _switched_on(cfg: FasterViTConfig) -> int:
    """How many on/off knobs are on (HAT stages, propagation, layer scales, toggles): the tie-break."""
    flags = [*cfg.hat, cfg.do_propagation, cfg.layer_scale is not None, cfg.layer_scale_conv is not None,
             cfg.attn_bias, cfg.pos_bias_1d, cfg.ct_attention, cfg.ct_init]
    return sum(bool(f) for f in flags)


def _walk_extremes(sp: SearchSpace, i: int, values: dict[str, Any], largest: bool,
                   res: Optional[tuple[int, int]], leaves: list[FasterViTConfig]) -> bool:
    """Collect the candidate extremes into ``leaves``; True when this branch gave a valid one.

    A monotone knob takes its most extreme value that still leads to a valid config (e.g. ``ct_size``
    3 does not fit a window of 2 at 64 px: 2 is tried next); other knobs branch over all values.
    """
    if len(leaves) >= _MAX_BRANCHES:
        return True
    if i == len(sp.knobs):
        try:
            cfg = _at(sp.apply(values), res)
        except ValueError:
            cfg = None
        if cfg is not None:
            leaves.append(cfg)
        return cfg is not None
    k = sp.knobs[i]
    if not sp.active(k, values):
        return _walk_extremes(sp, i + 1, values, largest, res, leaves)
    options = _knob_values(k)
    monotone = k.field in _MONOTONE
    if monotone:
        options = sorted(options, key=lambda v: -math.inf if v is None else float(v), reverse=largest)
    found = False
    for v in options:
        values[k.name] = v
        found = _walk_extremes(sp, i + 1, values, largest, res, leaves) or found
        del values[k.name]
        if monotone and found:
            break
    return found


def extreme_configs(space: SpaceLike, resolution: Optional[ResolutionLike] = None,
                    size: Callable[[FasterViTConfig], float] = config_params
                    ) -> tuple[FasterViTConfig, FasterViTConfig]:
    """(largest, smallest) config of ``space`` valid at ``resolution``: the sandwich rule's extremes.

    Knobs where more is bigger (widths, depths, heads, MLP ratio, ``ct_size``, kernel; on before
    off for HAT, propagation, layer scales and the toggles) take their largest / smallest value
    that still gives a valid config; the others (the window sizes) are tried in every combination
    the space's conditions allow, and the one with the most / fewest parameters (``size``) wins
    (ties: more / fewer knobs switched on, then the first listed; at most 256 combinations, in the
    space's order). Raises ``SupernetError`` when none is valid at ``resolution``.
    """
    sp = load_space(space)
    res = as_resolution(resolution, "resolution", 16) if resolution is not None else None
    out = []
    for largest in (True, False):
        leaves: list[FasterViTConfig] = []
        _walk_extremes(sp, 0, {}, largest, res, leaves)
        if not leaves:
            raise SupernetError(f"no {'largest' if largest else 'smallest'} config of space {sp.name!r} is valid at "
                                f"resolution {res}")
        keys = [(size(c), _switched_on(c)) for c in leaves]
        best = max if largest else min
        out.append(leaves[best(range(len(leaves)), key=keys.__getitem__)])
    return out[0], out[1]


def sample_subnet(space: SpaceLike, rng: np.random.Generator, resolution: Optional[ResolutionLike] = None,
                  tries: int = 100) -> FasterViTConfig:
    """A uniformly random config of ``space`` valid at ``resolution`` (draws again when one is not)."""
    sp = load_space(space)
    res = as_resolution(resolution, "resolution", 16) if resolution is not None else None
    for _ in range(tries):
        try:
            _, cfg = sp.sample_random(rng)
        except ValueError:
            continue
        moved = _at(cfg, res)
        if moved is not None:
            return moved
    raise SupernetError(f"{tries} random draws of space {sp.name!r} gave no config valid at resolution {res}")


def iter_elastic(model: nn.Module) -> Iterable[nn.Module]:
    """The elastic ops of a model."""
    return (m for m in model.modules() if isinstance(m, Elastic))
