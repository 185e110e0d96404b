"""timm registration: ``timm.create_model('nas_faster_vit_0_224')`` and ``'nas_faster_vit'``.

Names carry the ``nas_`` prefix so they never collide with the official package's
``faster_vit_*`` when both are installed. Importing ``search_spaces`` registers them: one explicit
entrypoint per preset, default pretrained cfgs through ``generate_default_cfgs`` (the official
ImageNet-1K weights as ``.in1k``), ``features_only=True`` through the model's ``feature_info``.

    >>> import timm, search_spaces
    >>> m = timm.create_model("nas_faster_vit", config="faster_vit_0_224", num_classes=10)
    >>> m = timm.create_model("nas_faster_vit_0_224", pretrained=True,
    ...                       pretrained_cfg_overlay=dict(file="fastervit_0_224_1k.pth.tar"))
    >>> feats = timm.create_model("nas_faster_vit_0_224", features_only=True, out_indices=(1, 2, 3))
"""

from __future__ import annotations

from typing import Any, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model

from .config import FasterViTConfig, as_resolution
from .fastervit import FasterViT, checkpoint_filter_fn
from .presets import PRESETS, resolve_config

__all__ = ["TIMM_NAMES", "default_cfgs"]

_OFFICIAL_URL = "https://huggingface.co/ahatamiz/FasterViT/resolve/main/"


def _cfg(url: str = "", crop_pct: float = 1.0, resolution: int = 224, **kwargs: Any) -> dict[str, Any]:
    return dict(url=url, num_classes=1000, input_size=(3, resolution, resolution), pool_size=None,
                crop_pct=crop_pct, interpolation="bicubic", fixed_input_size=True, mean=IMAGENET_DEFAULT_MEAN,
                std=IMAGENET_DEFAULT_STD, first_conv="stem.conv1", classifier="head", **kwargs)


def _official(file: str, crop_pct: float) -> dict[str, Any]:
    return _cfg(url=_OFFICIAL_URL + file, crop_pct=crop_pct, license="NVIDIA Source Code License (official weights)")


default_cfgs = generate_default_cfgs({
    "nas_faster_vit_0_224.in1k": _official("fastervit_0_224_1k.pth.tar", 0.875),
    "nas_faster_vit_1_224.in1k": _official("fastervit_1_224_1k.pth.tar", 1.0),
    "nas_faster_vit_2_224.in1k": _official("fastervit_2_224_1k.pth.tar", 1.0),
    "nas_faster_vit_3_224.in1k": _official("fastervit_3_224_1k.pth.tar", 1.0),
    "nas_faster_vit_4_224.in1k": _official("fastervit_4_224_1k.pth.tar", 1.0),
    "nas_faster_vit_5_224.in1k": _official("fastervit_5_224_1k.pth.tar", 1.0),
    "nas_faster_vit_6_224.in1k": _official("fastervit_6_224_1k.pth.tar", 1.0),
    # 21K-pretrained FasterViT-4 architectures (weights not mapped here: no url)
    "nas_faster_vit_4_21k_224": _cfg(),
    "nas_faster_vit_4_21k_384": _cfg(resolution=384),
    "nas_faster_vit_4_21k_512": _cfg(resolution=512),
    "nas_faster_vit_4_21k_768": _cfg(resolution=768),
    "nas_faster_vit": _cfg(),  # any point of the space
})


def _create(variant: str, base: FasterViTConfig, pretrained: bool, *, pretrained_cfg: Any = None,
            pretrained_cfg_overlay: Optional[dict] = None, cache_dir: Any = None, **kwargs: Any) -> FasterViT:
    """Apply config overrides (any FasterViTConfig field, or timm's ``img_size``) and build."""
    if kwargs.get("img_size") is not None:
        base = base.replace(resolution=as_resolution(kwargs.pop("img_size"), "img_size"))
    kwargs.pop("img_size", None)
    timm_only = {k: kwargs.pop(k) for k in ("features_only", "out_indices", "feature_cls", "output_stride")
                 if k in kwargs}
    if timm_only.get("output_stride") not in (None, 32):
        raise ValueError(f"output_stride={timm_only['output_stride']}: FasterViT's output stride is 32 only")
    timm_only.pop("output_stride", None)
    known = {f for f in base.to_dict(full=True) if f != "schema_version"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unknown argument(s) for {variant}: {unknown}; config fields: {sorted(known)}")
    cfg = base.replace(**kwargs) if kwargs else base

    def ctor(**kw: Any) -> FasterViT:  # timm passes num_classes / in_chans / img_size back in
        if "img_size" in kw:
            kw["resolution"] = as_resolution(kw.pop("img_size"), "img_size")
        return FasterViT(cfg.replace(**kw) if kw else cfg)

    if pretrained_cfg is None:  # the registered default, with this config's input
        registered = get_pretrained_cfg(variant)
        assert registered is not None, f"{variant} is registered with timm by this module"
        pretrained_cfg = registered.to_dict()
        pretrained_cfg.update(num_classes=cfg.num_classes, input_size=(cfg.in_chans, *cfg.resolution))
    return build_model_with_cfg(
        ctor,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="hook"),  # stages are a ModuleList: hooks on feature_info's modules
        cache_dir=cache_dir,
        **timm_only,
    )


def _preset(name: str, pretrained: bool, kwargs: dict[str, Any]) -> FasterViT:
    return _create(f"nas_{name}", PRESETS[name], pretrained, **kwargs)


@register_model
def nas_faster_vit_0_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-0 (paper Table 1: 31.4M params, 3.3 GFLOPs, 82.1% top-1 at 224 px)."""
    return _preset("faster_vit_0_224", pretrained, kwargs)


@register_model
def nas_faster_vit_1_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-1 (paper Table 1: 53.4M params, 5.3 GFLOPs, 83.2% top-1)."""
    return _preset("faster_vit_1_224", pretrained, kwargs)


@register_model
def nas_faster_vit_2_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-2 (paper Table 1: 75.9M params, 8.7 GFLOPs, 84.2% top-1)."""
    return _preset("faster_vit_2_224", pretrained, kwargs)


@register_model
def nas_faster_vit_3_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-3 (paper Table 1: 159.5M params, 18.2 GFLOPs, 84.9% top-1)."""
    return _preset("faster_vit_3_224", pretrained, kwargs)


@register_model
def nas_faster_vit_4_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-4 (official code: 365.6M params; paper Table 1: 36.6 GFLOPs, 85.4% top-1)."""
    return _preset("faster_vit_4_224", pretrained, kwargs)


@register_model
def nas_faster_vit_5_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-5 (paper Table 1: 957.5M params, 113.0 GFLOPs, 85.6% top-1)."""
    return _preset("faster_vit_5_224", pretrained, kwargs)


@register_model
def nas_faster_vit_6_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-6 (paper Table 1: 1360M params, 142.0 GFLOPs, 85.8% top-1)."""
    return _preset("faster_vit_6_224", pretrained, kwargs)


@register_model
def nas_faster_vit_4_21k_224(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-4 as pre-trained on ImageNet-21K, at 224 px (one window per stage, no HAT)."""
    return _preset("faster_vit_4_21k_224", pretrained, kwargs)


@register_model
def nas_faster_vit_4_21k_384(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-4 (ImageNet-21K architecture) at 384 px (paper Table 2: 87.5% top-1)."""
    return _preset("faster_vit_4_21k_384", pretrained, kwargs)


@register_model
def nas_faster_vit_4_21k_512(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-4 (ImageNet-21K architecture) at 512 px."""
    return _preset("faster_vit_4_21k_512", pretrained, kwargs)


@register_model
def nas_faster_vit_4_21k_768(pretrained: bool = False, **kwargs: Any) -> FasterViT:
    """FasterViT-4 (ImageNet-21K architecture) at 768 px."""
    return _preset("faster_vit_4_21k_768", pretrained, kwargs)


@register_model
def nas_faster_vit(pretrained: bool = False, config: Any = "faster_vit_0_224", **kwargs: Any) -> FasterViT:
    """Any point of the space: ``config`` is a FasterViTConfig, a dict, a JSON path or a preset name."""
    return _create("nas_faster_vit", resolve_config(config), pretrained, **kwargs)


#: every timm name this module registers (one per preset, plus ``nas_faster_vit``)
TIMM_NAMES: list[str] = [f"nas_{name}" for name in PRESETS] + ["nas_faster_vit"]
