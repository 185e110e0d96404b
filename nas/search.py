"""Multi-objective architecture search with Optuna: sample from a space, measure, record everything.

    >>> from nas.search import SearchSettings, run_search
    >>> result = run_search(SearchSettings(objectives=("accuracy", "throughput"), trials=20))

Every trial stores its full config and every measurement (proxy values, the profiler record with
its GPU name, params, FLOPs, timings) as user attributes. A config the generator refuses, an
out-of-memory, a NaN proxy — each becomes a FAILED trial with ``user_attrs["error"]``; the study
goes on. Re-running with the same ``study`` resumes and adds trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from search_spaces import PRESETS, FasterViTConfig
from search_spaces.space import SearchSpace, load_space

from .objectives import Constraint, Objective, metric_labels, parse_constraint, parse_objectives, portable_settings
from .samplers import make_sampler
from .storage import describe_storage, get_storage

__all__ = ["SearchSettings", "SearchResult", "SearchRun", "TrialFailure", "run_search", "suggest_config", "Evaluator",
           "create_or_load_study", "summarize", "REFERENCE_PRESETS"]

log = logging.getLogger("nas.search")
REFERENCE_PRESETS = ("faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_3_224")


class TrialFailure(Exception):
    """A trial that cannot produce objective values; its reason is recorded on the trial."""


@dataclass
class SearchSettings:
    """Everything ``nas search`` takes; ``None`` means "choose for the device" (see ``resolved``)."""

    objectives: Sequence[str] = ("accuracy", "throughput")
    proxy: str = "jacob_cov"
    trials: Optional[int] = None
    timeout: Optional[float] = None
    sampler: str = "nsga2"
    constraints: Sequence[str] = ()
    space: Any = "default"
    data: str = "fashion-mnist"
    data_dir: Optional[str] = None
    storage: Any = None
    study: str = "default"
    device: Optional[str] = None
    seed: int = 0
    enqueue_presets: Optional[bool] = None
    # accuracy proxy
    proxy_resolution: Optional[int] = None
    proxy_batch_size: Optional[int] = None
    train_epochs: float = 1.0
    train_subset: Optional[int] = 10000
    # profiler
    batch_size: Optional[int] = None
    profile_mode: Optional[str] = None
    dtype: str = "fp16"
    repeats: Optional[int] = None
    # output
    results_dir: str = "results"
    quiet: bool = False
    max_consecutive_failures: int = 20
    heartbeat: bool = False

    def resolved(self) -> "SearchSettings":
        """Fill device-dependent defaults (GPU: paper protocol; CPU: a small, fast budget)."""
        s = dataclasses.replace(self)
        if s.device is None:
            s.device = "cuda" if _cuda_available() else "cpu"
        if s.device not in ("cuda", "cpu"):
            raise ValueError(f"device={s.device!r} must be 'cuda' or 'cpu'")
        if s.device == "cuda" and not _cuda_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use --device cpu")
        gpu = s.device == "cuda"
        if s.trials is None and s.timeout is None:
            s.trials = 40 if gpu else 8
        if s.enqueue_presets is None:
            s.enqueue_presets = gpu
        s.proxy_resolution = s.proxy_resolution or (128 if gpu else 96)
        s.proxy_batch_size = s.proxy_batch_size or (64 if gpu else 16)
        s.batch_size = s.batch_size or (128 if gpu else 2)
        s.profile_mode = s.profile_mode or ("cudagraph" if gpu else "eager")
        s.repeats = s.repeats or (10 if gpu else 2)
        if s.trials is not None and s.trials < 1:
            raise ValueError(f"trials={s.trials} must be >= 1")
        if s.timeout is not None and s.timeout <= 0:
            raise ValueError(f"timeout={s.timeout} must be > 0 seconds")
        return s

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = self.space if isinstance(self.space, str) else getattr(self.space, "name", "custom")
        d["storage"] = self.storage if isinstance(self.storage, (str, type(None))) else type(self.storage).__name__
        d["objectives"], d["constraints"] = list(self.objectives), list(self.constraints)
        return d


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


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
        self._batch = None
        self._num_classes: Optional[int] = None
        self.device_name = settings.device

    # data ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the dataset once (a missing dataset is one clear error before any trial runs)."""
        from evaluators import data as data_mod

        ds = data_mod.load_dataset(self.s.data, data_dir=self.s.data_dir)
        self._num_classes = ds.num_classes
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
                weights_path: Optional[Path] = None) -> dict[str, Any]:
        """Static cost, then profiler, then proxy; ``weights_path``: where a trained proxy saves weights."""
        from evaluators.cost import static_cost

        m: dict[str, Any] = {}
        timings: dict[str, float] = {}
        t = time.perf_counter()
        cost = static_cost(cfg)
        m["params"], m["flops"] = cost.params, cost.flops
        timings["cost_s"] = time.perf_counter() - t
        record("params", cost.params)
        record("flops", cost.flops)
        for c in self.constraints:
            if not c.objective.expensive and not c.satisfied(m[c.name]):
                record("timings", timings)
                raise _Infeasible(f"constraint {c} fails: {c.name}={m[c.name]:.4g} (checked before expensive measurements)")
        if self.needs_profile:
            t = time.perf_counter()
            m["profile"] = self._profile(cfg)
            timings["profile_s"] = time.perf_counter() - t
            record("profile", m["profile"])
            if m["profile"].get("error"):
                record("timings", timings)
                raise TrialFailure(f"profiler: {m['profile']['error']}")
        if self.needs_proxy:
            t = time.perf_counter()
            m["accuracy"], details = self._proxy(cfg, record, weights_path)
            timings["proxy_s"] = time.perf_counter() - t
            record("proxy", details)
        record("timings", timings)
        return m

    def _profile(self, cfg: FasterViTConfig) -> dict[str, Any]:
        from evaluators.profiler import measure_throughput

        rec = measure_throughput(cfg, batch_size=self.s.batch_size, dtype=self.s.dtype, mode=self.s.profile_mode,
                                 repeats=self.s.repeats, device=self.s.device, latency_b1="latency" in self._needed())
        return rec.to_dict()

    def _needed(self) -> set[str]:
        return {o.name for o in self.objectives} | {c.name for c in self.constraints}

    def _proxy(self, cfg: FasterViTConfig, record: Callable[[str, Any], None],
               weights_path: Optional[Path] = None) -> tuple[float, dict[str, Any]]:
        try:
            small = cfg.at_resolution(self.s.proxy_resolution).replace(num_classes=self.num_classes)
        except ValueError as e:
            raise TrialFailure(f"proxy resolution {self.s.proxy_resolution}: {e}") from None
        if self.s.proxy == "train":
            from evaluators.train import train_proxy

            history: list[tuple[int, float]] = []

            def report(step: int, acc: float) -> bool:
                history.append((step, acc))
                record("train_history", history)
                return False

            res = train_proxy(small, data=self.s.data, data_dir=self.s.data_dir, epochs=self.s.train_epochs,
                              subset=self.s.train_subset, seed=self.s.seed, device=self.s.device, report=report,
                              progress=False, save_weights=weights_path)
            details = res.to_dict()
            if res.status == "nan":
                raise TrialFailure(f"train proxy: {res.reason}")
            if weights_path is not None and Path(weights_path).is_file():
                # trained at the proxy resolution; parameter shapes do not depend on it, so the
                # weights load into the full-resolution config (nas export marks them "trained")
                record("weights_path", str(Path(weights_path).resolve()))
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


# ------------------------------------------------------------------------------------------ study
def create_or_load_study(settings: SearchSettings, objectives: Sequence[Objective], *, sampler: Any = None) -> Any:
    """Create the study (objective names set for the dashboard) or load it, refusing a mismatch."""
    import optuna

    storage = get_storage(settings.storage, heartbeat=settings.heartbeat)
    names = [o.name for o in objectives]
    try:
        existing = optuna.load_study(study_name=settings.study, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        have = existing.user_attrs.get("objectives") or existing.metric_names
        if have is not None and list(have) != names:
            raise ValueError(f"study {settings.study!r} exists with objectives {list(have)}, not {names}; "
                             f"use another --study name")
        prev_proxy = existing.user_attrs.get("proxy")
        if "accuracy" in names and prev_proxy not in (None, settings.proxy):
            raise ValueError(f"study {settings.study!r} was run with --proxy {prev_proxy}, not {settings.proxy}: "
                             f"values would not be comparable; use another --study name")
        return optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler,
                                directions=[o.direction for o in objectives])
    study.set_metric_names(metric_labels(names, settings.to_dict()))  # what optuna-dashboard shows
    study.set_user_attr("objectives", names)
    study.set_user_attr("proxy", settings.proxy if "accuracy" in names else None)
    study.set_user_attr("settings", _jsonable(portable_settings(settings.to_dict())))
    return study


@dataclass
class SearchResult:
    study_name: str
    storage: str
    objectives: list[str]
    n_complete: int
    n_failed: int
    n_pruned: int
    pareto: list[dict[str, Any]] = field(default_factory=list)
    hypervolume: Optional[float] = None
    report: Optional[str] = None
    log_file: Optional[str] = None
    stopped_reason: Optional[str] = None


def _make_objective(space: SearchSpace, evaluator: Evaluator, objectives: Sequence[Objective],
                    constraints: Sequence[Constraint]) -> Callable[[Any], tuple[float, ...]]:
    import optuna

    def objective(trial: "optuna.trial.Trial") -> tuple[float, ...]:
        record = trial.set_user_attr
        start = time.perf_counter()
        record("device", evaluator.device_name)
        try:
            try:
                values, cfg = suggest_config(trial, space)
            except ValueError as e:
                record("status", "refused")
                raise TrialFailure(f"refused config: {e}") from None
            cfg = cfg.replace(num_classes=evaluator.num_classes)
            record("config", cfg.to_dict())
            record("arch_id", cfg.arch_id)
            record("summary", cfg.summary())
            weights = (Path(evaluator.s.results_dir) / "weights" / trial.study.study_name
                       / f"trial-{trial.number}.safetensors")
            m = evaluator.measure(cfg, record, weights_path=weights)
            out = []
            for o in objectives:
                v = o.extract(m)
                if v is None or not math.isfinite(v):
                    raise TrialFailure(f"objective {o.name} has no finite value ({v})")
                out.append(float(v))
                record(f"objective_{o.name}", float(v))
            for c in constraints:
                value = c.objective.extract(m)
                trial.set_constraint(str(c), c.violation(float(value)))
            record("status", "complete")
            return tuple(out)
        except _Infeasible as e:
            record("status", "infeasible")
            record("error", str(e))
            raise optuna.TrialPruned(str(e)) from None
        except TrialFailure as e:
            record("status", trial.user_attrs.get("status", "failed") if hasattr(trial, "user_attrs") else "failed")
            record("error", str(e))
            raise
        except Exception as e:  # unexpected: recorded with its traceback, the study goes on
            record("status", "error")
            record("error", f"{type(e).__name__}: {e}")
            record("traceback", traceback.format_exc()[-4000:])
            log.exception("trial %d raised", trial.number)
            raise TrialFailure(f"{type(e).__name__}: {e}") from e
        finally:
            record("wall_s", round(time.perf_counter() - start, 3))
            _free_memory()

    return objective


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - cleanup must never fail a trial
        pass


def enqueue_presets(study: Any, space: SearchSpace) -> list[str]:
    """Queue FasterViT-0..3 (those in the space) as reference trials; skipped when already there."""
    queued = []
    for name in REFERENCE_PRESETS:
        params = space.params_for(PRESETS[name])
        if params is None:
            continue
        study.enqueue_trial(params, user_attrs={"preset": name}, skip_if_exists=True)
        queued.append(name)
    return queued


def _setup_logging(results_dir: Path, study: str) -> Path:
    import optuna

    logs = results_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{study}.log"
    root = logging.getLogger("nas")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_nas_study", None):
            root.removeHandler(h)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._nas_study = study  # type: ignore[attr-defined]
    root.addHandler(handler)
    optuna.logging.disable_default_handler()
    opt_log = logging.getLogger("optuna")
    opt_log.setLevel(logging.INFO)
    if not any(getattr(h, "_nas_study", None) == study for h in opt_log.handlers):
        for h in list(opt_log.handlers):
            if getattr(h, "_nas_study", None):
                opt_log.removeHandler(h)
        opt_log.addHandler(handler)
    return path


class SearchRun:
    """One process's view of a study: resolved settings, space, evaluator, study and objective.

    ``run_search`` drives one in the foreground; parallel workers and the Ray backend build their
    own and call ``optimize`` / ``objective`` (so every backend records trials identically).
    """

    def __init__(self, settings: SearchSettings, *, enqueue: bool = True, sampler: Any = None):
        import warnings

        import optuna

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        s = settings.resolved()
        self.settings = s
        self.objectives = parse_objectives(s.objectives)
        constraints = [parse_constraint(c) for c in s.constraints]
        self.space = load_space(s.space)
        constraints += [parse_constraint(c) for c in self.space.constraints]
        self.constraints = constraints
        self.results_dir = Path(s.results_dir)
        self.log_file = _setup_logging(self.results_dir, s.study)
        self.evaluator = Evaluator(s, self.objectives, constraints)
        self.evaluator.prepare()  # dataset problems surface here, before any trial
        if sampler is None:
            sampler = make_sampler(s.sampler, seed=s.seed, n_trials=s.trials or 100)
        self.study = create_or_load_study(s, self.objectives, sampler=sampler)
        self.storage_desc = describe_storage(s.storage) if s.storage is None or isinstance(s.storage, str) \
            else type(s.storage).__name__
        self.queued = enqueue_presets(self.study, self.space) if (enqueue and s.enqueue_presets) else []
        from .parallel import fail_stale_trials, with_heartbeat

        # trials left RUNNING by a killed process become FAIL on resume; this process's trials beat while they run
        self.stale_failed = fail_stale_trials(self.study)
        self.objective = with_heartbeat(_make_objective(self.space, self.evaluator, self.objectives, constraints))
        self.stopped_reason: Optional[str] = None
        log.info("study %s on %s; settings %s", s.study, self.storage_desc, json.dumps(_jsonable(s.to_dict())))

    def failure_guard(self, study: Any, trial: Any) -> None:
        """Optuna callback: stop after ``max_consecutive_failures`` failed trials in a row."""
        import optuna

        n = self.settings.max_consecutive_failures
        recent = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()][-n:]
        if len(recent) == n and all(t.state == optuna.trial.TrialState.FAIL for t in recent):
            self.stopped_reason = (f"stopped after {n} failed trials in a row; last error: "
                                   f"{recent[-1].user_attrs.get('error')}")
            log.warning(self.stopped_reason)
            study.stop()

    def optimize(self, n_trials: Optional[int], timeout: Optional[float] = None,
                 callbacks: Sequence[Callable[[Any, Any], None]] = ()) -> None:
        self.study.optimize(self.objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailure,),
                            callbacks=[*callbacks, self.failure_guard], gc_after_trial=False)

    def header(self) -> dict[str, str]:
        s = self.settings
        return dict(study=s.study, storage=self.storage_desc, device=self.evaluator.device_name,
                    objectives=", ".join(o.name for o in self.objectives),
                    proxy=s.proxy if self.evaluator.needs_proxy else "n/a", sampler=s.sampler,
                    presets=", ".join(self.queued) or "none", log=str(self.log_file))

    def finish(self) -> "SearchResult":
        """Write the report and summarise the study (all trials, from every process)."""
        return summarize(self.study, self.settings, storage_desc=self.storage_desc, log_file=self.log_file,
                         stopped_reason=self.stopped_reason)


def summarize(study: Any, settings: SearchSettings, *, storage_desc: str, log_file: Optional[Path] = None,
              stopped_reason: Optional[str] = None) -> "SearchResult":
    import optuna

    from .pareto import hypervolume, objective_names, pareto_rows, write_report

    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    report = write_report(study, Path(settings.results_dir) / "reports" / f"{settings.study}.html")
    return SearchResult(
        study_name=settings.study, storage=storage_desc, objectives=objective_names(study),
        n_complete=sum(t.state == states.COMPLETE for t in trials),
        n_failed=sum(t.state == states.FAIL for t in trials),
        n_pruned=sum(t.state == states.PRUNED for t in trials),
        pareto=pareto_rows(study), hypervolume=hypervolume(study), report=str(report) if report else None,
        log_file=str(log_file) if log_file else None, stopped_reason=stopped_reason)


def run_search(settings: SearchSettings, *, console: Any = None,
               on_trial: Optional[Callable[[Any, Any], None]] = None) -> SearchResult:
    """Run (or resume) a study in this process; returns a summary. Bad settings raise ValueError up front."""
    from .progress import SearchProgress

    run = SearchRun(settings)
    s = run.settings
    progress = SearchProgress(run.study, run.objectives, total=s.trials, timeout=s.timeout, console=console,
                              quiet=s.quiet, header=run.header())
    callbacks = [progress.callback] + ([on_trial] if on_trial is not None else [])
    with progress:
        run.optimize(s.trials, s.timeout, callbacks)
    return run.finish()
