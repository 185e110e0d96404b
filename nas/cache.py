"""The architecture-id cache: a trial whose architecture the study already measured reuses those measurements.

A sampler may propose an architecture (``FasterViTConfig.arch_id``) that an earlier trial of the study
measured with the same settings (``measurement_key``: device, dataset, seed, profiler protocol with
``--pad-channels`` and ``--gelu-epilogue`` when set, and the accuracy estimator's identity: proxy,
resolution, train budget, rungs...). ``cached_source`` finds that trial; ``reuse_measurements`` copies
its measurements into the new trial and records ``cache_hit`` (``nas.record``) naming the original, so
nothing is trained or profiled twice. A source stopped at a ``--fidelity sh`` rung stops the new trial the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import optuna

from . import record as R
from .record import Status

__all__ = ["measurement_key", "cached_source", "reuse_measurements"]

log = logging.getLogger("nas.cache")

_REUSED = (R.PARAMS, R.FLOPS, R.PROFILE, R.PROXY, R.TIMINGS, R.TRAIN_HISTORY, R.WEIGHTS_PATH, R.RUNGS, R.RUNG,
           R.RUNG_EPOCHS, R.RUNG_ACCURACY)


def measurement_key(ev: Any) -> dict[str, Any]:
    """What a measurement depends on besides the architecture (``ev``: a ``nas.trial.Evaluator``); a cache hit
    needs the same key. The accuracy's part is its estimator's ``identity``."""
    s = ev.settings
    key: dict[str, Any] = dict(device=ev.device_name, data=s.data, seed=s.seed)
    if ev.needs_profile:
        key.update(batch_size=s.batch_size, dtype=s.dtype, profile_mode=s.profile_mode)
        if s.pad_channels is not None:  # only when set: keys of unpadded studies stay as they were
            key.update(pad_channels=s.pad_channels)
        if s.gelu_epilogue:  # only when set: keys of unfused studies stay as they were
            key.update(gelu_epilogue=True)
    if ev.estimator is not None:
        key.update(estimator=ev.estimator.identity)
    return key


def cached_source(study: Any, arch_id: str, number: int, key: Optional[dict[str, Any]] = None) -> Optional[Any]:
    """The earliest finished trial of ``study`` that measured ``arch_id`` (COMPLETE, or stopped at a rung), or None.

    A sampler proposing an architecture already measured gets its measurements back instead of
    paying for them again; a trial still running is not a source (both run). ``key``: the source
    must have been measured with the same settings (``measurement_key``; a study resumed with
    another budget or device measures again).
    """
    S = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)):
        if t.number == number or t.user_attrs.get(R.ARCH_ID) != arch_id:
            continue
        if key is not None and t.user_attrs.get(R.MEASURED_WITH) != key:
            continue
        if t.state == S.COMPLETE or t.user_attrs.get(R.RUNGS):
            return t
    return None


def reuse_measurements(source: Any, record: Callable[[str, Any], None]) -> dict[str, Any]:
    """Copy ``source``'s measurements into this trial (``cache_hit`` names the original); the measured dict.

    A source stopped at a rung stops this trial the same way (``optuna.TrialPruned``).
    """
    a = source.user_attrs
    original = a.get(R.CACHE_HIT, source.number)
    record(R.CACHE_HIT, original)
    for key in _REUSED:
        if key in a:
            record(key, a[key])
    if source.state == optuna.trial.TrialState.PRUNED:
        msg = f"cache hit: trial {original} measured this architecture and was {a.get(R.ERROR)}"
        record(R.STATUS, Status.PRUNED)
        record(R.ERROR, msg)
        raise optuna.TrialPruned(msg)
    m: dict[str, Any] = {"params": a.get(R.PARAMS), "flops": a.get(R.FLOPS), "profile": a.get(R.PROFILE)}
    if R.objective_key("accuracy") in a:
        m["accuracy"] = a[R.objective_key("accuracy")]
    log.info("cache hit: arch %s measured by trial %d", a.get(R.ARCH_ID), original)
    return m
