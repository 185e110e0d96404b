"""A study's Pareto front: objectives, feasible trials, front, hypervolume, reference points, summary.

Optuna's public API underneath; the hypervolume itself is ``nas.hypervolume``, exact, as Optuna has
it only in a private module. Reports (HTML/PNG) are ``nas.report``; ``nas.pareto`` is the public face
of both.

Hypervolume reference point (documented, reproducible): for each objective, the worst value among
the study's complete feasible trials, moved 10% of that objective's observed range further in the
bad direction (so the worst Pareto point still adds volume). Pass ``reference`` (``nas pareto
--reference v1,v2``) to fix it, e.g. to compare two studies on one scale; the point used is printed.
Without a range (one feasible trial, or every trial sharing an objective's value) there is no
default point and no hypervolume: ``reference_problem`` says why, and ``--reference`` gives one.

Axes and columns carry ``objective_labels`` (``nas.labels.objective_label``): units, batch,
resolution, dtype, mode, and what the accuracy axis is (the accuracy estimator's label).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import optuna

from . import record as R
from .hypervolume import compute_hypervolume, dominates
from .labels import metric_labels
from .storage import get_storage

__all__ = ["load_study", "objective_names", "objective_labels", "maximize_flags", "feasible_trials", "pareto_trials",
           "reference_problem", "reference_point", "hypervolume", "hypervolume_history", "pareto_rows",
           "ReferencePoint", "study_references", "parse_reference", "dominates_presets", "dominated_by",
           "preset_place", "failure_rows", "study_summary", "mixed_measurements", "REFERENCE_RULE", "short_preset",
           "REFERENCE_PRESETS"]

#: the FasterViT presets every report places on its front (the study's trials, or measured apart)
REFERENCE_PRESETS = ("faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_3_224")


def load_study(study: str, storage: Any = None) -> Any:
    """Load a study by name; the error lists the studies in that storage."""
    st = get_storage(storage)
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        raise ValueError(f"no study {study!r} in this storage; studies there: {names or 'none'}") from None


def objective_names(study: Any) -> list[str]:
    """The objectives' short names (``accuracy``, ``throughput``...): keys of rows and JSON."""
    return list(study.user_attrs.get(R.STUDY_OBJECTIVES) or study.metric_names or
                [f"objective_{i}" for i in range(len(study.directions))])


def objective_labels(study: Any) -> list[str]:
    """What each objective is, with its unit: the study's metric names where they say more than the
    short names (studies made since labels exist), else built from its settings and first profile."""
    names = objective_names(study)
    metric = list(study.metric_names or [])
    if len(metric) == len(names) and metric != names:
        return metric
    settings = dict(study.user_attrs.get(R.STUDY_SETTINGS) or {})
    settings.setdefault("proxy", study.user_attrs.get(R.STUDY_PROXY))
    return metric_labels(names, settings, resolution=_measured_resolution(study))


def _measured_resolution(study: Any) -> Optional[int]:
    """The input size the profiler used, when every profiled trial used the same square one."""
    seen = set()
    for t in feasible_trials(study):
        res = (t.user_attrs.get(R.PROFILE) or {}).get("resolution")
        if res:
            seen.add(tuple(res))
    if len(seen) == 1:
        h, w = seen.pop()
        return h if h == w else None
    return None


def maximize_flags(study: Any) -> list[bool]:
    """Per objective: True where the study maximises it."""
    return [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]


def feasible_trials(study: Any) -> list[Any]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if all(v <= 0 for v in t.constraints.values()):
            out.append(t)
    return out


def pareto_trials(study: Any) -> list[Any]:
    """Optuna's Pareto set (constraints honoured), sorted by the first objective."""
    return sorted(study.best_trials, key=lambda t: t.values[0])


def reference_problem(study: Any, trials: Optional[Sequence[Any]] = None) -> Optional[str]:
    """Why the default reference point cannot be placed (None when it can): it needs a range of
    values in every objective; a point made up from one value would give a meaningless hypervolume."""
    trials = feasible_trials(study) if trials is None else trials
    how = "pass --reference with one value per objective for a hypervolume"
    if not trials:
        return "no complete feasible trial"
    if len(trials) == 1:
        return f"one complete feasible trial (#{trials[0].number}) gives no range to place a reference point; {how}"
    flat = [n for i, n in enumerate(objective_names(study)) if len({t.values[i] for t in trials}) == 1]
    if flat:
        return (f"every feasible trial has the same {', '.join(flat)}: no range to place a reference point; {how}")
    return None


def reference_point(study: Any, trials: Optional[Sequence[Any]] = None) -> Optional[list[float]]:
    """The default reference point (module docstring); None when ``reference_problem`` names a reason."""
    trials = feasible_trials(study) if trials is None else trials
    if reference_problem(study, trials) is not None:
        return None
    ref = []
    for i, maximize in enumerate(maximize_flags(study)):
        vals = [t.values[i] for t in trials]
        lo, hi = min(vals), max(vals)
        margin = 0.1 * (hi - lo)
        ref.append(lo - margin if maximize else hi + margin)
    return ref


def _loss(values: Sequence[float], maximize: Sequence[bool]) -> list[float]:
    return [-v if m else v for v, m in zip(values, maximize)]


def hypervolume(study: Any, reference: Optional[Sequence[float]] = None,
                trials: Optional[Sequence[Any]] = None) -> Optional[float]:
    """Hypervolume of the feasible trials w.r.t. ``reference`` (default: ``reference_point``; None
    without one: ``reference_problem``)."""
    trials = feasible_trials(study) if trials is None else trials
    ref = list(reference) if reference is not None else reference_point(study, trials)
    if ref is None or not trials:
        return None
    maximize = maximize_flags(study)
    ref_loss = np.asarray(_loss(ref, maximize), dtype=float)
    pts = np.asarray([_loss(t.values, maximize) for t in trials], dtype=float)
    pts = pts[np.all(pts <= ref_loss, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(compute_hypervolume(pts, list(ref_loss)))


def hypervolume_history(study: Any, reference: Optional[Sequence[float]] = None) -> list[tuple[int, float]]:
    """(trial number, hypervolume so far) after each complete feasible trial."""
    trials = sorted(feasible_trials(study), key=lambda t: t.number)
    ref = list(reference) if reference is not None else reference_point(study, trials)
    out: list[tuple[int, float]] = []
    if ref is None:
        return out
    for i in range(len(trials)):
        out.append((trials[i].number, hypervolume(study, ref, trials[: i + 1]) or 0.0))
    return out


def _row(t: Any, names: Sequence[str]) -> dict[str, Any]:
    row = dict(trial=t.number, preset=t.user_attrs.get(R.PRESET), arch_id=t.user_attrs.get(R.ARCH_ID),
               summary=t.user_attrs.get(R.SUMMARY), params=t.user_attrs.get(R.PARAMS), flops=t.user_attrs.get(R.FLOPS))
    row.update(zip(names, t.values))
    return row


def pareto_rows(study: Any) -> list[dict[str, Any]]:
    names = objective_names(study)
    return [_row(t, names) for t in pareto_trials(study)]


def _presets(study: Any) -> list[Any]:
    return [t for t in feasible_trials(study) if t.user_attrs.get(R.PRESET)]


@dataclass
class ReferencePoint:
    """A FasterViT preset shown on a report: a trial of the study, or measured apart the same way
    (``in_study=False``: "not part of the study"), or not measurable here (``values=None``, ``note`` why)."""

    preset: str
    values: Optional[list[float]]
    in_study: bool
    trial: Optional[int] = None
    note: str = ""
    params: Optional[float] = None
    flops: Optional[float] = None

    @property
    def short(self) -> str:
        return short_preset(self.preset)

    def to_dict(self) -> dict[str, Any]:
        return dict(preset=self.preset, values=self.values, in_study=self.in_study, trial=self.trial, note=self.note,
                    params=self.params, flops=self.flops)


def study_references(study: Any, extra: Sequence[ReferencePoint] = ()) -> list[ReferencePoint]:
    """The study's own preset trials, then ``extra`` (measured apart) for presets it lacks."""
    out = [ReferencePoint(t.user_attrs[R.PRESET], list(t.values), True, t.number, "trial of the study",
                          t.user_attrs.get(R.PARAMS), t.user_attrs.get(R.FLOPS)) for t in _presets(study)]
    have = {r.preset for r in out}
    out += [r for r in extra if r.preset not in have]
    return out


def parse_reference(text: str, names: Sequence[str]) -> list[float]:
    """'v1,v2' -> floats, one per objective (errors name the objectives)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) != len(names):
        raise ValueError(f"--reference {text!r} has {len(parts)} value(s); this study has {len(names)} objectives "
                         f"({', '.join(names)}): give one value each, e.g. --reference={','.join('0' * len(names))}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--reference {text!r}: every value must be a number") from None
    bad = [f"{n}={v}" for n, v in zip(names, values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"--reference {text!r}: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not finite; a "
                         f"hypervolume needs a finite reference value for every objective")
    return values


def dominates_presets(study: Any) -> dict[str, Any]:
    """For each reference preset trial: is it on the front, or which Pareto trials dominate it."""
    front = pareto_trials(study)
    out = {}
    for p in _presets(study):
        by = [n for n in dominated_by(study, p.values, front) if n != p.number]
        out[p.user_attrs[R.PRESET]] = dict(trial=p.number, on_front=any(t.number == p.number for t in front),
                                           dominated_by=by)
    return out


def dominated_by(study: Any, values: Sequence[float], front: Optional[Sequence[Any]] = None) -> list[int]:
    """Pareto trials (of ``front``, default the study's) that dominate the point ``values``."""
    maximize = maximize_flags(study)
    loss = _loss(values, maximize)
    front = pareto_trials(study) if front is None else front
    return [t.number for t in front if dominates(_loss(t.values, maximize), loss)]


def preset_place(preset: Mapping[str, Any]) -> str:
    """Where a FasterViT preset stands against the front (one entry of ``study_summary()["presets"]``)."""
    if preset.get("not_measured"):
        return f"not measured: {preset['not_measured']}"
    if preset.get("on_front"):
        return "on the front"
    if preset.get("dominated_by"):
        return f"dominated by trials {', '.join(map(str, preset['dominated_by']))}"
    return "not dominated by the front"


def failure_rows(study: Any) -> list[dict[str, Any]]:
    """Every failed trial with its recorded reason (``nas.record.ERROR``; None when it has none)."""
    return [dict(trial=t.number, error=R.error_of(t))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))]


_SAME_MEANING_ANYWAY = ("seed", "device")  # another seed is another sample; workers' device names may differ


def mixed_measurements(study: Any) -> Optional[dict[str, Any]]:
    """The groups of complete trials measured with different settings (``nas.record.MEASURED_WITH``: task,
    profiler protocol, accuracy estimator), which do not compare: a study resumed with other settings before
    a resume compared them. ``{"groups": [[trial numbers], ...], "differ": [keys]}``, or None when they agree."""
    groups: dict[str, list[int]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        measured = t.user_attrs.get(R.MEASURED_WITH)
        if not isinstance(measured, Mapping):
            continue
        key = {k: v for k, v in measured.items() if k not in _SAME_MEANING_ANYWAY}
        text = json.dumps(key, sort_keys=True, default=str)
        groups.setdefault(text, []).append(t.number)
        keys[text] = key
    if len(groups) < 2:
        return None
    every = list(keys.values())
    differ = sorted({k for key in every for k in key if any(other.get(k) != key.get(k) for other in every)})
    return dict(groups=list(groups.values()), differ=differ)


def study_summary(study: Any, reference: Optional[Sequence[float]] = None,
                  references: Optional[Sequence[ReferencePoint]] = None) -> dict[str, Any]:
    """A JSON-ready summary: settings, counts, labels, Pareto rows, hypervolume and the reference
    point it was computed for, FasterViT reference points (``references``: from ``study_references``)."""
    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    names = objective_names(study)
    given = reference is not None
    ref = list(reference) if reference is not None else reference_point(study)
    refs = list(references) if references is not None else study_references(study)
    presets = dominates_presets(study)
    for r in refs:
        if not r.in_study and r.values is not None:
            presets[r.preset] = dict(trial=None, on_front=False, dominated_by=dominated_by(study, r.values),
                                     not_part_of_study=True, values=dict(zip(names, r.values)), note=r.note)
        elif r.values is None:
            presets[r.preset] = dict(trial=None, on_front=None, dominated_by=[], not_measured=r.note)
    return dict(
        study=study.study_name, objectives=names, labels=dict(zip(names, objective_labels(study))),
        directions=["maximize" if m else "minimize" for m in maximize_flags(study)],
        settings=study.user_attrs.get(R.STUDY_SETTINGS), proxy=study.user_attrs.get(R.STUDY_PROXY),
        n_trials=len(trials), n_complete=sum(t.state == states.COMPLETE for t in trials),
        n_failed=sum(t.state == states.FAIL for t in trials), n_pruned=sum(t.state == states.PRUNED for t in trials),
        n_feasible=len(feasible_trials(study)), reference_point=ref,
        reference_point_by_objective=dict(zip(names, ref)) if ref else None,
        reference_point_rule="given (--reference)" if given else REFERENCE_RULE,
        hypervolume=hypervolume(study, ref) if ref is not None else None,
        hypervolume_note=None if ref is not None else reference_problem(study), pareto=pareto_rows(study),
        presets=presets,
        reference_points=[r.to_dict() for r in refs],
        devices=sorted({str(t.user_attrs.get(R.DEVICE)) for t in trials if t.user_attrs.get(R.DEVICE)}),
        failures=failure_rows(study),
        mixed_measurements=mixed_measurements(study),
    )


REFERENCE_RULE = "worst feasible value per objective, moved 10% of its range further"


def short_preset(name: Optional[str]) -> str:
    """``faster_vit_2_224`` -> ``FasterViT-2`` (empty for None)."""
    return (name or "").replace("faster_vit_", "FasterViT-").replace("_224", "")
