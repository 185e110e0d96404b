"""FasterViT-0..3 on every Pareto report: the study's own preset trials, or measured apart the same way.

A study that did not enqueue the presets (the CPU default) still shows them: ``measure_references``
runs ``nas.search.Evaluator`` with the study's stored settings on each missing preset, so the point
is measured exactly as a trial would be, and marks it "not part of the study". Results are cached
in the study's user attribute ``nas.record.STUDY_REFERENCES`` (measured once); a preset that cannot be measured
here (a CUDA study on a machine without a GPU, a missing dataset) is listed with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Optional, Sequence

from search_spaces import PRESETS

from . import record as R
from .front import REFERENCE_PRESETS, ReferencePoint, objective_names, study_references
from .objectives import Objective, parse_objectives
from .settings import SearchSettings
from .storage import StorageError, storage_errors
from .trial import Evaluator, TrialFailure

__all__ = ["measure_references", "report_references", "presets_to_measure", "MeasureProgress"]

log = logging.getLogger("nas.references")


def _settings(study: Any) -> SearchSettings:
    stored = dict(study.user_attrs.get(R.STUDY_SETTINGS) or {})
    known = {f.name for f in dataclasses.fields(SearchSettings)}
    kw = {k: v for k, v in stored.items() if k in known and k not in ("storage", "study", "results_dir", "trials",
                                                                      "timeout", "quiet", "heartbeat",
                                                                      "measure_references")}
    kw["objectives"] = tuple(objective_names(study))
    if study.user_attrs.get(R.STUDY_PROXY):
        kw["proxy"] = study.user_attrs[R.STUDY_PROXY]
    return SearchSettings(**kw).resolved()


def measure_references(study: Any, presets: Sequence[str] = REFERENCE_PRESETS,
                       on_progress: Optional[Callable[[str], None]] = None) -> list[ReferencePoint]:
    """Measure the presets the study lacks (cached in the study); the study's own presets are not re-measured."""
    have = {r.preset for r in study_references(study)}
    missing = [p for p in presets if p not in have]
    cache = dict(study.user_attrs.get(R.STUDY_REFERENCES) or {})
    out: list[ReferencePoint] = []
    todo = [p for p in missing if p not in cache]
    evaluator = None
    if todo:
        try:
            settings = _settings(study)
            objectives = parse_objectives(settings.objectives)
            evaluator = Evaluator(settings, objectives, [])
            evaluator.prepare()
            if any(o.needs in ("profile", "proxy") for o in objectives):  # values that depend on the device
                _check_same_device(study, evaluator.device_name)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            reason = f"cannot measure here the way the study did: {e}"
            return [_cached(p, cache[p]) if p in cache else ReferencePoint(p, None, False, None, reason)
                    for p in missing]
    for p in missing:
        if p not in cache:
            if on_progress:
                on_progress(p)
            assert evaluator is not None  # built above when a preset is to be measured
            point = _measure_one(evaluator, objectives, p)
            if point.values is None:
                out.append(point)
                continue
            cache[p] = dict(values=point.values, params=point.params, flops=point.flops, note=point.note)
            unsaved = _save_cache(study, cache)
            if unsaved:
                cache[p]["note"] = f"{point.note}; {unsaved}".lstrip("; ")
        out.append(_cached(p, cache[p]))
    return out


def _check_same_device(study: Any, here: str) -> None:
    """Refuse to measure presets on another device than the study's trials (their numbers share the axes)."""
    theirs = sorted({str(t.user_attrs[R.DEVICE]) for t in study.get_trials(deepcopy=False)
                     if t.user_attrs.get(R.DEVICE)})
    if theirs and here not in theirs:
        raise ValueError(f"the study's trials were measured on {', '.join(theirs)}, this machine is {here}; "
                         f"run the report there (or pass --no-measure-references)")


def _cached(preset: str, c: dict[str, Any]) -> ReferencePoint:
    """A preset measured apart earlier, from the study's cache (``nas.record.STUDY_REFERENCES``)."""
    return ReferencePoint(preset, list(c["values"]), False, None, c.get("note", ""), c.get("params"), c.get("flops"))


def _save_cache(study: Any, cache: dict[str, Any]) -> str:
    """Keep the measured presets in the study; on a read-only storage say so (the report still shows them)."""
    try:
        with storage_errors("of this study"):  # a read-only SQLite file raises SQLAlchemy's errors
            study.set_user_attr(R.STUDY_REFERENCES, cache)
    except (StorageError, OSError) as e:
        return f"not cached in the study ({e})"
    return ""


def _measure_one(evaluator: Evaluator, objectives: Sequence[Objective], preset: str) -> ReferencePoint:
    cfg = PRESETS[preset].replace(num_classes=evaluator.num_classes)
    try:
        m = evaluator.measure(cfg, lambda k, v: None)
    except (TrialFailure, ValueError) as e:
        return ReferencePoint(preset, None, False, None, f"measurement failed: {e}")
    values = [o.extract(m) for o in objectives]
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) < len(values):
        return ReferencePoint(preset, None, False, None, f"no finite value for every objective: {values}")
    note = f"measured apart on {evaluator.device_name} with the study's settings"
    return ReferencePoint(preset, finite, False, None, note, m.get("params"), m.get("flops"))


def report_references(study: Any, measure: bool = True,
                      on_progress: Optional[Callable[[str], None]] = None) -> list[ReferencePoint]:
    """FasterViT-0..3 for a report: the study's trials, then (``measure``) the missing ones measured apart."""
    extra = measure_references(study, on_progress=on_progress) if measure else [
        ReferencePoint(p, None, False, None,
                       "not in the study (`nas pareto` without --no-measure-references measures it)")
        for p in REFERENCE_PRESETS if p not in {r.preset for r in study_references(study)}]
    return study_references(study, extra)


def presets_to_measure(study: Any) -> list[str]:
    """The FasterViT presets a report measures apart: neither trials of the study nor cached in it."""
    have = {r.preset for r in study_references(study)} | set(study.user_attrs.get(R.STUDY_REFERENCES) or {})
    return [p for p in REFERENCE_PRESETS if p not in have]


class MeasureProgress:
    """One line per preset measured for a report (through ``say``), with an ETA from the ones measured so far."""

    def __init__(self, todo: Sequence[str], say: Callable[[str], None]):
        self.todo = list(todo)
        self.say = say
        self.done = 0
        self.started = 0.0

    def __call__(self, preset: str) -> None:
        now = time.monotonic()
        if not self.done:
            self.started = now
            self.say(f"measuring {len(self.todo)} FasterViT preset(s) the study's way for the report (not part of "
                     f"the study; cached in it once measured); --no-measure-references skips this")
        left = (now - self.started) / self.done * (len(self.todo) - self.done) if self.done else None
        self.done += 1
        self.say(f"  {preset} ({self.done}/{len(self.todo)}{'' if left is None else ', ETA ' + _duration(left)})…")


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
