"""Named points of the design space: FasterViT-0..6 (paper Table S.4 / official definitions).

``register_preset`` adds one: a function returning a ``FasterViTConfig`` plus the decorator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Union

from .config import FasterViTConfig

__all__ = ["PRESETS", "register_preset", "resolve_config", "list_presets"]

PRESETS: dict[str, FasterViTConfig] = {}
_TIMM_PREFIX = "nas_"


def register_preset(fn: Callable[[], FasterViTConfig]) -> Callable[[], FasterViTConfig]:
    """Register ``fn()`` under ``fn.__name__``."""
    name = fn.__name__
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    cfg = fn()
    if not isinstance(cfg, FasterViTConfig):
        raise TypeError(f"preset {name!r} must return a FasterViTConfig, got {type(cfg).__name__}")
    PRESETS[name] = cfg
    return fn


_SMALL: dict[str, Any] = dict(window_size=(7, 7, 7, 7), ct_size=2, mlp_ratio=4.0, hat=(False, False, True, False))
_LARGE: dict[str, Any] = dict(_SMALL, layer_scale=1e-5, do_propagation=True)


@register_preset
def faster_vit_0_224() -> FasterViTConfig:
    return FasterViTConfig(dim=64, in_dim=64, depths=(2, 3, 6, 5), num_heads=(2, 4, 8, 16), drop_path_rate=0.2,
                           **_SMALL)


@register_preset
def faster_vit_1_224() -> FasterViTConfig:
    return FasterViTConfig(dim=80, in_dim=32, depths=(1, 3, 8, 5), num_heads=(2, 4, 8, 16), drop_path_rate=0.2,
                           **_SMALL)


@register_preset
def faster_vit_2_224() -> FasterViTConfig:
    return FasterViTConfig(dim=96, in_dim=64, depths=(3, 3, 8, 5), num_heads=(2, 4, 8, 16), drop_path_rate=0.2,
                           **_SMALL)


@register_preset
def faster_vit_3_224() -> FasterViTConfig:
    return FasterViTConfig(dim=128, in_dim=64, depths=(3, 3, 12, 5), num_heads=(2, 4, 8, 16), drop_path_rate=0.3,
                           **_LARGE)


@register_preset
def faster_vit_4_224() -> FasterViTConfig:
    return FasterViTConfig(dim=196, in_dim=64, depths=(3, 3, 12, 5), num_heads=(4, 8, 16, 32), drop_path_rate=0.3,
                           **_LARGE)


@register_preset
def faster_vit_5_224() -> FasterViTConfig:
    return FasterViTConfig(dim=320, in_dim=64, depths=(3, 3, 12, 5), num_heads=(4, 8, 16, 32), drop_path_rate=0.3,
                           **_LARGE)


@register_preset
def faster_vit_6_224() -> FasterViTConfig:
    return FasterViTConfig(dim=320, in_dim=64, depths=(3, 3, 16, 8), num_heads=(4, 8, 16, 32), drop_path_rate=0.5,
                           **_LARGE)


def _fv4_21k(resolution: int, w3: int, w4: int) -> FasterViTConfig:
    # ImageNet-21K FasterViT-4: one window per stage at its resolution, so no HAT.
    return faster_vit_4_224().replace(resolution=resolution, window_size=(7, 7, w3, w4), hat=(False,) * 4,
                                      drop_path_rate=0.42)


@register_preset
def faster_vit_4_21k_224() -> FasterViTConfig:
    return _fv4_21k(224, 14, 7)


@register_preset
def faster_vit_4_21k_384() -> FasterViTConfig:
    return _fv4_21k(384, 24, 12)


@register_preset
def faster_vit_4_21k_512() -> FasterViTConfig:
    return _fv4_21k(512, 32, 16)


@register_preset
def faster_vit_4_21k_768() -> FasterViTConfig:
    return _fv4_21k(768, 48, 24)


def list_presets() -> list[str]:
    return list(PRESETS)


def resolve_config(spec: Union[FasterViTConfig, str, Path, Mapping[str, Any]]) -> FasterViTConfig:
    """A config from a config, a preset name (``faster_vit_0_224`` or ``nas_faster_vit_0_224``),
    a JSON file path, or a dict."""
    if isinstance(spec, FasterViTConfig):
        return spec
    if isinstance(spec, Mapping):
        return FasterViTConfig.from_dict(spec)
    if isinstance(spec, (str, Path)):
        name = str(spec)
        key = name[len(_TIMM_PREFIX):] if name.startswith(_TIMM_PREFIX) else name
        if key in PRESETS:
            return PRESETS[key]
        path = Path(name)
        if path.suffix == ".json" or path.exists():
            if path.is_dir() and (path / "config.json").is_file():
                path = path / "config.json"
            return FasterViTConfig.load(path)
        raise ValueError(f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a config JSON file")
    raise TypeError(f"cannot make a FasterViTConfig from {type(spec).__name__}")
