"""Parallel search on one machine: N worker processes share one study; killed workers lose nothing.

``nas search --workers N`` (``run_parallel``):

1. chooses a storage that several processes may write at once: ``journal:results/nas.journal``
   when none is given (Optuna's JournalStorage on a file), or the RDB URL the user gives
   (PostgreSQL/MySQL). An explicit SQLite URL is refused (see ``parallel_storage``);
2. creates the study once (directions, metric names, settings, preset queue), marks trials left
   RUNNING by dead workers as FAIL (``fail_stale_trials``), and splits the trial budget exactly
   (20 over 4 workers: 5 each; a failed trial counts as a trial, so the total stays exact);
3. starts the workers, each a real ``python -m nas.cli worker`` process, one per visible GPU
   (``CUDA_VISIBLE_DEVICES`` round-robin) or one CPU slot each (``OMP_NUM_THREADS`` split);
4. streams one line per finished trial, reports a worker that exits non-zero with its log path
   (the others keep going), waits, fails stale trials again, and returns ``summarize``'s result.

Heartbeats (JournalStorage has none in Optuna 5.0, so this module provides the equivalent of
``RDBStorage(heartbeat_interval, grace_period)`` + ``optuna.storages.fail_stale_trials`` for every
storage): while a trial runs, a thread of its process stamps the trial's system attribute
``nas:heartbeat`` (unix time) every ``HEARTBEAT_INTERVAL_S`` seconds; ``nas:owner`` records the
process (host, pid-namespace, pid, process start time). ``fail_stale_trials`` marks a RUNNING trial
FAIL with ``user_attrs["error"] = "worker died: no heartbeat for Ns (...)"`` when its process is
gone from this host (checked at once, robust to pid reuse), or, for a process on another host,
when its last beat is older than ``STALE_AFTER_S``. A trial whose process is alive on this host is
never touched. RUNNING trials without a heartbeat (written by a process that does not beat) are
left alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .storage import DEFAULT_JOURNAL, DEFAULT_STORAGE, describe_storage, storage_kind

__all__ = ["run_parallel", "worker_main", "parallel_storage", "portable_settings", "settings_from_dict",
           "split_trials", "assign_gpus", "TrialHeartbeat", "with_heartbeat", "fail_stale_trials",
           "process_identity", "HEARTBEAT_KEY", "OWNER_KEY", "HEARTBEAT_INTERVAL_S", "STALE_AFTER_S"]

log = logging.getLogger("nas.parallel")

HEARTBEAT_KEY = "nas:heartbeat"  # trial system attr: unix time of the last beat
OWNER_KEY = "nas:owner"          # trial system attr: the process running the trial
HEARTBEAT_INTERVAL_S = 5.0
STALE_AFTER_S = 60.0             # 12 missed beats; only used for processes on other hosts
TRIAL_LINE = "NAS-TRIAL "        # worker stdout protocol: one JSON object per finished trial
DONE_LINE = "NAS-WORKER-DONE "   # ... and one when the worker ends normally


# ------------------------------------------------------------------------------------------ storage
def parallel_storage(storage: Any, *, workers: int) -> str:
    """The storage URL N processes share: journal file by default, an RDB URL as given.

    An explicit SQLite URL is refused when ``workers > 1`` rather than warned about: SQLite takes
    one writer at a time, concurrent Optuna writers fail with "database is locked" under load
    (Optuna FAQ), and a failed write in a worker kills that worker mid-trial. A clear refusal
    costs one flag; a warning would cost lost trials.
    """
    if storage is None:
        return DEFAULT_JOURNAL
    if not isinstance(storage, str):
        raise ValueError(f"storage={type(storage).__name__} object: worker processes open the storage themselves, "
                         f"so give a URL (journal:PATH or postgresql://...)")
    kind = storage_kind(storage)
    if kind == "sqlite" and workers > 1:
        raise ValueError(
            f"--storage {storage} cannot be shared by {workers} worker processes: SQLite allows one writer at a "
            f"time and concurrent Optuna writers fail with 'database is locked' (Optuna FAQ). Use "
            f"--storage {DEFAULT_JOURNAL} (the default with --workers) or a PostgreSQL/MySQL URL. To continue a "
            f"study kept in SQLite, copy it first: python -c \"import optuna; optuna.copy_study("
            f"from_study_name='NAME', from_storage='{storage}', to_storage=...)\" (a journal storage object: "
            f"optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend('results/nas.journal')))")
    return storage


def _absolute_url(url: str) -> str:
    kind = storage_kind(url)
    if kind == "journal":
        path = url[len("journal:"):] if url.startswith("journal:") else url
        return "journal:" + os.path.abspath(path)
    if kind == "sqlite":
        db = url[len("sqlite:///"):]
        if db and db != ":memory:" and not os.path.isabs(db):
            return "sqlite:///" + os.path.abspath(db)
    return url


def portable_settings(settings: Any) -> dict[str, Any]:
    """SearchSettings as a JSON-ready dict that another process (another cwd) resolves identically.

    Storage, results/data folders and a space file become absolute paths; a space object or dict
    is inlined (``SearchSpace.to_dict()``).
    """
    from search_spaces.space import SearchSpace, list_builtin_spaces, load_space

    d = dataclasses.asdict(settings)
    d["objectives"], d["constraints"] = list(settings.objectives), list(settings.constraints)
    space = settings.space
    if isinstance(space, (SearchSpace, dict)):
        d["space"] = load_space(space).to_dict()
    elif isinstance(space, (str, os.PathLike)):
        name = str(space)
        d["space"] = name if name in list_builtin_spaces() or not Path(name).is_file() else os.path.abspath(name)
    else:
        raise ValueError(f"space={space!r}: give a built-in name, a YAML file, a dict or a SearchSpace")
    if settings.storage is not None:
        if not isinstance(settings.storage, str):
            raise ValueError(f"storage={type(settings.storage).__name__} object cannot be passed to another process; "
                             f"give a URL")
        d["storage"] = _absolute_url(settings.storage)
    d["results_dir"] = os.path.abspath(settings.results_dir)
    if settings.data_dir is not None:
        d["data_dir"] = os.path.abspath(settings.data_dir)
    if isinstance(settings.data, str) and settings.data.startswith("imagefolder:"):
        d["data"] = "imagefolder:" + os.path.abspath(settings.data[len("imagefolder:"):])
    json.dumps(d)  # fail here, not in the worker, if something is not JSON-ready
    return d


def settings_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of ``portable_settings`` (unknown keys are an error, naming them)."""
    from .search import SearchSettings

    names = {f.name for f in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"settings JSON has unknown keys {unknown}; known: {sorted(names)}")
    d = dict(d)
    d["objectives"] = tuple(d.get("objectives", ()))
    d["constraints"] = tuple(d.get("constraints", ()))
    return SearchSettings(**d)


# ------------------------------------------------------------------------------------------ budget, devices
def split_trials(total: int, workers: int) -> list[int]:
    """``total`` trials over at most ``workers`` workers, as evenly as possible, summing to ``total``."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"trials={total!r} must be an integer >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    n = min(total, workers)
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def assign_gpus(workers: int, *, visible: Optional[str] = None, count: Optional[int] = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each worker: the visible GPUs, round-robin.

    ``visible`` is the parent's CUDA_VISIBLE_DEVICES (its entries are kept, so ``2,3`` gives the
    workers ``2`` and ``3``); otherwise GPUs ``0..count-1`` (``torch.cuda.device_count()``).
    """
    if visible is not None and visible.strip():
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    else:
        if count is None:
            import torch

            count = torch.cuda.device_count()
        ids = [str(i) for i in range(count)]
    if not ids:
        raise ValueError("device='cuda' but no GPU is visible to give the workers")
    return [ids[i % len(ids)] for i in range(workers)]


# ------------------------------------------------------------------------------------------ heartbeats
def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """(state letter, start time in clock ticks) from /proc, or None when the process does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def process_identity(pid: Optional[int] = None) -> dict[str, Any]:
    """Who runs a trial: host, pid namespace, pid and process start time (tells pid reuse apart)."""
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid) if Path("/proc").is_dir() else None
    return dict(host=socket.gethostname(), pidns=_pid_namespace(), pid=pid, start=stat[1] if stat else None)


def _process_gone(owner: dict[str, Any]) -> Optional[bool]:
    """True: the owner process no longer exists; False: it is alive; None: cannot tell (another host)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or owner.get("host") != socket.gethostname() or owner.get("pidns") != _pid_namespace():
        return None
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie its parent has not reaped yet
            return True
        return owner.get("start") is not None and stat[1] != owner["start"]  # pid reused by another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class TrialHeartbeat:
    """While a trial runs: record its owner process and stamp ``nas:heartbeat`` every ``interval`` s.

    A context manager; the stamping thread stops on exit, or by itself once the trial is finished
    (by this process or marked stale by another).
    """

    def __init__(self, storage: Any, trial_id: int, *, interval: float = HEARTBEAT_INTERVAL_S,
                 owner: Optional[dict[str, Any]] = None):
        if not interval > 0:
            raise ValueError(f"interval={interval!r} must be > 0 seconds")
        self.storage = storage
        self.trial_id = trial_id
        self.interval = float(interval)
        self.owner = owner or process_identity()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_KEY, time.time())

    def _run(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except UpdateFinishedTrialError:
                return  # the trial is finished: nothing left to keep alive
            except Exception as e:  # a storage hiccup: the next beat tries again (grace covers a few misses)
                log.warning("heartbeat of trial id %d not written: %s: %s", self.trial_id, type(e).__name__, e)

    def __enter__(self) -> "TrialHeartbeat":
        self.storage.set_trial_system_attr(self.trial_id, OWNER_KEY, self.owner)
        self._beat()
        self._thread = threading.Thread(target=self._run, name=f"nas-heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def with_heartbeat(objective: Callable[[Any], Any], *, interval: float = HEARTBEAT_INTERVAL_S,
                   worker: Optional[dict[str, Any]] = None) -> Callable[[Any], Any]:
    """Wrap an Optuna objective so its trial beats while it runs (and records ``user_attrs["worker"]``).

    An objective that beats already (wrapped before) only gets the ``worker`` attribute added.
    """
    beats = getattr(objective, "_nas_heartbeat", False)

    def objective_with_heartbeat(trial: Any) -> Any:
        # the first beat is the first write: a process killed before it leaves a RUNNING trial without
        # a heartbeat, which fail_stale_trials cannot tell from a live run of a non-beating process
        with nullcontext() if beats else TrialHeartbeat(trial.storage, trial._trial_id, interval=interval):
            if worker is not None:
                trial.set_user_attr("worker", worker)
            return objective(trial)

    objective_with_heartbeat._nas_heartbeat = True  # type: ignore[attr-defined]
    return objective_with_heartbeat


def fail_stale_trials(study: Any, *, stale_after: float = STALE_AFTER_S, now: Optional[float] = None) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL (with the reason in ``user_attrs["error"]``); their numbers.

    Dead: the owner process is gone from this host (decided at once), or the owner runs on another
    host and its last heartbeat is older than ``stale_after`` seconds (clocks must agree, e.g. NTP).
    Finished trials are never changed, so nothing already measured is lost.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    if not stale_after > 0:
        raise ValueError(f"stale_after={stale_after!r} must be > 0 seconds")
    now = time.time() if now is None else now
    storage = study._storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_KEY)
        if beat is None:
            continue  # not run under a heartbeat: cannot tell a live trial from a dead one
        owner = t.system_attrs.get(OWNER_KEY) or {}
        gone = _process_gone(owner)
        age = max(0.0, now - float(beat))
        if gone is False or (gone is None and age <= stale_after):
            continue
        where = f"process {owner.get('pid')} on {owner.get('host')}"
        reason = (f"worker died: no heartbeat for {age:.0f}s ({where} is gone)" if gone else
                  f"worker died: no heartbeat for {age:.0f}s (more than {stale_after:g}s; {where})")
        try:
            storage.set_trial_user_attr(t._trial_id, "status", "worker died")
            storage.set_trial_user_attr(t._trial_id, "error", reason)
            if not storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # it finished (or another process failed it) in the meantime
        log.warning("trial %d marked FAIL: %s", t.number, reason)
        failed.append(t.number)
    return failed


# ------------------------------------------------------------------------------------------ worker
def _sampler_seed(seed: int, worker: int) -> int:
    """Distinct, reproducible sampler seeds per worker (identical seeds would propose identical trials)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(worker)]).generate_state(1)[0])


def _trial_event(trial: Any, worker: int) -> dict[str, Any]:
    return dict(worker=worker, number=trial.number, state=trial.state.name, values=trial.values,
                error=trial.user_attrs.get("error"), wall_s=trial.user_attrs.get("wall_s"),
                summary=trial.user_attrs.get("summary"), preset=trial.user_attrs.get("preset"))


def worker_main(settings_json: str, *, trials: int, gpu: Optional[str] = None) -> None:
    """One worker of ``run_parallel`` (the hidden ``nas worker`` command): run ``trials`` trials.

    ``settings_json`` is ``portable_settings(...)`` plus ``_worker`` (index) and ``_total_trials``
    (the study budget, for the sampler's population size), or ``@PATH`` of such a file.
    ``trials=0`` means no trial limit (the settings' timeout ends the worker). Prints one
    ``NAS-TRIAL {json}`` line per finished trial and ``NAS-WORKER-DONE {json}`` at the end.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
        raise ValueError(f"trials={trials!r} must be an integer >= 0 (0: until the timeout)")
    text = Path(settings_json[1:]).read_text() if settings_json.startswith("@") else settings_json
    payload = json.loads(text)
    index = int(payload.pop("_worker", 0))
    total = payload.pop("_total_trials", None)
    settings = dataclasses.replace(settings_from_dict(payload), quiet=True)
    if trials == 0 and settings.timeout is None:
        raise ValueError("trials=0 (no limit) needs a timeout in the settings")

    from .samplers import make_sampler
    from .search import SearchRun

    sampler = make_sampler(settings.sampler, seed=_sampler_seed(settings.seed, index),
                           n_trials=int(total or settings.trials or 100))
    run = SearchRun(settings, enqueue=False, sampler=sampler)
    stale = fail_stale_trials(run.study)
    if stale:
        print(f"worker {index}: marked stale trials {stale} FAIL", flush=True)
    ident = process_identity()
    run.objective = with_heartbeat(run.objective, worker=dict(index=index, host=ident["host"], pid=ident["pid"],
                                                              gpu=os.environ.get("CUDA_VISIBLE_DEVICES")))
    ran = [0]

    def emit(study: Any, trial: Any) -> None:
        ran[0] += 1
        print(TRIAL_LINE + json.dumps(_trial_event(trial, index), default=str), flush=True)

    print(f"worker {index}: pid {os.getpid()}, device {run.evaluator.device_name}, "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, {trials or 'unlimited'} trials, "
          f"storage {run.storage_desc}", flush=True)
    run.optimize(trials or None, run.settings.timeout, callbacks=[emit])
    print(DONE_LINE + json.dumps(dict(worker=index, ran=ran[0], stopped_reason=run.stopped_reason)), flush=True)


# ------------------------------------------------------------------------------------------ parent
@dataclasses.dataclass
class _Worker:
    index: int
    budget: Optional[int]
    gpu: Optional[str]
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    finished: int = 0
    complete: int = 0
    failed: int = 0
    returncode: Optional[int] = None
    stopped_reason: Optional[str] = None
    done_line: bool = False

    @property
    def label(self) -> str:
        return f"w{self.index}" + (f" gpu{self.gpu}" if self.gpu is not None else "")


def _reader(w: _Worker, events: "queue.Queue[tuple[str, int, Any]]") -> None:
    """Copy a worker's output to its log; turn its protocol lines into events. Always ends with "eof"."""
    assert w.proc is not None and w.proc.stdout is not None
    try:
        with open(w.log_path, "a") as logf:
            for line in w.proc.stdout:
                logf.write(line)
                logf.flush()
                for prefix, kind in ((TRIAL_LINE, "trial"), (DONE_LINE, "done")):
                    if line.startswith(prefix):
                        try:
                            events.put((kind, w.index, json.loads(line[len(prefix):])))
                        except json.JSONDecodeError as e:  # a torn line: it stays in the log, the count misses it
                            log.warning("worker %d: unreadable %s line (%s): %r", w.index, kind, e, line[:200])
    finally:
        events.put(("eof", w.index, None))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, n: int = 6) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if not ln.startswith(TRIAL_LINE)]
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in lines[-n:])


def _fmt_values(names: Sequence[str], values: Optional[Sequence[float]]) -> str:
    if not values:
        return ""
    return " ".join(f"{n}={v:.4g}" for n, v in zip(names, values))


def _note_other_default_storage(study: str, storage: str, out: Callable[[str], None]) -> None:
    """If the study also lives in the single-process default SQLite file, say so (resume goes elsewhere)."""
    db = DEFAULT_STORAGE[len("sqlite:///"):]
    if storage != DEFAULT_JOURNAL or not Path(db).is_file():
        return
    import optuna

    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(DEFAULT_STORAGE, include_best_trial=False)}
    except Exception as e:  # unreadable db: nothing to point out, but say why
        out(f"(could not read {DEFAULT_STORAGE}: {type(e).__name__}: {e})")
        return
    if study in names:
        out(f"[yellow]note: study {study!r} also exists in {DEFAULT_STORAGE} (single-process runs); --workers uses "
            f"{DEFAULT_JOURNAL}, a separate storage. To continue that study in parallel, copy it: "
            f"optuna.copy_study(from_study_name={study!r}, from_storage={DEFAULT_STORAGE!r}, to_storage=...)[/]")


@dataclasses.dataclass
class Driver:
    """What a coordinating process (parallel parent, Ray driver) holds: the study and its output."""

    study: Any
    out: Callable[[str], None]
    results_dir: Path
    log_file: Path
    storage_desc: str
    stale: list[int]
    queued: list[str]


def open_driver(s: Any, space: Any, console: Any = None) -> Driver:
    """Create/load the study once (directions, names, presets), fail stale trials, set up logs."""
    import warnings

    import optuna

    from .objectives import parse_objectives
    from .search import _setup_logging, create_or_load_study, enqueue_presets

    if console is None:
        from rich.console import Console

        console = Console(stderr=True)

    def out(msg: str) -> None:
        if not s.quiet:
            console.print(msg, highlight=False)

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    results_dir = Path(s.results_dir)
    log_file = _setup_logging(results_dir, s.study)
    study = create_or_load_study(s, parse_objectives(s.objectives))
    stale = fail_stale_trials(study)
    queued = enqueue_presets(study, space) if s.enqueue_presets else []
    return Driver(study, out, results_dir, log_file, describe_storage(s.storage), stale, queued)


def run_parallel(settings: Any, *, workers: int, console: Any = None,
                 python: Optional[str] = None) -> Any:
    """Run (or resume) ``settings.study`` with ``workers`` worker processes; returns a ``SearchResult``.

    Bad settings raise ValueError before any process starts. ``python``: interpreter for the
    workers (default: this one).
    """
    from .objectives import parse_constraint, parse_objectives
    from .search import summarize
    from search_spaces.space import load_space

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    storage = parallel_storage(settings.storage, workers=workers)
    s = dataclasses.replace(settings, storage=_absolute_url(storage)).resolved()
    objectives = parse_objectives(s.objectives)
    space = load_space(s.space)
    for c in [*s.constraints, *space.constraints]:
        parse_constraint(c)
    payload = portable_settings(s)
    budgets: list[Optional[int]] = list(split_trials(s.trials, workers)) if s.trials is not None else [None] * workers
    n = len(budgets)
    gpus: list[Optional[str]] = (list(assign_gpus(n, visible=os.environ.get("CUDA_VISIBLE_DEVICES")))
                                 if s.device == "cuda" else [None] * n)

    from rich.markup import escape

    drv = open_driver(s, space, console)
    out, study, stale, queued = drv.out, drv.study, drv.stale, drv.queued
    results_dir, log_file, storage_desc = drv.results_dir, drv.log_file, drv.storage_desc
    _note_other_default_storage(s.study, storage, out)
    before = len(study.get_trials(deepcopy=False))

    threads = max(1, (os.cpu_count() or 1) // n)
    if s.device == "cuda":
        where = f"one per GPU (CUDA_VISIBLE_DEVICES {', '.join(g for g in gpus if g is not None)})"
        if len(set(gpus)) < n and any(o.needs == "profile" for o in objectives):
            out(f"[bold red]warning: {n} workers share {len(set(gpus))} GPU(s): throughput/latency/memory of "
                f"trials running together are measured on a busy GPU[/]")
    else:
        where = f"on the CPU, {threads} thread(s) each"
        if n > 1 and any(o.needs == "profile" for o in objectives):
            out(f"[yellow]note: {n} CPU workers measure throughput/latency at the same time: the numbers "
                f"compete for the same cores[/]")
    out(f"[bold]backend[/]: {n} local worker process(es) {where}")
    out(f"[bold]storage[/]: {storage_desc}")
    plan = f"budget {'+'.join(str(b) for b in budgets)} = {s.trials}" if s.trials else "until the timeout"
    out(f"[bold]study[/]: {s.study} ({before} trial(s) already in it; {plan})")
    if stale:
        out(f"[yellow]marked trials {stale} FAIL: their workers died (no heartbeat)[/]")
    if queued:
        out(f"[bold]presets queued[/]: {', '.join(queued)}")
    out(f"[bold]logs[/]: {log_file} and {results_dir / 'logs'}/{s.study}.worker<i>.log")

    names = [o.name for o in objectives]
    python = python or sys.executable
    events: "queue.Queue[tuple[str, int, Any]]" = queue.Queue()
    ws: list[_Worker] = []
    for i, (budget, gpu) in enumerate(zip(budgets, gpus)):
        w = _Worker(i, budget, gpu, results_dir / "logs" / f"{s.study}.worker{i}.log")
        with open(w.log_path, "a") as f:  # a resumed study appends: the log of a killed run stays readable
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} nas search --workers {n}: worker {i}, "
                    f"{budget if budget is not None else 'unlimited'} trials ===\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, str(threads))
        body = json.dumps({**payload, "_worker": i, "_total_trials": s.trials})
        cmd = [python, "-m", "nas.cli", "worker", body, "--trials", str(budget or 0)]
        if gpu is not None:
            cmd += ["--gpu", gpu]
        w.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=_reader, args=(w, events), daemon=True).start()
        ws.append(w)
        out(f"started worker {i} (pid {w.proc.pid}{', GPU ' + gpu if gpu is not None else ''}, "
            f"{budget if budget is not None else 'unlimited'} trials): log {w.log_path}")

    problems: list[str] = []
    finished = 0
    open_streams = n
    try:
        while open_streams:
            try:
                kind, i, data = events.get(timeout=1.0)
            except queue.Empty:
                continue
            w = ws[i]
            if kind == "trial":
                finished += 1
                w.finished += 1
                w.complete += data["state"] == "COMPLETE"
                w.failed += data["state"] == "FAIL"
                detail = escape(_fmt_values(names, data.get("values")) if data["state"] == "COMPLETE"
                                else str(data.get("error") or "")[:100])
                total = f"/{s.trials}" if s.trials else ""
                out(f"[{finished}{total}] {w.label} #{data['number']} {data['state']} {detail}"
                    + (f" ({data['wall_s']:.1f}s)" if isinstance(data.get("wall_s"), (int, float)) else ""))
            elif kind == "done":
                w.done_line = True
                w.stopped_reason = data.get("stopped_reason")
            elif kind == "eof":
                open_streams -= 1
                assert w.proc is not None
                w.returncode = w.proc.wait()
                if w.returncode != 0 or not w.done_line:
                    left = f"; {w.budget - w.finished} of its {w.budget} trials not run" if w.budget else ""
                    msg = (f"worker {i} {_describe_exit(w.returncode)} after {w.finished} trial(s){left}; "
                           f"log: {w.log_path}")
                    problems.append(msg)
                    out(f"[bold red]{escape(msg)}[/]")
                    tail = _tail(w.log_path)
                    if tail:
                        out(escape(tail))
                elif w.stopped_reason:
                    problems.append(f"worker {i}: {w.stopped_reason}")
    except KeyboardInterrupt:
        for w in ws:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        for w in ws:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
        fail_stale_trials(study)
        raise

    stale = fail_stale_trials(study)
    if stale:
        out(f"[yellow]marked trials {stale} FAIL: their workers died (no heartbeat)[/]")
    out("workers: " + "; ".join(f"{w.label}: {w.finished}/{w.budget if w.budget is not None else '-'} trials "
                                f"({w.complete} complete, {w.failed} failed), {_describe_exit(w.returncode or 0)}"
                                for w in ws))
    if storage != DEFAULT_STORAGE:
        out(f"inspect with: nas pareto --study {s.study} --storage {storage}")
    return summarize(study, s, storage_desc=storage_desc, log_file=log_file,
                     stopped_reason="; ".join(problems) or None)
