"""FasterViT-0..3 on every Pareto report: the study's own preset trials, or measured apart the same way.

A study that did not enqueue the presets (the CPU default) still shows them: ``measure_references``
runs ``nas.search.Evaluator`` with the study's stored settings on each missing preset, so the point
is measured exactly as a trial would be, and marks it "not part of the study". Results are cached
in the study's user attribute ``REFERENCES_ATTR`` (measured once); a preset that cannot be measured
here (a CUDA study on a machine without a GPU, a missing dataset) is listed with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional, Sequence

from .pareto import ReferencePoint, objective_names, study_references
from .search import REFERENCE_PRESETS

__all__ = ["REFERENCES_ATTR", "measure_references", "report_references"]

REFERENCES_ATTR = "reference_points"  # study user attr: {preset: {"values": [...], "params": .., "flops": ..}}
log = logging.getLogger("nas.references")


def _settings(study: Any) -> Any:
    from .search import SearchSettings

    stored = dict(study.user_attrs.get("settings") or {})
    known = {f.name for f in dataclasses.fields(SearchSettings)}
    kw = {k: v for k, v in stored.items() if k in known and k not in ("storage", "study", "results_dir", "trials",
                                                                      "timeout", "quiet", "heartbeat")}
    kw["objectives"] = tuple(objective_names(study))
    if study.user_attrs.get("proxy"):
        kw["proxy"] = study.user_attrs["proxy"]
    return SearchSettings(**kw).resolved()


def measure_references(study: Any, presets: Sequence[str] = REFERENCE_PRESETS,
                       on_progress: Optional[Callable[[str], None]] = None) -> list[ReferencePoint]:
    """Measure the presets the study lacks (cached in the study); the study's own presets are not re-measured."""
    from search_spaces import PRESETS

    from .objectives import parse_objectives
    from .search import Evaluator, TrialFailure

    have = {r.preset for r in study_references(study)}
    missing = [p for p in presets if p not in have]
    cache = dict(study.user_attrs.get(REFERENCES_ATTR) or {})
    out: list[ReferencePoint] = []
    todo = [p for p in missing if p not in cache]
    evaluator = None
    if todo:
        try:
            settings = _settings(study)
            objectives = parse_objectives(settings.objectives)
            evaluator = Evaluator(settings, objectives, [])
            evaluator.prepare()
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            reason = f"cannot measure here the way the study did: {e}"
            return [ReferencePoint(p, cache[p]["values"], False, None, cache[p].get("note", ""), cache[p].get("params"),
                                   cache[p].get("flops")) if p in cache else ReferencePoint(p, None, False, None, reason)
                    for p in missing]
    for p in missing:
        if p not in cache:
            if on_progress:
                on_progress(p)
            point = _measure_one(evaluator, objectives, p, PRESETS, TrialFailure)
            if point.values is None:
                out.append(point)
                continue
            cache[p] = dict(values=point.values, params=point.params, flops=point.flops, note=point.note)
            unsaved = _save_cache(study, cache)
            if unsaved:
                cache[p]["note"] = f"{point.note}; {unsaved}".lstrip("; ")
        c = cache[p]
        out.append(ReferencePoint(p, list(c["values"]), False, None, c.get("note", ""), c.get("params"), c.get("flops")))
    return out


def _save_cache(study: Any, cache: dict[str, Any]) -> str:
    """Keep the measured presets in the study; on a read-only storage say so (the report still shows them)."""
    from .storage import StorageError

    try:
        study.set_user_attr(REFERENCES_ATTR, cache)
    except (StorageError, OSError) as e:
        return f"not cached in the study ({e})"
    return ""


def _measure_one(evaluator: Any, objectives: Sequence[Any], preset: str, presets: Any, failure: type) -> ReferencePoint:
    import math

    cfg = presets[preset].replace(num_classes=evaluator.num_classes)
    try:
        m = evaluator.measure(cfg, lambda k, v: None)
    except (failure, ValueError) as e:
        return ReferencePoint(preset, None, False, None, f"measurement failed: {e}")
    values = [o.extract(m) for o in objectives]
    if any(v is None or not math.isfinite(v) for v in values):
        return ReferencePoint(preset, None, False, None, f"no finite value for every objective: {values}")
    note = f"measured apart on {evaluator.device_name} with the study's settings"
    return ReferencePoint(preset, [float(v) for v in values], False, None, note, m.get("params"), m.get("flops"))


def report_references(study: Any, measure: bool = True,
                      on_progress: Optional[Callable[[str], None]] = None) -> list[ReferencePoint]:
    """FasterViT-0..3 for a report: the study's trials, then (``measure``) the missing ones measured apart."""
    extra = measure_references(study, on_progress=on_progress) if measure else [
        ReferencePoint(p, None, False, None, "not in the study (`nas pareto` without --no-measure-references measures it)")
        for p in REFERENCE_PRESETS if p not in {r.preset for r in study_references(study)}]
    return study_references(study, extra)
