"""The architecture config of one FasterViT: a frozen, validated, JSON-serialisable dataclass.

Every knob of the generator lives here. A config that would fail or silently mis-shape at run
time is refused at construction with a ``ValueError`` that names the knob, its value and the rule,
so a search can record the reason instead of crashing inside ``forward``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .files import loads_json, read_text

__all__ = ["as_resolution", "FasterViTConfig", "StageGeometry", "SCHEMA_VERSION", "CONV_STAGES", "NUM_STAGES",
           "ATTENTIONS", "STEMS", "HASHED_WHEN_CHANGED"]

SCHEMA_VERSION = 1
NUM_STAGES = 4
#: Stages 1-2 are dense residual conv blocks, stages 3-4 transformer blocks (as in the paper).
CONV_STAGES = (0, 1)
#: Attention of stages 3-4: the paper's HAT, or one of the alternatives of its Table 6.
ATTENTIONS = ("hat", "twins", "edgevit")
#: Patch embedding: the paper's two stride-2 convs, or the hybrid (conv + patchify) stem.
STEMS = ("conv", "hybrid")
#: Knobs added after arch ids were first published, with their defaults. ``to_dict`` (so config
#: files, study records and the ``arch_id`` hash) carries such a knob only when it differs from
#: its default: every config written before these knobs existed keeps its JSON and its id (saved
#: studies refer to both), and a default-valued config reads in older versions too.
HASHED_WHEN_CHANGED: dict[str, Any] = dict(
    attn_bias=True, pos_bias_1d=True, ct_attention=True, ct_init=True, attention="hat", ct_gate=False,
    stem="conv", window_overlap=0)


def _conv_out(size: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution."""
    return (size - 1) // 2 + 1


@dataclass(frozen=True)
class StageGeometry:
    """Where the tokens of one stage are: feature map, padding, windows and carrier tokens."""

    index: int
    width: int
    feature: tuple[int, int]  # (H, W) of the feature map entering the stage
    padded: tuple[int, int]  # (H, W) after padding up to a multiple of the window (transformer)
    window: int
    windows: tuple[int, int]  # windows along (H, W); (1, 1) means global attention
    transformer: bool
    hat: bool  # carrier tokens are used (HAT flag and more than one window)
    ct_grid: tuple[int, int]  # carrier tokens of the whole map along (H, W); (0, 0) without HAT
    ct_per_window: int
    overlap: int = 0  # halo pixels each side of a window (window_overlap; 0 with a single window)
    attention: str = "hat"  # "hat", "twins" or "edgevit" (transformer stages)

    @property
    def tokens_per_window(self) -> int:
        return self.window * self.window if self.transformer else 0

    @property
    def num_windows(self) -> int:
        return self.windows[0] * self.windows[1]

    @property
    def num_carrier_tokens(self) -> int:
        return self.ct_grid[0] * self.ct_grid[1]


def as_resolution(value: Any, name: str = "resolution", minimum: int = 1, why: str = "") -> tuple[int, int]:
    """``value`` (an int or a (height, width) pair of ints) as (height, width), each >= ``minimum``.

    The one resolution normaliser of the three packages (config, timm ``img_size``, data, profiler);
    errors name the knob (``name``), the value and the rule (``why``: the reason for ``minimum``).
    """
    pair = isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2
    if isinstance(value, bool) or not (isinstance(value, int) or pair):
        raise ValueError(f"{name}={value!r} must be an integer or (height, width)")
    res: tuple[int, int] = (value, value) if isinstance(value, int) else (value[0], value[1])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in res):
        raise ValueError(f"{name}={value!r} must be an integer or (height, width) of integers")
    for axis, v in zip(("height", "width"), res):
        if v < minimum:
            raise ValueError(f"{name} {axis}={v} must be >= {minimum}" + (f" ({why})" if why else ""))
    return res


def _tuple(value: Any, n: int, name: str, kind: type) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name}={value!r} must be a list of {n} values")
    if len(value) != n:
        raise ValueError(f"{name}={list(value)!r} must have exactly {n} values (one per stage), got {len(value)}")
    out = []
    for i, v in enumerate(value):
        if kind is bool:
            if not isinstance(v, bool):
                raise ValueError(f"{name}[{i}]={v!r} must be true or false")
        elif kind is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name}[{i}]={v!r} must be an integer")
        out.append(v)
    return tuple(out)


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


@dataclass(frozen=True)
class FasterViTConfig:
    """One point of the FasterViT design space.

    FasterViT-0..6 are points of this space (see ``search_spaces.PRESETS``). Change a config with
    ``dataclasses.replace`` (validation runs again); ``arch_id`` hashes it.

    Ablation knobs (paper, arXiv 2306.06189, Table S.2 on FasterViT-2; "off" removes one component
    and everything else stays; defaults are the paper's model):

    - ``attn_bias``: the relative position bias of every attention (the SwinV2-style MLP over
      log-spaced offsets). Off: attention logits get no positional term.
    - ``pos_bias_1d``: the absolute positional MLP added to the local tokens of each window and to
      the carrier tokens at every block (the "1D pos bias" row). Off: no absolute position term.
    - ``ct_attention``: step (1) of a HAT block, the carrier tokens of all windows attending to
      each other (with its MLP). Off: carrier tokens are still made, join their window's attention
      and are propagated, but never exchange information across windows.
    - ``ct_init``: the convolutional carrier-token initialisation, Sec. 3.3 of the paper
      (x_c = Conv3x3(x), x_ct = AvgPool(x_c)). Off: carrier tokens are the plain average pool of
      the window features, with no positional convolution. (Table S.2 also removes it from a
      trained model, -0.48: only pooling can remain then, so that is what "off" is.)

    Attention of stages 3-4 (paper Table 6): ``attention`` = ``hat`` (default) | ``twins`` |
    ``edgevit`` (see ``search_spaces.fastervit`` for each, with its paper). Only ``hat`` has
    carrier tokens, so the other two need ``hat`` false in every stage.

    Proposals of the course reproduction: ``ct_gate`` (a learned, input-dependent scale of the
    carrier tokens' influence on the window tokens; needs a stage with carrier tokens), ``stem`` =
    ``conv`` | ``hybrid`` (conv stem plus a patchify branch), ``window_overlap`` (k halo pixels on
    each side of every window as extra keys, masked outside the map; needs ``hat`` attention and
    k < the window of every stage with more than one window).

    Example:
        >>> cfg = FasterViTConfig(dim=32, in_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
        ...                       window_size=(4, 4, 4, 2), resolution=64, num_classes=10)
        >>> FasterViTConfig.from_json(cfg.to_json()) == cfg
        True
    """

    resolution: tuple[int, int] = (224, 224)  # an int N is accepted and stored as (N, N)
    in_chans: int = 3
    num_classes: int = 1000
    in_dim: int = 64
    dim: int = 64
    depths: tuple[int, int, int, int] = (2, 3, 6, 5)
    num_heads: tuple[int, int, int, int] = (2, 4, 8, 16)
    window_size: tuple[int, int, int, int] = (7, 7, 7, 7)
    ct_size: int = 2
    ct_init_kernel: int = 3
    mlp_ratio: float = 4.0
    hat: tuple[bool, bool, bool, bool] = (False, False, True, False)
    do_propagation: bool = False
    layer_scale: Optional[float] = None
    layer_scale_conv: Optional[float] = None
    layer_norm_last: bool = False
    qkv_bias: bool = True
    drop_path_rate: float = 0.2
    # --- the paper's ablations (Table S.2), its attention alternatives (Table 6), proposals ----
    attn_bias: bool = True
    pos_bias_1d: bool = True
    ct_attention: bool = True
    ct_init: bool = True
    attention: str = "hat"
    ct_gate: bool = False
    stem: str = "conv"
    window_overlap: int = 0
    _geometry: tuple = field(default=(), init=False, repr=False, compare=False, hash=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("resolution", as_resolution(self.resolution, "resolution", 16,
                                         "four stride-2 stages need a 1x1 map at least"))
        _int(self.in_chans, "in_chans", 1)
        _int(self.num_classes, "num_classes", 0)
        _int(self.in_dim, "in_dim", 1)
        _int(self.dim, "dim", 1)
        depths = _tuple(self.depths, NUM_STAGES, "depths", int)
        heads = _tuple(self.num_heads, NUM_STAGES, "num_heads", int)
        windows = _tuple(self.window_size, NUM_STAGES, "window_size", int)
        hat = _tuple(self.hat, NUM_STAGES, "hat", bool)
        set_("depths", depths), set_("num_heads", heads), set_("window_size", windows), set_("hat", hat)
        for i in range(NUM_STAGES):
            if depths[i] < 1:
                raise ValueError(f"depths[{i}]={depths[i]} must be >= 1")
            if heads[i] < 1:
                raise ValueError(f"num_heads[{i}]={heads[i]} must be >= 1")
            if windows[i] < 1:
                raise ValueError(f"window_size[{i}]={windows[i]} must be >= 1")
        _int(self.ct_size, "ct_size", 1)
        _int(self.ct_init_kernel, "ct_init_kernel", 1)
        if self.ct_init_kernel % 2 == 0:
            raise ValueError(f"ct_init_kernel={self.ct_init_kernel} must be odd (padded by k//2 so the map keeps its "
                             f"size)")
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} must be a finite number")
        set_("mlp_ratio", float(self.mlp_ratio))
        for name in ("do_propagation", "layer_norm_last", "qkv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        for name in ("layer_scale", "layer_scale_conv"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                    raise ValueError(f"{name}={v!r} must be null (off) or a positive number")
                set_(name, float(v))
        d = self.drop_path_rate
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
            raise ValueError(f"drop_path_rate={d!r} must be in [0, 1)")
        set_("drop_path_rate", float(d))
        self._check_knob_types()
        set_("_geometry", self._compute_geometry())
        self._check_knob_rules()

    def _check_knob_types(self) -> None:
        for name in ("attn_bias", "pos_bias_1d", "ct_attention", "ct_init", "ct_gate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        for name, allowed in (("attention", ATTENTIONS), ("stem", STEMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {', '.join(map(repr, allowed))}")
        _int(self.window_overlap, "window_overlap", 0)
        if self.attention != "hat":
            for i, h in enumerate(self.hat):
                if h:
                    raise ValueError(f"hat[{i}]=true needs attention='hat': attention={self.attention!r} replaces "
                                     f"hierarchical attention in stages 3-4 (no carrier tokens); set hat to false")

    def _check_knob_rules(self) -> None:
        """Rules between knobs that need the geometry (which stages have carrier tokens, windows)."""
        has_ct = any(g.hat for g in self.stages)
        for name, value in (("ct_gate", True), ("ct_attention", False), ("ct_init", False)):
            if getattr(self, name) == value and not has_ct:
                raise ValueError(
                    f"{name}={str(value).lower()} needs carrier tokens, but no stage has HAT with more than one "
                    f"window (hat={[h for h in self.hat]}, windows per stage "
                    f"{[g.windows for g in self.stages if g.transformer]}, attention={self.attention!r})")
        k = self.window_overlap
        if not k:
            return
        if self.attention != "hat":
            raise ValueError(f"window_overlap={k} needs attention='hat' (halo keys are added to the window "
                             f"attention of HAT stages), got attention={self.attention!r}")
        windowed = [g for g in self.stages if g.transformer and g.num_windows > 1]
        if not windowed:
            raise ValueError(f"window_overlap={k} has no effect: no transformer stage has more than one window "
                             f"(window_size={list(self.window_size)} at resolution {list(self.resolution)})")
        for g in windowed:
            if k >= g.window:
                raise ValueError(f"window_overlap={k} must be < window_size[{g.index}]={g.window}: the halo reaches "
                                 f"into the neighbouring windows only")

    def _compute_geometry(self) -> tuple[StageGeometry, ...]:
        h, w = self.resolution
        h, w = _conv_out(_conv_out(h)), _conv_out(_conv_out(w))  # stem: two stride-2 convs
        out = []
        for i in range(NUM_STAGES):
            width = self.dim * 2**i
            ws = self.window_size[i]
            if i in CONV_STAGES:
                if self.hat[i]:
                    raise ValueError(f"hat[{i}]=true is not allowed: stage {i + 1} is a conv stage (HAT exists only "
                                     f"in stages 3-4)")
                out.append(StageGeometry(i, width, (h, w), (h, w), ws, (1, 1), False, False, (0, 0), 0))
            else:
                if width % self.num_heads[i]:
                    raise ValueError(
                        f"num_heads[{i}]={self.num_heads[i]} must divide the stage-{i + 1} width {width} (dim*2^{i})")
                if ws < 2:
                    raise ValueError(f"window_size[{i}]={ws} must be >= 2 in transformer stage {i + 1}")
                if ws > h or ws > w:
                    raise ValueError(
                        f"window_size[{i}]={ws} exceeds the stage-{i + 1} feature map {h}x{w} at resolution "
                        f"{self.resolution[0]}x{self.resolution[1]}: the window would be mostly padding; "
                        f"use <= {min(h, w)}")
                ph, pw = -(-h // ws) * ws, -(-w // ws) * ws
                nh, nw = ph // ws, pw // ws
                hat = self.hat[i] and (nh > 1 or nw > 1)
                if hat and self.ct_size > ws:
                    raise ValueError(
                        f"ct_size={self.ct_size} must be <= window_size[{i}]={ws}: carrier tokens are pooled from "
                        f"each window")
                ct_grid = (self.ct_size * nh, self.ct_size * nw) if hat else (0, 0)
                overlap = self.window_overlap if nh * nw > 1 else 0
                out.append(StageGeometry(i, width, (h, w), (ph, pw), ws, (nh, nw), True, hat, ct_grid,
                                         self.ct_size**2 if hat else 0, overlap, self.attention))
                hidden = int(width * self.mlp_ratio)
                if hidden < 1:
                    raise ValueError(f"mlp_ratio={self.mlp_ratio} gives an empty MLP (int({width}*{self.mlp_ratio})=0) "
                                     f"in stage {i + 1}")
            if i < NUM_STAGES - 1:
                h, w = _conv_out(h), _conv_out(w)
        return tuple(out)

    # ------------------------------------------------------------------ derived facts
    @property
    def stages(self) -> tuple[StageGeometry, ...]:
        """Per-stage geometry (feature sizes, windows, carrier tokens) at ``resolution``."""
        return self._geometry

    @property
    def num_features(self) -> int:
        return self.dim * 2 ** (NUM_STAGES - 1)

    @property
    def arch_id(self) -> str:
        """A short stable hash of the architecture (all knobs but ``num_classes`` and ``drop_path_rate``).

        Knobs of ``HASHED_WHEN_CHANGED`` enter only when they differ from their defaults (as in
        ``to_dict``), so configs written before those knobs existed keep their ids.
        """
        d = self.to_dict()
        for k in ("num_classes", "drop_path_rate", "schema_version"):
            d.pop(k, None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` of it gives an equal config.

        Knobs of ``HASHED_WHEN_CHANGED`` at their defaults are left out unless ``full``.
        """
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            v = getattr(self, f.name)
            if not full and f.name in HASHED_WHEN_CHANGED and v == HASHED_WHEN_CHANGED[f.name]:
                continue
            if f.name == "resolution":
                v = v[0] if v[0] == v[1] else list(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FasterViTConfig":
        """Build from a dict (as written by ``to_dict``); unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a FasterViT config must be a mapping, got {type(data).__name__}")
        data = dict(data)  # never mutate the caller's dict
        version = data.pop("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version={version!r} is not supported (this version reads {SCHEMA_VERSION})")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(names)}")
        return cls(**data)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "FasterViTConfig":
        try:
            data = loads_json(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "FasterViTConfig":
        text = read_text(path, "a config JSON file (or a model folder with config.json)")
        try:
            return cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def replace(self, **changes: Any) -> "FasterViTConfig":
        """``dataclasses.replace`` as a method; the result is validated again."""
        return dataclasses.replace(self, **changes)

    def at_resolution(self, resolution: Union[int, tuple[int, int]]) -> "FasterViTConfig":
        """The same architecture at another input size, keeping each stage's windows per side.

        Window sizes of transformer stages are rescaled (at least 2) so that, e.g., FasterViT-0's
        2x2 windows of 7 at 224 become 2x2 windows of 4 at 128. Raises ``ValueError`` when the
        result is invalid (e.g. ``ct_size`` larger than the new window).
        """
        res = as_resolution(resolution)
        if res == self.resolution:
            return self
        probe = self.replace(resolution=res, window_size=(1, 1, 2, 2), hat=(False,) * NUM_STAGES,
                                    ct_gate=False, ct_attention=True, ct_init=True, window_overlap=0)
        windows = list(self.window_size)
        for old, new in zip(self.stages, probe.stages):
            if not old.transformer:
                continue
            per_side = max(old.windows)
            windows[old.index] = max(2, -(-max(new.feature) // per_side))
        try:
            return self.replace(resolution=res, window_size=tuple(windows))
        except ValueError as e:
            raise ValueError(f"cannot move {self.summary()} to resolution {res}: {e}") from None

    def summary(self) -> str:
        """One line that tells configs apart in tables."""
        res = self.resolution
        r = f"{res[0]}" if res[0] == res[1] else f"{res[0]}x{res[1]}"
        hat = "".join("H" if h else "-" for h in self.hat)
        return (f"r{r} d{self.dim}/{self.in_dim} depth{'-'.join(map(str, self.depths))} "
                f"heads{'-'.join(map(str, self.num_heads))} w{'-'.join(map(str, self.window_size))} "
                f"ct{self.ct_size}k{self.ct_init_kernel} mlp{self.mlp_ratio:g} hat[{hat}]"
                f"{' prop' if self.do_propagation else ''}{self._knob_summary()}")

    def _knob_summary(self) -> str:
        """Non-default ablation/proposal knobs, e.g. ' -attn_bias twins overlap1'."""
        parts = []
        for name in ("attn_bias", "pos_bias_1d", "ct_attention", "ct_init"):
            if not getattr(self, name):
                parts.append(f"-{name}")
        if self.attention != "hat":
            parts.append(self.attention)
        if self.ct_gate:
            parts.append("ct_gate")
        if self.stem != "conv":
            parts.append(f"stem:{self.stem}")
        if self.window_overlap:
            parts.append(f"overlap{self.window_overlap}")
        return "".join(" " + p for p in parts)
