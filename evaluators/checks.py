"""Argument checks shared by ``evaluators`` and ``nas`` (re-exported by ``nas.settings``).

They live here, below ``nas``, because evaluators must not import nas (one direction:
search_spaces -> evaluators -> nas). Bools are refused as numbers; every error names the
argument, its value and the rule.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["check_int", "check_number", "at_least", "in_range"]


def check_int(name: str, value: Any, *, minimum: Optional[int] = None, maximum: Optional[int] = None,
              optional: bool = False) -> Optional[int]:
    """``value`` as an int within [minimum, maximum] (bools refused), else ValueError naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value!r} must be <= {maximum}")
    return value


def check_number(name: str, value: Any, *, positive: bool = False, minimum: Optional[float] = None,
                 optional: bool = False) -> Optional[float]:
    """``value`` as a finite float (> 0 with ``positive``; >= minimum), else ValueError naming ``name``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if positive and not value > 0:
        raise ValueError(f"{name}={value!r} must be > 0")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum:g}")
    return float(value)


def at_least(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools refused): "NAME=V must be an integer >= MINIMUM"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def in_range(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False,
             high_open: bool = False) -> float:
    """``value`` as a finite float in the interval [low, high] (open ends with ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name}={value!r} must be in {lo}{low}, {high}{hi}")
    return float(value)
