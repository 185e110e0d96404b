"""One trial of a study: sample a config, measure it, record everything (keys in ``nas.record``).

``TrialObjective`` is the objective every backend runs (this process, worker processes, Ray
actors); ``Evaluator`` holds what one process needs to measure (the dataset, the proxy batch).
A refused config, an OOM, a NaN proxy: each raises ``TrialFailure`` after recording the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from search_spaces import FasterViTConfig
from search_spaces.space import SearchSpace

from . import record as R
from .cache import cached_source, measurement_key, reuse_measurements
from .objectives import Constraint, Objective
from .record import Status
from .settings import SearchSettings

__all__ = ["TrialFailure", "FinishedElsewhere", "OnEpoch", "suggest_config", "Evaluator", "TrialObjective", "Interrupted",
           "interrupt_pending"]

log = logging.getLogger("nas.search")
OnEpoch = Callable[[int, float, dict], None]  # (step, validation accuracy, measurements so far)


class TrialFailure(Exception):
    """A trial that cannot produce objective values; its reason is recorded on the trial."""


class FinishedElsewhere(BaseException):
    """Another process finished this trial (marked stale, told by the Ray driver): stop quietly.

    A BaseException so the objective's ``except Exception`` does not record it as the trial's error.
    """


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
class Evaluator:
    """Measures one config: static cost, profiler record, accuracy proxy. One per process.

    Cheap measurements run first; a cheap constraint that fails skips the expensive ones.
    """

    def __init__(self, settings: SearchSettings, objectives: Sequence[Objective], constraints: Sequence[Constraint]):
        self.s = settings
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        needs = {o.needs for o in self.objectives} | {c.objective.needs for c in self.constraints}
        self.needs_profile = "profile" in needs
        self.needs_proxy = "proxy" in needs
        self.needs_predict = "predict" in needs
        self._predictor: Any = None
        self._batch = None
        self._num_classes: Optional[int] = None
        self.steps_per_epoch = 0
        self._splits: Any = None
        self.rung_epochs: list[float] = []  # --fidelity sh: rung budgets (epochs) and their optimizer steps
        self.rung_steps: list[int] = []
        self.device_name = settings.device

    # data ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the dataset once (a missing dataset is one clear error before any trial runs)."""
        from evaluators import data as data_mod

        ds = data_mod.load_dataset(self.s.data, data_dir=self.s.data_dir)
        self._num_classes = ds.num_classes
        self._splits = ds if self.s.proxy == "train" else None  # loaded once, not once per trial
        n_train = len(ds.train) if self.s.train_subset is None else min(self.s.train_subset, len(ds.train))
        self.steps_per_epoch = n_train // self.s.train_batch_size
        if self.needs_proxy and self.s.proxy == "train" and self.s.fidelity == "sh":
            from .fidelity import rung_steps, rungs

            self.rung_epochs = rungs(self.s.min_budget, self.s.eta, self.s.train_epochs)
            self.rung_steps = rung_steps(self.rung_epochs, self.steps_per_epoch)  # refused here, before any trial
        if self.needs_proxy and self.s.proxy != "train":
            self._batch = data_mod.sample_batch(ds.train, batch_size=self.s.proxy_batch_size,
                                                resolution=self.s.proxy_resolution, seed=self.s.seed,
                                                device=self.s.device)
        if self.s.device == "cuda":
            import torch

            self.device_name = torch.cuda.get_device_name(0)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self.prepare()
        return self._num_classes  # type: ignore[return-value]

    # one config ------------------------------------------------------------------------------
    def measure(self, cfg: FasterViTConfig, record: Callable[[str, Any], None],
                weights_path: Optional[Path] = None, on_epoch: Optional[OnEpoch] = None) -> dict[str, Any]:
        """Static cost, then profiler, then proxy; ``weights_path``: where a trained proxy saves weights;
        ``on_epoch(step, accuracy, measured)``: called after each validation of the train proxy.

        ``timings`` (seconds per measurement) is recorded however the trial ends: a cheap constraint,
        a profiler error, a rung stop or a failed proxy keeps the seconds it took."""
        m: dict[str, Any] = {}
        timings: dict[str, float] = {}
        try:
            self._measure_steps(cfg, record, m, timings, weights_path, on_epoch)
        except Exception:  # re-raised: the caller records why the trial ended
            record(R.TIMINGS, timings)
            raise
        record(R.TIMINGS, timings)
        return m

    def _measure_steps(self, cfg: FasterViTConfig, record: Callable[[str, Any], None], m: dict[str, Any],
                       timings: dict[str, float], weights_path: Optional[Path], on_epoch: Optional[OnEpoch]) -> None:
        from evaluators.cost import static_cost

        with _timed(timings, "cost_s"):
            cost = static_cost(cfg)
        m["params"], m["flops"] = cost.params, cost.flops
        record(R.PARAMS, cost.params)
        record(R.FLOPS, cost.flops)
        for c in self.constraints:
            if not c.objective.expensive and not c.satisfied(m[c.name]):
                raise _Infeasible(f"constraint {c} fails: {c.name}={m[c.name]:.4g} (checked before expensive measurements)")
        if self.needs_predict:
            m["predicted"] = self._predict(cfg)
            record(R.PREDICTED, m["predicted"])
        if self.needs_profile:
            with _timed(timings, "profile_s"):
                m["profile"] = self._profile(cfg)
            record(R.PROFILE, m["profile"])
            if m["profile"].get("error"):
                raise TrialFailure(f"profiler: {m['profile']['error']}")
        if self.needs_proxy:
            with _timed(timings, "proxy_s"):
                m["accuracy"], details = self._proxy(cfg, record, weights_path, on_epoch, m)
            record(R.PROXY, details)

    def _profile(self, cfg: FasterViTConfig) -> dict[str, Any]:
        from evaluators.profiler import measure_throughput

        rec = measure_throughput(cfg, batch_size=self.s.batch_size, dtype=self.s.dtype, mode=self.s.profile_mode,
                                 repeats=self.s.repeats, device=self.s.device, latency_b1="latency" in self._needed())
        return rec.to_dict()

    def _predict(self, cfg: FasterViTConfig) -> dict[str, Any]:
        """Predicted images/s and latency on the predictor's GPU, with what says so (name, GPU, protocol)."""
        if self._predictor is None:
            from evaluators.predictor import load_predictor

            self._predictor = load_predictor(self.s.predictor, search_dirs=[Path(self.s.results_dir) / "predictors"])
        p = self._predictor
        return dict(p.predict(cfg), predictor=p.name, gpu_name=p.gpu, mode=p.meta.get("mode"),
                    dtype=p.meta.get("dtype"), batch_size=p.meta.get("batch_size"),
                    outside_training_range=p.outside_range(cfg))

    def _needed(self) -> set[str]:
        return {o.name for o in self.objectives} | {c.name for c in self.constraints}

    def _proxy(self, cfg: FasterViTConfig, record: Callable[[str, Any], None], weights_path: Optional[Path] = None,
               on_epoch: Optional[OnEpoch] = None, measured: Optional[dict] = None) -> tuple[float, dict[str, Any]]:
        try:
            small = cfg.at_resolution(self.s.proxy_resolution).replace(num_classes=self.num_classes)
        except ValueError as e:
            raise TrialFailure(f"proxy resolution {self.s.proxy_resolution}: {e}") from None
        if self.s.proxy == "train":
            from evaluators.train import train_proxy

            history: list[tuple[int, float]] = []

            def report(step: int, acc: float) -> bool:
                history.append((step, acc))
                record(R.TRAIN_HISTORY, history)
                if on_epoch is not None:
                    on_epoch(step, acc, dict(measured or {}))
                return False

            from .fidelity import eval_every

            res = train_proxy(small, data=self._splits if self._splits is not None else self.s.data,
                              data_dir=self.s.data_dir, epochs=self.s.train_epochs,
                              subset=self.s.train_subset, seed=self.s.seed, device=self.s.device, report=report,
                              progress=False, save_weights=weights_path, batch_size=self.s.train_batch_size,
                              val_subset=self.s.train_val_subset,
                              eval_every=eval_every(self.rung_steps) if self.rung_steps else None)
            details = res.to_dict()
            if res.status == "nan":
                raise TrialFailure(f"train proxy: {res.reason}")
            if weights_path is not None and Path(weights_path).is_file():
                # trained at the proxy resolution; parameter shapes do not depend on it, so the
                # weights load into the full-resolution config (nas export marks them "trained")
                record(R.WEIGHTS_PATH, str(Path(weights_path).resolve()))
            return float(res.top1), {"train": details}
        from evaluators.proxies import compute_proxies

        results = compute_proxies(small, [self.s.proxy], self._batch, device=self.s.device, seed=self.s.seed)
        r = results[self.s.proxy]
        details = {name: _jsonable(res) for name, res in results.items()}
        if r.error:
            raise TrialFailure(f"proxy {self.s.proxy}: {r.error}")
        if r.value is None or not math.isfinite(r.value):
            raise TrialFailure(f"proxy {self.s.proxy} gave a non-finite value ({r.value})")
        return float(r.value), details


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


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


class TrialObjective:
    """Sample, measure, record one trial; ``on_epoch`` receives each validation of the train proxy."""

    def __init__(self, space: SearchSpace, evaluator: "Evaluator", objectives: Sequence[Objective],
                 constraints: Sequence[Constraint]):
        self.space, self.evaluator = space, evaluator
        self.objectives, self.constraints = list(objectives), list(constraints)

    def __call__(self, trial: Any, on_epoch: Optional[OnEpoch] = None) -> tuple[float, ...]:
        import optuna
        from optuna.exceptions import UpdateFinishedTrialError

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
            if interrupt_pending():  # a signal a library wrapped as an ordinary error: still an interrupt
                raise Interrupted(interrupt_pending()) from e
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
            weights = Path(ev.s.results_dir) / "weights" / trial.study.study_name / f"trial-{trial.number}.safetensors"
            m = ev.measure(cfg, record, weights_path=weights, on_epoch=self._rung_hook(trial, record, on_epoch))
        out = []
        for o in self.objectives:
            v = o.extract(m)
            if v is None or not math.isfinite(v):
                raise TrialFailure(f"objective {o.name} has no finite value ({v})")
            out.append(float(v))
            record(R.objective_key(o.name), float(v))
        for c in self.constraints:
            trial.set_constraint(str(c), c.violation(float(c.objective.extract(m))))
        record(R.STATUS, Status.COMPLETE)
        return tuple(out)


    def _rung_hook(self, trial: Any, record: Callable[[str, Any], None], on_epoch: Optional[OnEpoch]) -> Optional[OnEpoch]:
        """``on_epoch`` with, under ``--fidelity sh``, the rung controller (nas.fidelity) in front of it."""
        ev = self.evaluator
        if not ev.rung_steps:
            return on_epoch
        from .fidelity import RungController, chain

        ctl = RungController(study=trial.study, number=trial.number, objectives=self.objectives,
                             rung_epochs=ev.rung_epochs, steps=ev.rung_steps, eta=ev.s.eta, record=record)
        return chain(ctl, on_epoch)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ interrupts
class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM/SIGHUP while a study ran; ``signal_name`` says which."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


_PENDING: list[str] = []  # signals received inside _signals_as_interrupts (main thread)


def interrupt_pending() -> Optional[str]:
    """The signal that interrupted this process, if any: an ``Interrupted`` raised inside a library
    (e.g. through torch's C++ code) may come back as an ordinary exception; this tells it apart."""
    return _PENDING[-1] if _PENDING else None


class _signals_as_interrupts:
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
