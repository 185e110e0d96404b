"""Objectives and constraints of a search, by name.

Each objective says its direction, unit, and what it needs measured (Archai-style): cheap ones
(``params``, ``flops``: from the config alone) are computed first, so a trial that breaks a cheap
constraint never pays for the expensive ones (profiler, proxy). Add one with ``@register_objective``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["Objective", "OBJECTIVES", "register_objective", "parse_objectives", "Constraint", "parse_constraint",
           "objective_label", "metric_labels", "display_scale", "format_value", "portable_settings",
           "PREDICTED", "PREDICTED_KEYS", "use_predicted"]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"
    unit: str
    needs: str  # "cost" (config only) | "profile" (GPU profiler) | "proxy" (accuracy proxy) | "predict" (predictor)
    extract: Callable[[Mapping[str, Any]], Optional[float]]
    description: str = ""

    @property
    def expensive(self) -> bool:
        return self.needs != "cost"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


OBJECTIVES: dict[str, Objective] = {}


def register_objective(obj: Objective) -> Objective:
    if obj.name in OBJECTIVES:
        raise ValueError(f"objective {obj.name!r} is already registered")
    if obj.direction not in ("maximize", "minimize"):
        raise ValueError(f"objective {obj.name!r}: direction must be 'maximize' or 'minimize'")
    OBJECTIVES[obj.name] = obj
    return obj


def _profile(key: str) -> Callable[[Mapping[str, Any]], Optional[float]]:
    return lambda m: (m.get("profile") or {}).get(key)


register_objective(Objective("accuracy", "maximize", "proxy score", "proxy", lambda m: m.get("accuracy"),
                             "the accuracy proxy's value (higher is better; top-1 for the train proxy)"))
register_objective(Objective("throughput", "maximize", "img/s", "profile", _profile("images_per_s"),
                             "images per second at the profiler's batch size (median)"))
register_objective(Objective("latency", "minimize", "ms", "profile", _profile("latency_b1_ms"),
                             "batch-1 latency (median)"))
register_objective(Objective("memory", "minimize", "MB", "profile", _profile("peak_mem_mb"),
                             "peak GPU memory during the throughput measurement"))
register_objective(Objective("params", "minimize", "params", "cost", lambda m: m.get("params"), "parameter count"))
register_objective(Objective("flops", "minimize", "MACs", "cost", lambda m: m.get("flops"),
                             "fvcore multiply-accumulates for one image"))


def _predicted(key: str) -> Callable[[Mapping[str, Any]], Optional[float]]:
    return lambda m: (m.get("predicted") or {}).get(key)


# GPU-less search: values of a throughput predictor fitted on that GPU (evaluators.predictor); the
# name says "predicted" wherever the metric appears (study metric names, tables, reports, card)
register_objective(Objective("predicted_throughput", "maximize", "img/s, predicted", "predict",
                             _predicted("images_per_s"), "images/s predicted from the config (--throughput predicted:NAME)"))
register_objective(Objective("predicted_latency", "minimize", "ms, predicted", "predict", _predicted("latency_b1_ms"),
                             "batch-1 latency predicted from the config (--latency predicted:NAME)"))
PREDICTED = {"throughput": "predicted_throughput", "latency": "predicted_latency"}
PREDICTED_KEYS = {"predicted_throughput": "images_per_s", "predicted_latency": "latency_b1_ms"}  # predictor targets


def use_predicted(objectives: Sequence[str], constraints: Sequence[str], *, throughput: str = "measured",
                  latency: str = "measured") -> tuple[tuple[str, ...], tuple[str, ...], Optional[str]]:
    """Apply ``--throughput/--latency measured|predicted:NAME``: (objectives, constraints, predictor name).

    ``throughput`` in the objectives and constraints becomes ``predicted_throughput`` (likewise
    latency); both flags, when predicted, must name the same predictor (one predictor gives both).
    """
    chosen: dict[str, str] = {}
    for quantity, spec in (("throughput", throughput), ("latency", latency)):
        if spec == "measured":
            continue
        kind, _, name = spec.partition(":")
        if kind != "predicted" or not name:
            raise ValueError(f"--{quantity} {spec!r} must be 'measured' or 'predicted:NAME' (e.g. predicted:h200)")
        chosen[quantity] = name
    if len(set(chosen.values())) > 1:
        raise ValueError(f"--throughput and --latency name different predictors ({chosen['throughput']!r}, "
                         f"{chosen['latency']!r}); one predictor gives both")
    objs = tuple(PREDICTED[o.strip()] if o.strip() in chosen else o for o in objectives)
    cons = []
    for c in constraints:
        m = _CONSTRAINT.match(c)
        cons.append(PREDICTED[m.group(1)] + c.strip()[len(m.group(1)):] if m and m.group(1) in chosen else c)
    return objs, tuple(cons), next(iter(chosen.values()), None)


def parse_objectives(spec: str | Sequence[str]) -> list[Objective]:
    """'accuracy,throughput' -> objectives; 2 or 3 distinct known names."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; choose 2-3 of {sorted(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives {names} repeat a name")
    if not 2 <= len(names) <= 3:
        raise ValueError(f"--objective takes 2 or 3 objectives, got {len(names)}: {names}")
    return [OBJECTIVES[n] for n in names]


_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``name op threshold``; its Optuna value is the relative violation (feasible when <= 0)."""

    name: str
    op: str
    threshold: float

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.name]

    def satisfied(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def violation(self, value: float) -> float:
        """<= 0 when satisfied; otherwise how far off, relative to the threshold."""
        scale = abs(self.threshold) or 1.0
        if self.op in ("<=", "<"):
            v = (value - self.threshold) / scale
            return v if not (self.op == "<" and v == 0) else 1e-9
        v = (self.threshold - value) / scale
        return v if not (self.op == ">" and v == 0) else 1e-9

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold:g}"


def parse_constraint(text: str) -> Constraint:
    """'params<=60e6' -> Constraint; errors name the expression and the rule."""
    m = _CONSTRAINT.match(text)
    if not m:
        raise ValueError(f"constraint {text!r} must look like NAME<=NUMBER (or >=, <, >), e.g. 'params<=60e6'")
    name, op, num = m.groups()
    if name not in OBJECTIVES:
        raise ValueError(f"constraint {text!r}: unknown quantity {name!r}; one of {sorted(OBJECTIVES)}")
    try:
        threshold = float(num.replace("_", ""))
    except ValueError:
        raise ValueError(f"constraint {text!r}: {num!r} is not a number") from None
    return Constraint(name, op, threshold)


# ------------------------------------------------------------------------------------------ labels
# What a person reads for each objective: one function, used by the study's metric names (so
# optuna-dashboard shows them), the CLI tables, the HTML/PNG axes, `nas pareto --json` and the
# export model card. Values stay raw (params count, MACs); ``display_scale`` says how plots show them.
_DISPLAY_SCALE = {"params": (1e6, "params (M)"), "flops": (1e9, "GFLOPs (fvcore GMACs, 1 image)")}


def objective_label(name: str, settings: Optional[Mapping[str, Any]] = None, *,
                    resolution: Optional[int] = None) -> str:
    """The label of objective ``name`` in a study run with ``settings`` (a ``SearchSettings.to_dict()``).

    Trained accuracy reads "top-1 % (train, N epochs, DATA)", a zero-cost proxy "NAME score", and
    throughput names batch, resolution, dtype and profiler mode. ``resolution``: the measured input
    size (default: the fixed resolution of the settings' space, when it can be read).
    """
    s = dict(settings or {})
    if name == "accuracy":
        proxy = s.get("proxy")
        if proxy == "train":
            return f"top-1 % (train, {float(s.get('train_epochs') or 1):g} epochs, {s.get('data') or '?'})"
        return f"{proxy} score" if proxy else "accuracy proxy score"
    res = resolution if resolution is not None else _space_resolution(s.get("space"))
    if name == "throughput":
        parts = [f"batch {s['batch_size']}" if s.get("batch_size") else None, f"{res} px" if res else None,
                 s.get("dtype"), s.get("profile_mode")]
        return f"throughput, img/s ({', '.join(p for p in parts if p)})"
    if name == "latency":
        parts = ["batch 1", f"{res} px" if res else None, s.get("dtype"), s.get("profile_mode")]
        return f"latency, ms ({', '.join(p for p in parts if p)})"
    if name in ("predicted_throughput", "predicted_latency"):
        base = objective_label(name[len("predicted_"):], s, resolution=res)
        return f"{base[:-1]}, predicted by {s.get('predictor') or '?'})" if base.endswith(")") else f"{base}, predicted"
    if name == "memory":
        return f"peak GPU memory, MB (batch {s.get('batch_size') or '?'})"
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
        from search_spaces.space import load_space

        sp = load_space(space)
    except (ValueError, OSError):  # a space file that is gone: the label goes without resolution
        return None
    if any(k.name == "resolution" for k in sp.knobs):
        return None
    h, w = sp.apply({}).resolution
    return h if h == w else None


def portable_settings(settings: Mapping[str, Any], cwd: Optional[str] = None) -> dict[str, Any]:
    """Settings as a study stores them: paths under ``cwd`` relative, other absolute paths reduced to
    ``…/NAME`` (a study attribute must not carry the layout of the machine that ran it)."""
    import os

    base = os.path.abspath(cwd or os.getcwd())

    def path(p: str) -> str:
        if not os.path.isabs(p):
            return p
        rel = os.path.relpath(p, base)
        return rel if not rel.startswith("..") else f"…/{os.path.basename(p.rstrip('/'))}"

    def value(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        for prefix in ("sqlite:///", "journal:"):
            if v.startswith(prefix):
                return prefix + path(v[len(prefix):])
        return path(v) if v.startswith("/") else v

    return {k: value(v) for k, v in settings.items()}
