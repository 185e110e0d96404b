"""What a person reads for each objective: one function, used by the study's metric names (so
optuna-dashboard shows them), the CLI tables, the HTML/PNG axes, ``nas pareto --json`` and the export
model card. Values stay raw (params count, MACs); ``display_scale`` says how plots show them.

The accuracy's label is its estimator's (``evaluators.estimators.AccuracyEstimator.label``): trained
accuracy reads "top-1 % (train, N epochs, DATA)", a zero-cost proxy "NAME score".
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from search_spaces.space import load_space

from .deploy_steps import deploy_steps
from .estimators import estimator_label
from .objectives import OBJECTIVES

__all__ = ["objective_label", "metric_labels", "deploy_steps", "display_scale", "format_value"]

_DISPLAY_SCALE = {"params": (1e6, "params (M)"), "flops": (1e9, "GFLOPs (fvcore GMACs, 1 image)")}


def objective_label(name: str, settings: Optional[Mapping[str, Any]] = None, *,
                    resolution: Optional[int] = None, accuracy: Optional[str] = None) -> str:
    """The label of objective ``name`` in a study run with ``settings`` (a ``SearchSettings.to_dict()``).

    Accuracy reads ``accuracy`` (the estimator's label), else the label of the estimator the
    settings name; throughput names batch, resolution, dtype, profiler mode and the deploy steps
    (``--pad-channels``, ``--gelu-epilogue``). ``resolution``: the measured input size (default: the fixed resolution of
    the settings' space, when it can be read).
    """
    s = dict(settings or {})
    if name == "accuracy":
        return accuracy if accuracy is not None else estimator_label(s)
    res = resolution if resolution is not None else _space_resolution(s.get("space"))
    steps = ", ".join(deploy_steps(s)) or None
    if name == "throughput":
        parts = [f"batch {s['batch_size']}" if s.get("batch_size") else None, f"{res} px" if res else None,
                 s.get("dtype"), s.get("profile_mode"), steps]
        return f"throughput, img/s ({', '.join(p for p in parts if p)})"
    if name == "latency":
        parts = ["batch 1", f"{res} px" if res else None, s.get("dtype"), s.get("profile_mode"), steps]
        return f"latency, ms ({', '.join(p for p in parts if p)})"
    if name in ("predicted_throughput", "predicted_latency"):
        base = objective_label(name[len("predicted_"):], s, resolution=res)
        return f"{base[:-1]}, predicted by {s.get('predictor') or '?'})" if base.endswith(")") else f"{base}, predicted"
    if name == "memory":
        return f"peak GPU memory, MB (batch {s.get('batch_size') or '?'}{', ' + steps if steps else ''})"
    if name == "params":
        return "params (count)"
    if name == "flops":
        return f"FLOPs (fvcore MACs, 1 image{f', {res} px' if res else ''})"
    obj = OBJECTIVES.get(name)
    return f"{name} ({obj.unit})" if obj else name


def metric_labels(names: Sequence[str], settings: Optional[Mapping[str, Any]] = None, **kw: Any) -> list[str]:
    """``objective_label`` of each name (the study's metric names)."""
    return [objective_label(n, settings, **kw) for n in names]


def display_scale(name: str, label: str) -> tuple[float, str]:
    """(divisor, axis title) for plotting raw values: params in M, FLOPs in G; others as they are."""
    if name in _DISPLAY_SCALE:
        return _DISPLAY_SCALE[name][0], label.replace("params (count)", "params (M)").replace(
            "FLOPs (fvcore MACs", "GFLOPs (fvcore GMACs")
    return 1.0, label


def format_value(name: str, value: Optional[float], *, suffix: bool = True) -> str:
    """A value as a person reads it: 12.3 M params, 4.56 GFLOPs, 5,802 img/s, 4 significant digits otherwise
    (``suffix=False``: no " M"/" G", for a column whose title says the unit, see ``display_scale``)."""
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:
        return "nan"
    if name == "params":
        return f"{value / 1e6:.2f}" + (" M" if suffix else "")
    if name == "flops":
        return f"{value / 1e9:.2f}" + (" G" if suffix else "")
    if name == "throughput":
        return f"{value:,.0f}"
    if name in ("latency", "memory"):
        return f"{value:,.2f}"
    return f"{value:.4g}"


def _space_resolution(space: Any) -> Optional[int]:
    """The fixed input resolution of a named space (None when it is a knob or cannot be read)."""
    if not isinstance(space, str):
        return None
    try:
        sp = load_space(space)
    except (ValueError, OSError):  # a space file that is gone: the label goes without resolution
        return None
    if any(k.name == "resolution" for k in sp.knobs):
        return None
    h, w = sp.apply({}).resolution
    return h if h == w else None
