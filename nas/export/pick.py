"""The pick language of ``nas export --pick``: knee, max-/min-<objective>, conditions (see ``nas.export``)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import optuna

from .. import record as R
from ..front import feasible_trials, maximize_flags, objective_names, pareto_trials
from ..objectives import OBJECTIVES, parse_constraint
from .base import ExportError

__all__ = ["Pick", "parse_pick", "select_trial", "knee_trial", "check_exportable"]


# ------------------------------------------------------------------------------------------ picking
@dataclass(frozen=True)
class Pick:
    """One ``--pick``: ``kind`` is 'knee', 'max', 'min' or 'condition'."""

    text: str
    kind: str
    objective: str = ""  # the objective a max/min selector or a condition is about
    constraint: Any = None  # nas.objectives.Constraint for conditions

    def __str__(self) -> str:
        return self.text


_SELECT = re.compile(r"^\s*(max|min)-([a-z_]+)\s*$")


def parse_pick(text: str) -> Pick:
    """'knee' | 'max-NAME' | 'min-NAME' | a condition 'NAME>=NUMBER' (nas.objectives.parse_constraint)."""
    t = text.strip()
    if t == "knee":
        return Pick(t, "knee")
    m = _SELECT.match(t)
    if m:
        return Pick(t, m.group(1), objective=m.group(2))
    try:
        c = parse_constraint(t)
    except ValueError as e:
        raise ExportError(f"--pick {text!r} must be 'knee', 'max-<objective>', 'min-<objective>' or a condition "
                          f"like 'throughput>=8000' ({e})") from None
    return Pick(t, "condition", objective=c.name, constraint=c)


def _config_key(t: Any) -> str:
    return json.dumps(t.user_attrs.get(R.CONFIG), sort_keys=True) if t.user_attrs.get(R.CONFIG) else f"#{t.number}"


def _numbers(trials: Sequence[Any]) -> str:
    return ", ".join(f"#{t.number}" for t in sorted(trials, key=lambda t: t.number))


def _unique_best(pool: Sequence[Any], score: Callable[[Any], float], what: str) -> Any:
    """The pool's trial with the lowest score; ties between different configs are ambiguous."""
    best = min(score(t) for t in pool)
    tied = [t for t in pool if math.isclose(score(t), best, rel_tol=1e-9, abs_tol=1e-12)]
    configs = {_config_key(t) for t in tied}
    if len(configs) > 1:
        raise ExportError(f"ambiguous --pick {what}: trials {_numbers(tied)} tie; add another --pick "
                          f"(a condition, or max-/min-<objective>) or choose one with --trial N")
    return min(tied, key=lambda t: t.number)


def _measured(study: Any, t: Any, name: str) -> Optional[float]:
    """A quantity of a trial: its objective value, else from its recorded measurements."""
    names = objective_names(study)
    if name in names and t.values is not None:
        return float(t.values[names.index(name)])
    ua = t.user_attrs
    m = {"params": ua.get(R.PARAMS), "flops": ua.get(R.FLOPS), "profile": ua.get(R.PROFILE) or {},
         "accuracy": ua.get(R.objective_key("accuracy"))}
    v = OBJECTIVES[name].extract(m) if name in OBJECTIVES else None
    return None if v is None else float(v)


def knee_trial(study: Any, pool: Optional[Sequence[Any]] = None) -> Any:
    """The knee (see the module docstring) among ``pool`` (default: the Pareto set)."""
    front = pareto_trials(study)
    if not front:
        raise ExportError(f"study {study.study_name!r} has no complete feasible trial: nothing to pick")
    maximize = maximize_flags(study)
    span = []
    for i, mx in enumerate(maximize):
        vals = [t.values[i] for t in front]
        best, worst = (max(vals), min(vals)) if mx else (min(vals), max(vals))
        span.append((best, worst))

    def distance(t: Any) -> float:
        s = 0.0
        for i, (best, worst) in enumerate(span):
            if worst != best:
                s += ((t.values[i] - best) / (worst - best)) ** 2
        return math.sqrt(s)

    return _unique_best(list(pool) if pool is not None else front, distance, "knee")


def select_trial(study: Any, *, trial: Optional[int] = None, pick: Union[None, str, Sequence[str]] = None) -> Any:
    """The FrozenTrial named by ``trial`` (its number) or chosen by ``pick`` (see the module docstring).

    Raises ``ExportError`` for: both or neither given, an unknown trial number, a trial that is not
    complete (failed, pruned, running), an unknown objective, an ambiguous pick, nothing satisfying.
    """
    picks = [] if pick is None else [pick] if isinstance(pick, str) else list(pick)
    if trial is not None and picks:
        raise ExportError("give either --trial N or --pick, not both")
    if trial is None and not picks:
        raise ExportError("give --trial N or --pick (knee | max-<objective> | min-<objective> | "
                          "a condition like 'throughput>=8000')")
    if trial is not None:
        return _trial_by_number(study, trial)
    return _pick(study, [parse_pick(p) for p in picks])


def _trial_by_number(study: Any, number: int) -> Any:
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        have = f"#0..#{max(t.number for t in trials)}" if trials else "none"
        raise ExportError(f"study {study.study_name!r} has no trial #{number} (its trials: {have})")
    t = found[0]
    check_exportable(t)
    return t


def check_exportable(t: Any) -> None:
    state = t.state
    if state == optuna.trial.TrialState.COMPLETE:
        if not t.user_attrs.get(R.CONFIG):
            raise ExportError(f"trial #{t.number} has no recorded config (user_attrs['config']): "
                              f"not a `nas search` trial")
        return
    why = t.user_attrs.get(R.ERROR)
    if state == optuna.trial.TrialState.FAIL:
        raise ExportError(f"trial #{t.number} failed ({why or 'no reason recorded'}): nothing to export; "
                          f"choose a complete trial (see `nas pareto`)")
    if state == optuna.trial.TrialState.PRUNED:
        raise ExportError(f"trial #{t.number} was pruned ({why or 'no reason recorded'}): nothing to export; "
                          f"choose a complete trial (see `nas pareto`)")
    raise ExportError(f"trial #{t.number} is {state.name.lower()}, not complete: nothing to export yet")


def _pick(study: Any, picks: Sequence[Pick]) -> Any:
    names = objective_names(study)
    maximize = dict(zip(names, maximize_flags(study)))
    selectors = [p for p in picks if p.kind != "condition"]
    conditions = [p for p in picks if p.kind == "condition"]
    if len(selectors) > 1:
        raise ExportError(f"--pick takes at most one of knee / max-<objective> / min-<objective>, got "
                          f"{', '.join(map(str, selectors))}; add conditions to narrow instead")
    sel = selectors[0] if selectors else None
    if sel is not None and sel.kind in ("max", "min") and sel.objective not in names:
        raise ExportError(f"--pick {sel}: study {study.study_name!r} has no objective {sel.objective!r}; "
                          f"its objectives: {', '.join(names)}")
    front = pareto_trials(study)
    if not front:
        raise ExportError(f"study {study.study_name!r} has no complete feasible trial: nothing to pick")
    pool = None
    if conditions:
        for c in conditions:
            if all(_measured(study, t, c.objective) is None for t in front):
                raise ExportError(f"--pick {c}: {c.objective!r} was not measured in study {study.study_name!r}; "
                                  f"its objectives: {', '.join(names)}")
        pool = [t for t in front if all(_satisfies(study, t, c) for c in conditions)]
        if not pool:
            raise ExportError(_nothing_satisfies(study, front, conditions))
    if sel is None:
        assert pool is not None  # without a selector the conditions chose the pool
        if len(pool) == 1:
            return pool[0]
        free = [n for n in names if n not in {c.objective for c in conditions}]
        if len(free) == 1:
            o = free[0]
            return _unique_best(pool, lambda t: _signed(t.values[names.index(o)], maximize[o]),
                                f"{' '.join(map(str, conditions))} (best {o} among them)")
        if len({_config_key(t) for t in pool}) == 1:
            return min(pool, key=lambda t: t.number)
        raise ExportError(f"ambiguous --pick: trials {_numbers(pool)} satisfy "
                          f"{' and '.join(map(str, conditions))}; add --pick max-<objective> "
                          f"(objectives: {', '.join(names)})")
    if sel.kind == "knee":
        return knee_trial(study, pool)
    i = names.index(sel.objective)
    candidates = pool if pool is not None else feasible_trials(study)
    return _unique_best(candidates, lambda t: _signed(t.values[i], sel.kind == "max"), str(sel))


def _signed(v: float, maximize: bool) -> float:
    return -v if maximize else v


def _satisfies(study: Any, t: Any, c: Pick) -> bool:
    v = _measured(study, t, c.objective)
    return v is not None and c.constraint.satisfied(v)


def _nothing_satisfies(study: Any, front: Sequence[Any], conditions: Sequence[Pick]) -> str:
    parts = []
    for c in conditions:
        vals = [(v, t) for t in front if (v := _measured(study, t, c.objective)) is not None]
        high = c.constraint.op in (">=", ">")
        v, t = (max if high else min)(vals, key=lambda vt: vt[0])
        parts.append(f"the {'highest' if high else 'lowest'} {c.objective} on the Pareto front is {v:.6g} "
                     f"(trial #{t.number})")
    return (f"no Pareto trial satisfies --pick {' and '.join(map(str, conditions))}: " + "; ".join(parts))

