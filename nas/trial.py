"""One trial of a study: sample a config, measure it, record everything (keys in ``nas.record``).

``TrialObjective`` is the objective every backend runs (this process, worker processes, Ray
actors); ``Evaluator`` holds what one process needs to measure: the profiler protocol or the
predictor, and the accuracy estimator (``evaluators.estimators``, prepared once: dataset, batch).
A refused config, an OOM, a NaN estimate: each raises ``TrialFailure`` after recording the reason;
a ``--fidelity sh`` rung stops the estimate through its ``report`` and ends the trial PRUNED.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError

from evaluators.cost import static_cost
from evaluators.data import load_dataset
from evaluators.estimators import AccuracyEstimator, Estimate
from evaluators.predictor import load_predictor
from evaluators.profiler import measure_throughput
from search_spaces import FasterViTConfig
from search_spaces.space import SearchSpace

from . import record as R
from .cache import cached_source, measurement_key, reuse_measurements
from .estimators import build_estimator
from .fidelity import RungController
from .objectives import PREDICTED_KEYS, Constraint, Objective
from .record import Status
from .settings import SearchSettings

__all__ = ["TrialFailure", "FinishedElsewhere", "EstimateStopped", "OnEpoch", "OnReport", "suggest_config",
           "needs_accuracy", "Evaluator", "TrialObjective", "Interrupted", "interrupt_pending", "signals_as_interrupts"]

log = logging.getLogger("nas.search")
OnEpoch = Callable[[int, float, dict], None]  # (step, validation accuracy, measurements so far): a listener
OnReport = Callable[[int, float, dict], bool]  # the same, returning True to stop the estimate (a rung)


class TrialFailure(Exception):
    """A trial that cannot produce objective values; its reason is recorded on the trial."""


class FinishedElsewhere(BaseException):
    """Another process finished this trial (marked stale, told by the Ray driver): stop quietly.

    A BaseException so the objective's ``except Exception`` does not record it as the trial's error.
    """


class EstimateStopped(Exception):
    """The estimate was stopped by its report hook (a rung); the hook recorded why."""


# ------------------------------------------------------------------------------------------ sampling
def suggest_config(trial: Any, space: SearchSpace) -> tuple[dict[str, Any], FasterViTConfig]:
    """Sample the space through ``trial.suggest_*`` (so every sampler sees the real distributions).

    Raises ``ValueError`` (with the generator's message) when the sampled point is refused.
    """
    values: dict[str, Any] = {}
    for k in space.knobs:
        if not space.active(k, values):
            continue
        if k.choices is not None:
            v = trial.suggest_categorical(k.name, list(k.choices))
        elif k.kind == "int":
            v = trial.suggest_int(k.name, k.low, k.high, step=int(k.step or 1), log=k.log)
        else:
            v = trial.suggest_float(k.name, k.low, k.high, step=k.step, log=k.log)
        values[k.name] = v
    return values, space.apply(values)


# ------------------------------------------------------------------------------------------ measuring
def needs_accuracy(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> bool:
    """Whether an objective or a constraint is the accuracy (so the search needs an accuracy estimator)."""
    return any(o.needs == "proxy" for o in objectives) or any(c.objective.needs == "proxy" for c in constraints)


def checked_predictor(settings: SearchSettings, needed: set[str]) -> Any:
    """The throughput predictor of the predicted objectives/constraints in ``needed``, refused when it does not
    give one of them (``evaluators.predictor``)."""
    name = settings.predictor
    if not name:
        raise ValueError("predicted objectives need a predictor: --throughput predicted:NAME (or --latency)")
    p = load_predictor(name, search_dirs=[Path(settings.results_dir) / "predictors"])
    for n in sorted(needed):
        if n in PREDICTED_KEYS and PREDICTED_KEYS[n] not in p.targets:
            raise ValueError(f"predictor {name!r} gives {p.targets}, not {PREDICTED_KEYS[n]} ({n}): its "
                             f"dataset had no batch-1 latency")
    return p


class Evaluator:
    """Measures one config: static cost, profiler record or prediction, the accuracy estimate. One per process.

    Cheap measurements run first; a cheap constraint that fails skips the expensive ones. The
    accuracy is the ``estimator``'s (default: built from ``settings``, ``nas.estimators``).
    """

    def __init__(self, settings: SearchSettings, objectives: Sequence[Objective], constraints: Sequence[Constraint],
                 estimator: Optional[AccuracyEstimator] = None):
        if settings.device is None:
            raise ValueError("the evaluator runs on a device: resolve the settings first (SearchSettings.resolved)")
        self.settings = settings
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        needs = {o.needs for o in self.objectives} | {c.objective.needs for c in self.constraints}
        self.needs_profile = "profile" in needs
        self.needs_predict = "predict" in needs
        if estimator is None and needs_accuracy(self.objectives, self.constraints):
            estimator = build_estimator(settings)
        self.estimator = estimator
        self._predictor: Any = checked_predictor(settings, self._needed()) if self.needs_predict else None
        self._num_classes: Optional[int] = None
        self.device: str = settings.device
        self.device_name = settings.device

    @property
    def needs_proxy(self) -> bool:
        return self.estimator is not None

    # data ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the dataset once (a missing dataset is one clear error before any trial runs)."""
        if self.estimator is not None:
            self.estimator.prepare(device=self.device, seed=self.settings.seed)
            self._num_classes = self.estimator.num_classes
        else:  # the head's size still depends on the task
            self._num_classes = load_dataset(self.settings.data, data_dir=self.settings.data_dir).num_classes
        if self.device == "cuda":
            self.device_name = torch.cuda.get_device_name(0)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self.prepare()
        assert self._num_classes is not None
        return self._num_classes

    # one config ------------------------------------------------------------------------------
    def measure(self, cfg: FasterViTConfig, record: Callable[[str, Any], None],
                weights_path: Optional[Path] = None, on_report: Optional[OnReport] = None) -> dict[str, Any]:
        """Static cost, then profiler (or predictor), then the estimate; ``weights_path``: where an estimator
        that trains saves the weights; ``on_report(step, accuracy, measured) -> stop``: after each of
        its validations (True stops it: ``EstimateStopped``).

        ``timings`` (seconds per measurement) is recorded however the trial ends: a cheap constraint,
        a profiler error, a rung stop or a failed estimate keeps the seconds it took."""
        m: dict[str, Any] = {}
        timings: dict[str, float] = {}
        try:
            self._measure_steps(cfg, record, m, timings, weights_path, on_report)
        except Exception:  # re-raised: the caller records why the trial ended
            record(R.TIMINGS, timings)
            raise
        record(R.TIMINGS, timings)
        return m

    def _measure_steps(self, cfg: FasterViTConfig, record: Callable[[str, Any], None], m: dict[str, Any],
                       timings: dict[str, float], weights_path: Optional[Path], on_report: Optional[OnReport]) -> None:
        with _timed(timings, "cost_s"):
            cost = static_cost(cfg)
        m["params"], m["flops"] = cost.params, cost.flops
        record(R.PARAMS, cost.params)
        record(R.FLOPS, cost.flops)
        for c in self.constraints:
            if not c.objective.expensive and not c.satisfied(m[c.name]):
                raise _Infeasible(f"constraint {c} fails: {c.name}={m[c.name]:.4g} (checked before expensive "
                                  f"measurements)")
        if self.needs_predict:
            m["predicted"] = self._predict(cfg)
            record(R.PREDICTED, m["predicted"])
        if self.needs_profile:
            with _timed(timings, "profile_s"):
                m["profile"] = self._profile(cfg)
            record(R.PROFILE, m["profile"])
            if m["profile"].get("error"):
                raise TrialFailure(f"profiler: {m['profile']['error']}")
        if self.estimator is not None:
            with _timed(timings, "proxy_s"):
                est = self._estimate(self.estimator, cfg, record, weights_path, on_report, m)
            m["accuracy"] = est.value

    def _profile(self, cfg: FasterViTConfig) -> dict[str, Any]:
        s = self.settings
        if s.batch_size is None or s.profile_mode is None or s.repeats is None:
            raise ValueError("the profiler's batch size, mode and repeats are chosen for the device: resolve the "
                             "settings first (SearchSettings.resolved)")
        rec = measure_throughput(cfg, batch_size=s.batch_size, dtype=s.dtype, mode=s.profile_mode,
                                 repeats=s.repeats, device=s.device, latency_b1="latency" in self._needed(),
                                 pad_channels=s.pad_channels, gelu_epilogue=s.gelu_epilogue)
        return rec.to_dict()

    def _predict(self, cfg: FasterViTConfig) -> dict[str, Any]:
        """Predicted images/s and latency on the predictor's GPU, with what says so (name, GPU, protocol)."""
        p = self._predictor
        return dict(p.predict(cfg), predictor=p.name, gpu_name=p.gpu, mode=p.meta.get("mode"),
                    dtype=p.meta.get("dtype"), batch_size=p.meta.get("batch_size"),
                    outside_training_range=p.outside_range(cfg))

    def _needed(self) -> set[str]:
        return {o.name for o in self.objectives} | {c.name for c in self.constraints}

    def _estimate(self, estimator: AccuracyEstimator, cfg: FasterViTConfig, record: Callable[[str, Any], None],
                  weights_path: Optional[Path], on_report: Optional[OnReport], measured: Mapping[str, Any]) -> Estimate:
        """The estimate, its details and validation history recorded; its failure or stop raised."""
        if self._num_classes is None:
            self.prepare()
        history: list[tuple[int, float]] = []

        def report(step: int, accuracy: float) -> bool:
            history.append((step, accuracy))
            record(R.TRAIN_HISTORY, history)
            return on_report is not None and on_report(step, accuracy, dict(measured))

        est = estimator.estimate(cfg, seed=self.settings.seed, report=report, save_weights=weights_path)
        record(R.PROXY, est.details)
        if est.weights is not None:
            record(R.WEIGHTS_PATH, est.weights)
        if est.failure:
            raise TrialFailure(est.failure)
        if est.stopped:
            raise EstimateStopped(f"stopped at step {history[-1][0] if history else '?'}")
        return est


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """``timings[key]``: the seconds the block took, also when it raised."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = time.perf_counter() - t


class _Infeasible(Exception):
    """A cheap constraint failed: the trial is pruned (no expensive measurement was paid for)."""


class TrialObjective:
    """Sample, measure, record one trial; ``on_epoch`` receives each validation of the train proxy."""

    def __init__(self, space: SearchSpace, evaluator: "Evaluator", objectives: Sequence[Objective],
                 constraints: Sequence[Constraint]):
        self.space, self.evaluator = space, evaluator
        self.objectives, self.constraints = list(objectives), list(constraints)

    def __call__(self, trial: Any, on_epoch: Optional[OnEpoch] = None) -> tuple[float, ...]:
        def record(key: str, value: Any) -> None:
            try:
                trial.set_user_attr(key, value)
            except UpdateFinishedTrialError:
                raise FinishedElsewhere() from None

        start = time.perf_counter()
        record(R.DEVICE, self.evaluator.device_name)
        try:
            return self._measure(trial, record, on_epoch)
        except _Infeasible as e:
            record(R.STATUS, Status.INFEASIBLE)
            record(R.ERROR, str(e))
            raise optuna.TrialPruned(str(e)) from None
        except TrialFailure as e:
            record(R.STATUS, trial.user_attrs.get(R.STATUS, Status.FAILED))
            record(R.ERROR, str(e))
            raise
        except UpdateFinishedTrialError:
            raise FinishedElsewhere() from None
        except optuna.TrialPruned:  # a --fidelity sh rung (or a cached rung stop) stopped it; the reason is recorded
            raise
        except Exception as e:  # unexpected: recorded with its traceback, the study goes on
            pending = interrupt_pending()
            if pending:  # a signal a library wrapped as an ordinary error: still an interrupt
                raise Interrupted(pending) from e
            record(R.STATUS, Status.ERROR)
            record(R.ERROR, f"{type(e).__name__}: {e}")
            record(R.TRACEBACK, traceback.format_exc()[-4000:])
            log.exception("trial %d raised", trial.number)
            raise TrialFailure(f"{type(e).__name__}: {e}") from e
        finally:
            record(R.WALL_S, round(time.perf_counter() - start, 3))
            _free_memory()

    def _measure(self, trial: Any, record: Callable[[str, Any], None],
                 on_epoch: Optional[OnEpoch]) -> tuple[float, ...]:
        ev = self.evaluator
        try:
            values, cfg = suggest_config(trial, self.space)
        except ValueError as e:
            record(R.STATUS, Status.REFUSED)
            raise TrialFailure(f"refused config: {e}") from None
        cfg = cfg.replace(num_classes=ev.num_classes)
        record(R.CONFIG, cfg.to_dict())
        record(R.ARCH_ID, cfg.arch_id)
        record(R.SUMMARY, cfg.summary())
        key = measurement_key(ev)
        record(R.MEASURED_WITH, key)
        source = cached_source(trial.study, cfg.arch_id, trial.number, key)
        if source is not None:
            m = reuse_measurements(source, record)  # raises TrialPruned when the source was stopped at a rung
        else:
            m = self._measure_anew(trial, cfg, record, on_epoch)
        out = []
        for o in self.objectives:
            v = o.extract(m)
            if v is None or not math.isfinite(v):
                raise TrialFailure(f"objective {o.name} has no finite value ({v})")
            out.append(float(v))
            record(R.objective_key(o.name), float(v))
        for c in self.constraints:
            value = c.objective.extract(m)
            if value is None:
                raise TrialFailure(f"constraint {c}: {c.name} was not measured")
            trial.set_constraint(str(c), c.violation(float(value)))
        record(R.STATUS, Status.COMPLETE)
        return tuple(out)

    def _measure_anew(self, trial: Any, cfg: FasterViTConfig, record: Callable[[str, Any], None],
                      on_epoch: Optional[OnEpoch]) -> dict[str, Any]:
        """Measure ``cfg`` (not served from the cache); a rung stop ends the trial PRUNED with the rung's reason."""
        ev = self.evaluator
        weights = Path(ev.settings.results_dir, "weights", trial.study.study_name, f"trial-{trial.number}.safetensors")
        rungs = ev.estimator.rungs if ev.estimator is not None else []
        ctl = RungController(study=trial.study, number=trial.number, objectives=self.objectives, rungs=rungs,
                             eta=ev.settings.eta, record=record) if rungs else None

        def on_report(step: int, accuracy: float, measured: dict) -> bool:
            if ctl is not None and ctl(step, accuracy, measured):
                return True
            if on_epoch is not None:
                on_epoch(step, accuracy, measured)
            return False

        try:
            return ev.measure(cfg, record, weights_path=weights, on_report=on_report)
        except EstimateStopped as e:
            raise optuna.TrialPruned(ctl.reason if ctl is not None and ctl.reason else str(e)) from None


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ interrupts
class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM/SIGHUP while a study ran; ``signal_name`` says which."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


_PENDING: list[str] = []  # signals received inside signals_as_interrupts (main thread)


def interrupt_pending() -> Optional[str]:
    """The signal that interrupted this process, if any: an ``Interrupted`` raised inside a library
    (e.g. through torch's C++ code) may come back as an ordinary exception; this tells it apart."""
    return _PENDING[-1] if _PENDING else None


class signals_as_interrupts:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted``, so the running trial records why (main thread only)."""

    def __enter__(self) -> None:
        self._old: dict[int, Any] = {}
        _PENDING.clear()
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _raise_interrupted)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _raise_interrupted(signum: int, frame: Any) -> None:
    # once: a second SIGTERM (a parent stopping its workers again) must not cut the cleanup that
    # records the interrupted trial; a second Ctrl-C still stops at once (KeyboardInterrupt)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    name = signal.Signals(signum).name
    _PENDING.append(name)
    raise Interrupted(name)
