"""Objectives and constraints of a search, by name.

Each objective says its direction, unit, and what it needs measured (Archai-style): cheap ones
(``params``, ``flops``: from the config alone) are computed first, so a trial that breaks a cheap
constraint never pays for the expensive ones (profiler, accuracy estimator). Add one with
``register_objective``. What a person reads for each objective is ``nas.labels``. This module
imports nothing heavy: the CLI checks names with it before torch is loaded.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Optional, Sequence

__all__ = ["Objective", "OBJECTIVES", "register_objective", "parse_objectives", "Constraint", "parse_constraint",
           "PREDICTED", "PREDICTED_KEYS", "MEASURED", "use_predicted"]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Literal["maximize", "minimize"]
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
                             _predicted("images_per_s"),
                             "images/s predicted from the config (--throughput predicted:NAME)"))
register_objective(Objective("predicted_latency", "minimize", "ms, predicted", "predict", _predicted("latency_b1_ms"),
                             "batch-1 latency predicted from the config (--latency predicted:NAME)"))
PREDICTED = {"throughput": "predicted_throughput", "latency": "predicted_latency"}
PREDICTED_KEYS = {"predicted_throughput": "images_per_s", "predicted_latency": "latency_b1_ms"}  # predictor targets
MEASURED = "measured"  # --throughput / --latency: measured by the profiler (or predicted:NAME)


def use_predicted(objectives: Sequence[str], constraints: Sequence[str], *, throughput: str = MEASURED,
                  latency: str = MEASURED) -> tuple[tuple[str, ...], tuple[str, ...], Optional[str]]:
    """Apply ``--throughput/--latency measured|predicted:NAME``: (objectives, constraints, predictor name).

    ``throughput`` in the objectives and constraints becomes ``predicted_throughput`` (likewise
    latency); both flags, when predicted, must name the same predictor (one predictor gives both).
    """
    chosen: dict[str, str] = {}
    for quantity, spec in (("throughput", throughput), ("latency", latency)):
        if spec == MEASURED:
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
