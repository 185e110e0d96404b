"""Checks before an export is moved into place: every written format, loaded back, matches PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .base import CHECK_BATCH_SIZES, TOLERANCE, ExportError, _Context
from .formats import FORMATS, _torch_runner

__all__ = ["_verify"]


def _verify(ctx: _Context, folder: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Load every written format back and compare with the PyTorch model on random inputs."""
    import numpy as np

    reference = _torch_runner(ctx.model)
    runners = {name: FORMATS[name].runner(folder) for name in names}
    rows = []
    for batch in CHECK_BATCH_SIZES:
        x = ctx.example(batch).numpy()
        ref = reference(x)
        scale = max(1.0, float(np.abs(ref).max()))
        for name in names:
            for loader, run in runners[name].items():
                y = np.asarray(run(x))
                diff = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
                ok = diff <= TOLERANCE * scale
                rows.append(dict(format=name, loader=loader, batch_size=batch, max_abs_diff=diff,
                                 max_abs_output=float(np.abs(ref).max()), tolerance=TOLERANCE * scale, ok=ok))
                if not ok:
                    raise ExportError(f"{name} ({loader}) at batch {batch} differs from PyTorch by {diff:.3g} "
                                      f"(> {TOLERANCE * scale:.3g}); nothing was written")
    return rows

