"""Argument checks shared by ``search_spaces``' users, ``evaluators`` and ``nas``: one per kind of value.

They live here, below ``nas``, because evaluators must not import nas (one direction:
search_spaces -> evaluators -> nas). Bools are refused as numbers; every error reads
``NAME=VALUE must be RULE``, e.g. ``--workers=0 must be an integer >= 1`` or ``lr=0 must be in (0, 1]``.

``check_int`` and ``check_number`` are the two checks. ``at_least`` and ``in_range`` are their
former names, kept only as one-line aliases for the modules that still call them
(``evaluators.train``, ``evaluators.data``, ``evaluators.composed``, ``evaluators.profiler``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, overload

__all__ = ["check_int", "check_number", "at_least", "in_range"]


def _bound(low: Optional[float], high: Optional[float], low_open: bool = False, high_open: bool = False) -> str:
    """The rule of an interval as a person reads it: ``>= 1``, ``< 0.5``, ``in (0, 1]`` (bounds as given)."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


@overload
def check_int(name: str, value: Any, *, minimum: Optional[int] = ..., maximum: Optional[int] = ...,
              optional: Literal[False] = ...) -> int: ...


@overload
def check_int(name: str, value: Any, *, minimum: Optional[int] = ..., maximum: Optional[int] = ...,
              optional: bool) -> Optional[int]: ...


def check_int(name: str, value: Any, *, minimum: Optional[int] = None, maximum: Optional[int] = None,
              optional: bool = False) -> Optional[int]:
    """``value`` as an int in [minimum, maximum] (bools refused; None passes with ``optional``).

    ValueError otherwise: ``NAME=VALUE must be an integer >= MINIMUM`` (or ``<= MAXIMUM``, ``in [a, b]``).
    """
    if value is None and optional:
        return None
    bad_type = isinstance(value, bool) or not isinstance(value, int)
    if bad_type or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value!r} must be an integer{_bound(minimum, maximum)}")
    return int(value)


@overload
def check_number(name: str, value: Any, *, minimum: Optional[float] = ..., maximum: Optional[float] = ...,
                 low_open: bool = ..., high_open: bool = ..., optional: Literal[False] = ...) -> float: ...


@overload
def check_number(name: str, value: Any, *, minimum: Optional[float] = ..., maximum: Optional[float] = ...,
                 low_open: bool = ..., high_open: bool = ..., optional: bool) -> Optional[float]: ...


def check_number(name: str, value: Any, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, optional: bool = False) -> Optional[float]:
    """``value`` as a finite float in the interval from ``minimum`` to ``maximum`` (ends excluded with
    ``low_open`` / ``high_open``; bools refused; None passes with ``optional``).

    ValueError otherwise: ``NAME=VALUE must be a finite number`` or ``... must be > 0``, ``... in (0, 1]``.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number{_bound(minimum, maximum, low_open, high_open)}")
    too_low = minimum is not None and (value < minimum or (low_open and value == minimum))
    too_high = maximum is not None and (value > maximum or (high_open and value == maximum))
    if too_low or too_high:
        raise ValueError(f"{name}={value!r} must be{_bound(minimum, maximum, low_open, high_open)}")
    return float(value)


def at_least(name: str, value: Any, minimum: int = 1) -> int:
    """``check_int(name, value, minimum=minimum)`` (the former name)."""
    return check_int(name, value, minimum=minimum)


def in_range(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False,
             high_open: bool = False) -> float:
    """``check_number`` with ``low``/``high`` (the former name; the rule reads as an interval, ``(0, inf]``)."""
    return check_number(name, value, minimum=low, maximum=high, low_open=low_open, high_open=high_open)
