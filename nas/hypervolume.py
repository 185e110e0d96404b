"""Exact hypervolume of a point set (minimisation), with no private Optuna import.

Optuna 5 computes hypervolumes only in a private module (``optuna._hypervolume``, WFG), which may
change without notice; the public ``optuna.visualization.plot_hypervolume_history`` draws a figure
and returns no number. Studies here have 2-4 objectives and at most a few thousand trials, so an
exact slicing algorithm (HSO: While et al., "A faster algorithm for calculating hypervolume", IEEE
TEVC 2006) is small and fast enough: 2-D by a sweep (O(n log n)), higher dimensions by slicing the
last objective into slabs and summing slab height x (d-1)-D hypervolume. Tests compare it with
Optuna's private implementation on random fronts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["compute_hypervolume", "dominates", "non_dominated"]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when loss vector ``a`` is no worse than ``b`` everywhere and better somewhere (minimisation)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (minimisation) that no other row dominates; duplicates kept once."""
    pts = np.unique(np.asarray(points, dtype=float), axis=0)
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        others = np.delete(pts, i, axis=0)
        keep[i] = not np.any(np.all(others <= p, axis=1) & np.any(others < p, axis=1))
    return pts[keep]


def compute_hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` (n x d, minimisation) and bounded by ``reference`` (d).

    Points not strictly better than the reference in every objective add nothing and are ignored.
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(_hso(non_dominated(pts), ref))


def _hso(pts: np.ndarray, ref: np.ndarray) -> float:
    d = pts.shape[1]
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _sweep_2d(pts, ref)
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        height = top - pts[i, -1]
        if height > 0:
            total += height * _hso(non_dominated(pts[: i + 1, :-1]), ref[:-1])
    return total


def _sweep_2d(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area by a sweep along the first objective, keeping the best second objective so far."""
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    area, best_y = 0.0, ref[1]
    for k in range(len(pts)):
        x, y = pts[k]
        nxt = pts[k + 1, 0] if k + 1 < len(pts) else ref[0]
        best_y = min(best_y, y)
        area += (nxt - x) * (ref[1] - best_y)
    return area
