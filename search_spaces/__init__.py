"""What a network is: the FasterViT design space, its presets and the generator.

    >>> from search_spaces import PRESETS, build_model
    >>> model = build_model("faster_vit_0_224", num_classes=10)
"""

from . import timm_models  # noqa: F401  (registers nas_* names with timm)
from .config import CONV_STAGES, NUM_STAGES, SCHEMA_VERSION, FasterViTConfig, StageGeometry, as_resolution
from .fastervit import FasterViT, build_model, checkpoint_filter_fn, load_official_state_dict
from .gelu_epilogue import fuse_gelu_epilogue
from .io import load_model
from .padding import channel_padding_plan, pad_channels
from .presets import PRESETS, list_presets, register_preset, resolve_config

__all__ = [
    "as_resolution",
    "CONV_STAGES", "NUM_STAGES", "SCHEMA_VERSION", "FasterViTConfig", "StageGeometry", "FasterViT", "build_model",
    "checkpoint_filter_fn", "load_official_state_dict", "PRESETS", "list_presets", "register_preset",
    "resolve_config", "load_model", "pad_channels", "channel_padding_plan", "fuse_gelu_epilogue",
]
