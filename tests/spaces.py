"""Tiny search spaces shared by the search, parallel, Ray and export tests (CPU: milliseconds a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: stage 3 has 2x2 windows of 2 with one carrier token each at 64 px
TINY_BASE: dict[str, Any] = dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                                 window_size=[2, 2, 2, 2], ct_size=1, num_classes=10)


def tiny_space(*, refused: bool = False, name: str = "tiny", base: dict | None = None,
               **knobs: dict[str, Any]) -> dict[str, Any]:
    """dim x depths[2] x ct_size; ``refused`` adds ct_size=3 (> window 2: the generator refuses it)."""
    default = {"dim": {"choices": [8, 16, 24]}, "depths[2]": {"choices": [1, 2]},
               "ct_size": {"choices": [1, 2, 3] if refused else [1, 2]}}
    return dict(name=name, base=dict(TINY_BASE, **(base or {})), knobs={**default, **knobs})


def write_space(path: Path, space: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path
