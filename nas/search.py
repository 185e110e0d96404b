"""Multi-objective architecture search with Optuna: one study driver, three backends.

    >>> from nas.search import SearchSettings, run_search
    >>> result = run_search(SearchSettings(objectives=("accuracy", "throughput"), trials=20))

``StudyDriver`` owns what every backend shares: the settings checked before any study exists
(``SearchSettings.validated``), the study created once (directions, metric names, settings,
queued presets), stale trials of dead processes failed, the consecutive-failure guard, progress,
Ctrl-C handling (every interrupted trial ends FAIL with the reason; the message says what was
kept and how to resume) and the summary. A backend only runs trials: ``LocalBackend`` here,
``nas.parallel.ParallelBackend`` (worker processes) and ``nas.ray_backend.RayBackend`` (Ray Tune).

Trials are run by a ``TrialRunner`` (one per process: evaluator with its dataset, the study, the
objective of ``nas.trial``), through ``run_trials`` (ask, heartbeat, objective, tell). Every trial
stores its full config and every measurement as user attributes (keys in ``nas.record``). A config
the generator refuses, an out-of-memory, a NaN proxy — each becomes a FAILED trial with
``user_attrs["error"]``; the study goes on. Re-running with the same ``study`` resumes and adds trials.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import optuna
from rich.console import Console
from rich.markup import escape

from evaluators.estimators import AccuracyEstimator, jsonable
from search_spaces import PRESETS
from search_spaces.space import SearchSpace, load_space

from . import record as R
from .adapters import storage_of
from .estimators import build_estimator
from .front import REFERENCE_PRESETS, ReferencePoint, hypervolume, objective_labels, objective_names, pareto_rows
from .heartbeat import TrialHeartbeat, fail_own_trials, fail_stale_trials, fail_trial, trial_id
from .labels import metric_labels
from .objectives import PREDICTED_KEYS, Constraint, Objective, parse_constraint, parse_objectives
from .progress import SearchProgress
from .record import Status
from .references import MeasureProgress, presets_to_measure, report_references
from .report import write_report
from .resume import objective_conflict, refuse_conflicts, resume_conflicts, space_meaning
from .samplers import sampler_for
from .settings import SearchSettings, settings_for_study
from .storage import (
    StorageError,
    describe_storage,
    get_storage,
    os_message,
    storage_errors,
    storage_exists,
    writable_dir,
)
from .trial import (
    Evaluator,
    FinishedElsewhere,
    Interrupted,
    OnEpoch,
    TrialFailure,
    TrialObjective,
    checked_predictor,
    interrupt_pending,
    needs_accuracy,
    signals_as_interrupts,
    suggest_config,
)

__all__ = ["SearchSettings", "SearchResult", "StudyDriver", "TrialRunner", "Backend", "LocalBackend",
           "TrialFailure", "Interrupted", "run_search", "run_trials", "suggest_config", "Evaluator",
           "create_or_load_study", "refuse_resume", "summarize", "trial_line", "consecutive_failures",
           "state_counts", "REFERENCE_PRESETS"]

log = logging.getLogger("nas.search")


# ------------------------------------------------------------------------------------------ study
def create_or_load_study(settings: SearchSettings, objectives: Sequence[Objective], *, sampler: Any = None,
                         storage: Any = None, estimator: Optional[AccuracyEstimator] = None,
                         space: Optional[SearchSpace] = None, compare: bool = True) -> Any:
    """Create the study (objective names set for the dashboard; what its values mean stored: the estimator's
    identity, the space, the settings) or load it, refusing a resume whose values would not compare with the
    study's (``nas.resume``). ``estimator``: the accuracy's (default: built from ``settings`` when accuracy is
    an objective); ``space``: the loaded space (default: ``settings.space``). ``compare=False``: a worker's
    (the driver compared this run's settings before any worker started; a worker's paths are absolute)."""
    storage = storage if storage is not None else get_storage(settings.storage, heartbeat=settings.heartbeat,
                                                              create=True)
    names = [o.name for o in objectives]
    if estimator is None and "accuracy" in names:
        estimator = build_estimator(settings.resolved())
    try:
        existing = optuna.load_study(study_name=settings.study, storage=storage)
    except KeyError:
        existing = None
    space = space or load_space(settings.space)
    if existing is not None:
        if compare:
            refuse_resume(existing, settings, objectives, estimator=estimator, space=space)
            follow_moved_estimator(existing, settings, estimator)
        return optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler,
                                directions=[o.direction for o in objectives])
    labels = metric_labels(names, settings.to_dict(), accuracy=estimator.label if estimator else None)
    study.set_metric_names(labels)  # what optuna-dashboard shows
    study.set_user_attr(R.STUDY_OBJECTIVES, names)
    study.set_user_attr(R.STUDY_PROXY, settings.proxy if estimator else None)
    study.set_user_attr(R.STUDY_ESTIMATOR, estimator.identity if estimator else None)
    study.set_user_attr(R.STUDY_SPACE, space_meaning(space))
    study.set_user_attr(R.STUDY_SETTINGS, jsonable(settings_for_study(settings.to_dict())))
    return study


def follow_moved_estimator(study: Any, settings: SearchSettings, estimator: Optional[AccuracyEstimator]) -> None:
    """The same estimator under another ``--proxy`` (a supernet folder moved or copied, with an
    identical identity): the study records where it is now, so that ``nas confirm`` and the reports
    find it, and says so."""
    stored = study.user_attrs.get(R.STUDY_PROXY)
    if estimator is None or stored in (None, settings.proxy):
        return
    log.warning(f"study {settings.study}: --proxy {stored} is now --proxy {settings.proxy} (the same trained "
                f"estimator, moved or copied); the study records the new place")
    study.set_user_attr(R.STUDY_PROXY, settings.proxy)
    recorded = dict(study.user_attrs.get(R.STUDY_SETTINGS) or {})
    if "proxy" in recorded:
        recorded["proxy"] = settings.proxy
        study.set_user_attr(R.STUDY_SETTINGS, recorded)


def refuse_resume(study: Any, settings: SearchSettings, objectives: Sequence[Objective],
                  constraints: Sequence[Constraint] = (), *, estimator: Optional[AccuracyEstimator] = None,
                  space: Optional[SearchSpace] = None) -> None:
    """A resumed study keeps its objectives and what its values mean (``nas.resume``): ValueError naming
    each setting that would change it, with the stored and the new value."""
    other = objective_conflict(study, [o.name for o in objectives])
    if other:
        raise ValueError(other)
    refuse_conflicts(study, resume_conflicts(study, settings, objectives, constraints, estimator=estimator,
                                             space=space))


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
    n_running: int = 0
    n_waiting: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # last failed (or pruned) trials: number, error
    labels: list[str] = field(default_factory=list)  # what each objective measures (the study's metric names)
    added_measured: Optional[int] = None  # trials of this run that completed or were pruned (None: not counted)

    @property
    def n_trials(self) -> int:
        return self.n_complete + self.n_failed + self.n_pruned + self.n_running + self.n_waiting

    @property
    def nothing_completed(self) -> bool:
        """No trial of this run completed or was pruned at a rung or constraint: every one failed, or none ran."""
        return self.added_measured == 0

    @property
    def ok(self) -> bool:
        """False when the study was stopped by the failure guard, a worker died or no trial of this run
        completed: the CLI exits 1."""
        return self.stopped_reason is None and not self.nothing_completed


def enqueue_presets(study: Any, space: SearchSpace) -> list[str]:
    """Queue FasterViT-0..3 (those in the space) as reference trials; skipped when already there."""
    queued = []
    for name in REFERENCE_PRESETS:
        params = space.params_for(PRESETS[name])
        if params is None:
            continue
        study.enqueue_trial(params, user_attrs={R.PRESET: name}, skip_if_exists=True)
        queued.append(name)
    return queued


def _setup_logging(results_dir: Path, study: str) -> Path:
    logs = writable_dir(results_dir / "logs", "--results-dir")
    path = logs / f"{study}.log"
    root = logging.getLogger("nas")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_nas_study", None):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._nas_study = study  # type: ignore[attr-defined]
    root.addHandler(handler)
    optuna.logging.disable_default_handler()
    opt_log = logging.getLogger("optuna")
    opt_log.setLevel(logging.INFO)
    for h in list(opt_log.handlers):
        if getattr(h, "_nas_study", None):
            opt_log.removeHandler(h)
    opt_log.addHandler(handler)
    return path


def consecutive_failures(study: Any, n: int) -> Optional[str]:
    """The stop reason when the last ``n`` finished trials (by completion time) all failed, else None."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    recent = sorted(done, key=lambda t: (t.datetime_complete or t.datetime_start, t.number))[-n:]
    if len(recent) == n and all(t.state == optuna.trial.TrialState.FAIL for t in recent):
        return f"stopped after {n} failed trials in a row; last error: {recent[-1].user_attrs.get(R.ERROR)}"
    return None


# ------------------------------------------------------------------------------------------ trial runner
class TrialRunner:
    """One process's means to run trials: resolved settings, space, evaluator (dataset loaded), study.

    The local backend, each parallel worker and each Ray actor build one, so every backend records
    trials identically. ``cuda``: passed to ``SearchSettings.resolved``; ``evaluator``: one already
    prepared (the driver's), else one is built (its accuracy estimator from the settings) and prepared.
    """

    def __init__(self, settings: SearchSettings, *, sampler: Any = None, study: Any = None,
                 cuda: Optional[bool] = None, log_file: Optional[Path] = None, evaluator: Optional["Evaluator"] = None):
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        s = settings.resolved(cuda=cuda)
        self.settings = s
        self.objectives = parse_objectives(s.objectives)
        self.space = load_space(s.space)
        self.constraints = [parse_constraint(c) for c in [*s.constraints, *self.space.constraints]]
        self.log_file = log_file or _setup_logging(Path(s.results_dir), s.study)
        if evaluator is None:
            evaluator = Evaluator(s, self.objectives, self.constraints)
            evaluator.prepare()  # dataset problems surface here, before any trial
        self.evaluator = evaluator
        if study is None:
            if sampler is None:
                sampler = sampler_for(s)
            study = create_or_load_study(s, self.objectives, sampler=sampler, estimator=evaluator.estimator,
                                         space=self.space, compare=False)  # a worker: the driver compared
        self.study = study
        self.storage = storage_of(study)
        self.objective = TrialObjective(self.space, self.evaluator, self.objectives, self.constraints)

    def run_trial(self, trial: Any, *, worker: Optional[dict[str, Any]] = None,
                  on_epoch: Optional[OnEpoch] = None, tell: bool = True) -> Any:
        """Run an asked trial under a heartbeat and tell its outcome; returns the FrozenTrial.

        With ``tell=False`` (Ray: the driver tells) the outcome is returned as (state, values, error).
        An interrupt (SIGINT/SIGTERM) records ``status="interrupted"`` and the phase, ends the trial
        FAIL and propagates.
        """
        states = optuna.trial.TrialState
        tid = trial_id(self.storage, self.study.study_name, trial.number)
        phase = "while it ran"
        with TrialHeartbeat(self.storage, tid):
            try:
                if worker is not None:
                    trial.set_user_attr(R.WORKER, worker)
                try:
                    values, state, error = list(self.objective(trial, on_epoch)), states.COMPLETE, None
                except optuna.TrialPruned as e:
                    values, state, error = None, states.PRUNED, str(e)
                except TrialFailure as e:
                    values, state, error = None, states.FAIL, str(e)
                pending = interrupt_pending()  # a signal that a library turned into an ordinary error
                if pending:
                    raise Interrupted(pending)
                if not tell:
                    return state, values, error
                phase = "while its result was being recorded"
                self.study.tell(trial, values, state=state)
            except FinishedElsewhere:
                return (None, None, None) if not tell else self.storage.get_trial(tid)
            except KeyboardInterrupt as e:
                sig = getattr(e, "signal_name", "SIGINT")
                fail_trial(self.storage, tid, f"interrupted by {sig} {phase}", Status.INTERRUPTED)
                raise
        return self.storage.get_trial(tid)


def run_trials(runner: TrialRunner, *, n_trials: Optional[int], timeout: Optional[float],
               on_trial: Callable[[Any], None] = lambda t: None, worker: Optional[dict[str, Any]] = None,
               max_consecutive_failures: Optional[int] = None) -> Optional[str]:
    """Ask-run-tell until ``n_trials`` ran, ``timeout`` passed or the failure guard fires (its reason)."""
    n_fail = max_consecutive_failures or runner.settings.max_consecutive_failures
    start, ran = time.monotonic(), 0
    while (n_trials is None or ran < n_trials) and (timeout is None or time.monotonic() - start < timeout):
        since = time.time()
        try:
            trial = runner.study.ask()
        except KeyboardInterrupt as e:  # between the trial's creation and its first beat
            fail_own_trials(runner.study, f"interrupted by {getattr(e, 'signal_name', 'SIGINT')} before it started",
                            since=since)
            raise
        frozen = runner.run_trial(trial, worker=worker)
        ran += 1
        on_trial(frozen)
        reason = consecutive_failures(runner.study, n_fail)
        if reason is not None:
            log.warning(reason)
            return reason
    return None


# ------------------------------------------------------------------------------------------ driver
def trial_line(label: str, done: int, total: Optional[int], names: Sequence[str], t: R.TrialRecord) -> str:
    """``[3/20] w1 #7 COMPLETE accuracy=51.2 params=3.1e+06 (12.3s)``: one finished trial, for people (rich markup)."""
    if t.state == "COMPLETE":
        detail = " ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values or ()))
    else:
        detail = str(t.error or "")[:100]
    wall = t.wall_s
    return (f"[{done}{f'/{total}' if total else ''}] {label} #{t.number} {t.state} {escape(detail)}"
            + (f" ({wall:.1f}s)" if isinstance(wall, (int, float)) else ""))


class Backend(Protocol):
    """Runs trials of a driver's study; returns a stop reason (failure guard, dead worker) or None.

    ``prepare(driver)`` runs before the study is created or loaded: what can be refused (a missing
    dataset) is refused there, so a bad run never leaves a study behind.
    """

    name: str

    def prepare(self, driver: "StudyDriver") -> None: ...

    def run(self, driver: "StudyDriver") -> Optional[str]: ...


class StudyDriver:
    """The coordinating side of a search: one per ``nas search``, whatever the backend."""

    def __init__(self, settings: SearchSettings, *, console: Any = None, cuda: Optional[bool] = None,
                 sampler: Any = None, enqueue: bool = True):
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        s = settings.resolved(cuda=cuda)
        self.settings = s
        self.cuda = cuda
        self.objectives = parse_objectives(s.objectives)
        self.space = load_space(s.space)
        self.constraints = [parse_constraint(c) for c in [*s.constraints, *self.space.constraints]]
        # the accuracy estimator, built and checked once (workers in other processes build theirs from the settings)
        self.estimator = build_estimator(s) if needs_accuracy(self.objectives, self.constraints) else None
        if self.estimator is not None:
            self.estimator.check_space(self.space)  # e.g. a supernet of another space: refused before the study
        needed = {o.name for o in self.objectives} | {c.name for c in self.constraints}
        if any(n in PREDICTED_KEYS for n in needed):
            checked_predictor(s, needed)  # a predictor that does not give an objective: refused before the study
        self.console = console
        self.results_dir = Path(s.results_dir)
        self.log_file = _setup_logging(self.results_dir, s.study)
        self.sampler = sampler if sampler is not None else sampler_for(s)
        self.storage_desc = describe_storage(s.storage)
        self.study: Any = None
        self.stale: list[int] = []
        self.queued: list[str] = []
        self.enqueue = enqueue
        self.started = 0.0
        self.before = 0
        self.finished_before: Optional[set[int]] = None  # trials already finished when this run opened the study

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def load_data(self) -> "Evaluator":
        """An evaluator with its dataset loaded: a missing dataset is refused before the study exists."""
        ev = Evaluator(self.settings, self.objectives, self.constraints, estimator=self.estimator)
        ev.prepare()
        return ev

    def out(self, msg: str) -> None:
        """One line of driver output (rich markup) on stderr, unless quiet."""
        if self.settings.quiet:
            return
        if self.console is None:
            self.console = Console(stderr=True)
        self.console.print(msg, highlight=False)

    def check_resume(self) -> None:
        """Refuse, before the data loads, to resume the study with settings that change what its values mean."""
        s = self.settings
        if not storage_exists(s.storage):
            return
        try:
            study = optuna.load_study(study_name=s.study, storage=get_storage(s.storage))
        except KeyError:
            return
        refuse_resume(study, s, self.objectives, self.constraints, estimator=self.estimator, space=self.space)

    def open(self) -> Any:
        """Create/load the study once (directions, names, presets) and fail trials of dead processes."""
        s = self.settings
        self.study = create_or_load_study(s, self.objectives, sampler=self.sampler, estimator=self.estimator,
                                          space=self.space)
        self.before = len(self.study.get_trials(deepcopy=False))
        self.stale = fail_stale_trials(self.study)
        self.finished_before = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.queued = enqueue_presets(self.study, self.space) if (self.enqueue and s.enqueue_presets) else []
        log.info("study %s on %s; settings %s", s.study, self.storage_desc, json.dumps(jsonable(s.to_dict())))
        return self.study

    def announce(self, backend: str) -> None:
        s = self.settings
        self.out(f"[bold]backend[/]: {backend}")
        self.out(f"[bold]storage[/]: {self.storage_desc}")
        self.out(f"[bold]study[/]: {s.study} ({self.before} trial(s) already in it; "
                 f"{s.trials if s.trials else 'until the timeout'} to add)")
        if self.stale:
            self.out(f"[yellow]marked trials {self.stale} FAIL: their workers died (no heartbeat)[/]")
        if self.queued:
            self.out(f"[bold]presets queued[/]: {', '.join(self.queued)}")

    def trial_line(self, label: str, done: int, t: R.TrialRecord) -> None:
        """The one line per finished trial of the parallel and Ray backends."""
        self.out(trial_line(label, done, self.settings.trials, self.names, t))

    def run(self, backend: Backend) -> SearchResult:
        """Open the study, run the backend, fail what an interrupt or a dead worker left, summarise."""
        with storage_errors(self.settings.storage):  # database / disk faults: one line naming the storage
            self.check_resume()
            backend.prepare(self)
            if self.study is None:
                self.open()
            self.started = time.time()
            with signals_as_interrupts():
                try:
                    reason = backend.run(self)
                except KeyboardInterrupt as e:
                    raise self._interrupted(e) from None
            stale = fail_stale_trials(self.study)
            if stale:
                self.out(f"[yellow]marked trials {stale} FAIL: their workers died (no heartbeat)[/]")
            return summarize(self.study, self.settings, storage_desc=self.storage_desc, log_file=self.log_file,
                             stopped_reason=reason, references=self.references(),
                             finished_before=self.finished_before)

    def references(self) -> Optional[list[ReferencePoint]]:
        """FasterViT-0..3 for the report: where they are points of the searched space, the ones the study lacks
        are measured apart exactly as its trials were (cached in the study); elsewhere they are listed with how
        to measure them (`nas pareto`), as they are with ``--no-measure-references``. None before any trial
        completed."""
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in self.study.get_trials(deepcopy=False)):
            return None
        if not self.settings.measure_references or not all(self.space.params_for(PRESETS[p]) is not None
                                                            for p in REFERENCE_PRESETS):
            return report_references(self.study, measure=False)
        progress = MeasureProgress(presets_to_measure(self.study), self.out)
        return report_references(self.study, on_progress=progress)

    def _interrupted(self, e: BaseException) -> "Interrupted":
        sig = getattr(e, "signal_name", "SIGINT")
        failed = fail_own_trials(self.study, f"interrupted by {sig} (the search was stopped)", since=self.started)
        failed += fail_stale_trials(self.study)
        counts = state_counts(self.study)
        msg = (f"interrupted by {sig}: study {self.settings.study!r} keeps {sum(counts.values())} trial(s) ("
               + ", ".join(f"{v} {k}" for k, v in counts.items()) + ")"
               + (f"; trials {sorted(failed)} were running and are recorded FAIL" if failed else "")
               + ". Resume with the same command (same --study and --storage): it adds trials to this study.")
        log.warning(msg)
        err = Interrupted(sig)
        err.args = (msg,)
        return err


def state_counts(study: Any) -> dict[str, int]:
    """Trials per state, every state named (complete, failed, pruned, running, waiting)."""
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    names = {S.COMPLETE: "complete", S.FAIL: "failed", S.PRUNED: "pruned", S.RUNNING: "running", S.WAITING: "waiting"}
    return {label: sum(t.state == st for t in trials) for st, label in names.items()}


class LocalBackend:
    """Trials in this process, with a live progress bar."""

    name = "local"

    def __init__(self) -> None:
        self.evaluator: Optional[Evaluator] = None

    def prepare(self, driver: StudyDriver) -> None:
        self.evaluator = driver.load_data()

    def run(self, driver: StudyDriver) -> Optional[str]:
        s = driver.settings
        runner = TrialRunner(s, study=driver.study, cuda=driver.cuda, log_file=driver.log_file,
                             evaluator=self.evaluator)
        est = driver.estimator
        header = dict(study=s.study, storage=driver.storage_desc, device=runner.evaluator.device_name,
                      objectives=", ".join(driver.names), proxy=s.proxy if est is not None else "n/a",
                      sampler=s.sampler, presets=", ".join(driver.queued) or "none", log=str(driver.log_file))
        if est is not None:
            header["accuracy"] = f"{est.label}: {est.cost}"
        if driver.stale:
            header["stale"] = f"marked trials {driver.stale} FAIL: their process died (no heartbeat)"
        progress = SearchProgress(driver.study, driver.objectives, total=s.trials, timeout=s.timeout,
                                  console=driver.console, quiet=s.quiet, header=header)
        with progress:
            return run_trials(runner, n_trials=s.trials, timeout=s.timeout,
                              on_trial=lambda t: progress.callback(driver.study, t))


def summarize(study: Any, settings: SearchSettings, *, storage_desc: str, log_file: Optional[Path] = None,
              stopped_reason: Optional[str] = None,
              references: Optional[Sequence[ReferencePoint]] = None,
              finished_before: Optional[set[int]] = None) -> SearchResult:
    """The study's summary (and its report written). ``finished_before``: the trials already finished when this
    run began; the others (this run's, queued ones included) are the ones whose last failures are listed and whose
    completed or pruned trials are counted (None: the study's failures, nothing counted)."""
    S = optuna.trial.TrialState
    counts = state_counts(study)
    this_run, before = finished_before is not None, finished_before or set()
    added = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
    ended = [t for t in added if t.state == S.FAIL]
    path = Path(settings.results_dir) / "reports" / f"{settings.study}.html"
    try:
        report = write_report(study, path, references=references)
    except OSError as e:  # the trials are safe in the storage; only the report could not be written
        again = f"nas pareto --study {settings.study}" + (f" --storage {settings.storage}"
                                                           if isinstance(settings.storage, str) else "")
        raise StorageError(os_message(e, f"report {path} (--results-dir)") + f"; the trials are in the storage: "
                           f"{again} rewrites the report") from None
    return SearchResult(
        study_name=settings.study, storage=storage_desc, objectives=objective_names(study),
        n_complete=counts["complete"], n_failed=counts["failed"], n_pruned=counts["pruned"],
        n_running=counts["running"], n_waiting=counts["waiting"],
        pareto=pareto_rows(study), hypervolume=hypervolume(study), report=str(report) if report else None,
        log_file=str(log_file) if log_file else None, stopped_reason=stopped_reason,
        failures=[dict(trial=t.number, error=t.user_attrs.get(R.ERROR)) for t in ended[-5:]],
        labels=objective_labels(study),
        added_measured=None if not this_run else sum(t.state in (S.COMPLETE, S.PRUNED) for t in added))


def run_search(settings: SearchSettings, *, console: Any = None, backend: Optional[Backend] = None) -> SearchResult:
    """Run (or resume) a study; returns a summary. Bad settings raise ValueError before the study exists.

    ``backend``: ``LocalBackend()`` (default), ``nas.parallel.ParallelBackend(workers)`` or
    ``nas.ray_backend.RayBackend(...)``.
    """
    return StudyDriver(settings, console=console).run(backend or LocalBackend())
