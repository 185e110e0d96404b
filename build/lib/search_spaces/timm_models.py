"""timm registration: ``timm.create_model('nas_faster_vit_0_224')`` and ``'nas_faster_vit'``.

Names carry the ``nas_`` prefix so they never collide with the official package's
``faster_vit_*`` when both are installed. Importing ``search_spaces`` registers them.

    >>> import timm, search_spaces
    >>> m = timm.create_model("nas_faster_vit", config="faster_vit_0_224", num_classes=10)
    >>> m = timm.create_model("nas_faster_vit_0_224", pretrained=True,
    ...                       pretrained_cfg_overlay=dict(file="fastervit_0_224_1k.pth.tar"))
"""

from __future__ import annotations

from typing import Any, Optional

from timm.models import build_model_with_cfg, register_model

from .config import FasterViTConfig
from .fastervit import FasterViT, checkpoint_filter_fn
from .presets import PRESETS, resolve_config

__all__ = ["TIMM_NAMES"]

_OFFICIAL_URL = "https://huggingface.co/ahatamiz/FasterViT/resolve/main/"
_WEIGHTS = {
    "faster_vit_0_224": ("fastervit_0_224_1k.pth.tar", 0.875),
    "faster_vit_1_224": ("fastervit_1_224_1k.pth.tar", 1.0),
    "faster_vit_2_224": ("fastervit_2_224_1k.pth.tar", 1.0),
    "faster_vit_3_224": ("fastervit_3_224_1k.pth.tar", 1.0),
    "faster_vit_4_224": ("fastervit_4_224_1k.pth.tar", 1.0),
    "faster_vit_5_224": ("fastervit_5_224_1k.pth.tar", 1.0),
    "faster_vit_6_224": ("fastervit_6_224_1k.pth.tar", 1.0),
}


def _pretrained_cfg(cfg: FasterViTConfig, preset: Optional[str]) -> dict[str, Any]:
    url, crop = _WEIGHTS.get(preset or "", ("", 1.0))
    return dict(
        url=_OFFICIAL_URL + url if url else "",
        num_classes=cfg.num_classes,
        input_size=(cfg.in_chans, *cfg.resolution),
        pool_size=None,
        crop_pct=crop,
        interpolation="bicubic",
        fixed_input_size=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        first_conv="stem.conv1",
        classifier="head",
    )


def _make_entry(preset: str):
    def fn(pretrained: bool = False, **kwargs: Any) -> FasterViT:
        return _create(f"nas_{preset}", PRESETS[preset], preset, pretrained, **kwargs)

    fn.__name__ = f"nas_{preset}"
    fn.__qualname__ = fn.__name__
    fn.__doc__ = f"FasterViT preset {preset} from the nas generator."
    fn.__module__ = __name__
    return fn


def _resolution(img_size: Any) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def _create(variant: str, base: FasterViTConfig, preset: Optional[str], pretrained: bool, *,
            pretrained_cfg: Any = None, pretrained_cfg_overlay: Optional[dict] = None, cache_dir: Any = None,
            **kwargs: Any) -> FasterViT:
    """Apply config overrides (any FasterViTConfig field, or timm's ``img_size``) and build."""
    if kwargs.get("img_size") is not None:
        base = base.replace(resolution=_resolution(kwargs.pop("img_size")))
    kwargs.pop("img_size", None)
    known = {f for f in base.to_dict() if f != "schema_version"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown argument(s) for {variant}: {unknown}; config fields: {sorted(known)}")
    cfg = base.replace(**kwargs) if kwargs else base

    def ctor(**kw: Any) -> FasterViT:  # timm passes num_classes / in_chans / img_size back in
        if "img_size" in kw:
            kw["resolution"] = _resolution(kw.pop("img_size"))
        return FasterViT(cfg.replace(**kw) if kw else cfg)

    return build_model_with_cfg(
        ctor,
        variant,
        pretrained,
        pretrained_cfg=_pretrained_cfg(cfg, preset),
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        pretrained_filter_fn=checkpoint_filter_fn,
        cache_dir=cache_dir,
    )


TIMM_NAMES: list[str] = []
for _name in PRESETS:
    register_model(_make_entry(_name))
    TIMM_NAMES.append(f"nas_{_name}")


@register_model
def nas_faster_vit(pretrained: bool = False, config: Any = "faster_vit_0_224", **kwargs: Any) -> FasterViT:
    """Any point of the space: ``config`` is a FasterViTConfig, a dict, a JSON path or a preset name."""
    return _create("nas_faster_vit", resolve_config(config), None, pretrained, **kwargs)


TIMM_NAMES.append("nas_faster_vit")
