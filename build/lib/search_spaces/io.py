"""Saving and loading a generated FasterViT as a folder: ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from .config import FasterViTConfig
from .fastervit import FasterViT, checkpoint_filter_fn

__all__ = ["load_model", "save_weights", "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_weights(model: FasterViT, path: Union[str, Path]) -> Path:
    """Write the model's state dict as safetensors (contiguous CPU copies; no pickles)."""
    from safetensors.torch import save_file

    if getattr(model, "deployed", False):
        raise ValueError("save the model before switch_to_deploy(): deployed models have BatchNorm folded away")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    save_file(state, str(path), metadata={"format": "pt", "arch": "nas.FasterViT"})
    return path


def load_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> FasterViT:
    """Load a model folder written by ``nas export`` (or ``save_weights`` + ``config.save``).

    The folder needs ``config.json``; ``model.safetensors`` is loaded strictly when present.
    """
    path = Path(path)
    cfg_file = path / CONFIG_FILE if path.is_dir() else path
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {path}: expected a folder written by `nas export`")
    cfg = FasterViTConfig.load(cfg_file)
    model = FasterViT(cfg)
    weights = cfg_file.parent / WEIGHTS_FILE
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights), device=str(map_location))
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    return model.to(map_location)
