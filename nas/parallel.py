"""Parallel search on one machine: N worker processes share one study; killed workers lose nothing.

``nas search --workers N`` (``ParallelBackend``, run by ``nas.search.StudyDriver``):

1. chooses a storage that several processes may write at once: ``journal:results/nas.journal``
   when none is given (Optuna's JournalStorage on a file), or the RDB URL the user gives
   (PostgreSQL/MySQL). An explicit SQLite URL is refused (see ``parallel_storage``);
2. the driver creates the study once (directions, metric names, settings, preset queue), marks
   trials left RUNNING by dead workers as FAIL (``nas.heartbeat``); the trial budget is split
   exactly (20 over 4 workers: 5 each; a failed trial counts as a trial, so the total stays exact);
3. starts the workers, each a real ``python -m nas.cli worker`` process, one per visible GPU
   (``CUDA_VISIBLE_DEVICES`` round-robin) or one CPU slot each (``OMP_NUM_THREADS`` split). A
   worker dies with its parent (``PR_SET_PDEATHSIG``: SIGTERM, which it records on its trial);
4. streams one line per finished trial, reports a worker that exits non-zero with its log path
   (the others keep going), waits; the driver fails stale trials again and summarises.

Ctrl-C (or SIGTERM) in the parent: the workers get SIGTERM, record their running trial FAIL
("interrupted by SIGTERM") and exit; the driver prints what the study keeps and how to resume.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import optuna
import torch
from rich.markup import escape

from . import record as R
from .heartbeat import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_KEY,
    OWNER_KEY,
    STALE_AFTER_S,
    TrialHeartbeat,
    fail_stale_trials,
    process_identity,
)
from .samplers import sampler_for
from .search import StudyDriver, TrialRunner, run_trials, signals_as_interrupts
from .settings import SearchSettings, absolute_url, check_int, settings_for_process, settings_from_dict
from .storage import DEFAULT_JOURNAL, DEFAULT_STORAGE, storage_errors, storage_kind

__all__ = ["run_parallel", "ParallelBackend", "worker_main", "parallel_storage", "settings_for_process",
           "settings_from_dict", "split_trials", "assign_gpus", "TrialHeartbeat", "fail_stale_trials",
           "process_identity", "HEARTBEAT_KEY", "OWNER_KEY", "HEARTBEAT_INTERVAL_S", "STALE_AFTER_S"]

log = logging.getLogger("nas.parallel")

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


# ------------------------------------------------------------------------------------------ budget, devices
def split_trials(total: int, workers: int) -> list[int]:
    """``total`` trials over at most ``workers`` workers, as evenly as possible, summing to ``total``."""
    check_int("trials", total, minimum=1)
    check_int("workers", workers, minimum=1)
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
            count = torch.cuda.device_count()
        ids = [str(i) for i in range(count)]
    if not ids:
        raise ValueError("device='cuda' but no GPU is visible to give the workers")
    return [ids[i % len(ids)] for i in range(workers)]


# ------------------------------------------------------------------------------------------ worker
def _sampler_seed(seed: int, worker: int) -> int:
    """Distinct, reproducible sampler seeds per worker (identical seeds would propose identical trials)."""
    return int(np.random.SeedSequence([int(seed), int(worker)]).generate_state(1)[0])


def _die_with_parent(parent: Optional[int]) -> None:
    """Ask Linux to SIGTERM this process when its parent dies; exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError) as e:  # no prctl: the parent's own cleanup still stops us
            log.warning("cannot ask to die with the parent: %s", e)
    if parent is not None and os.getppid() != parent:
        raise SystemExit(f"worker: parent process {parent} is gone; not starting")


def worker_main(settings_json: str, *, trials: int, gpu: Optional[str] = None) -> None:
    """One worker of ``ParallelBackend`` (the hidden ``nas worker`` command): run ``trials`` trials.

    ``settings_json`` is ``settings_for_process(...)`` plus ``_worker`` (index), ``_total_trials``
    (the study budget, for the sampler's population size) and ``_parent`` (the parent's pid), or
    ``@PATH`` of such a file. ``trials=0`` means no trial limit (the settings' timeout ends the
    worker). Prints one ``NAS-TRIAL {json}`` line per finished trial and ``NAS-WORKER-DONE {json}``
    at the end. SIGINT/SIGTERM: the running trial is recorded FAIL with the reason; exit code 130.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA
    check_int("trials", trials, minimum=0)
    text = Path(settings_json[1:]).read_text() if settings_json.startswith("@") else settings_json
    payload = json.loads(text)
    index = int(payload.pop("_worker", 0))
    total = payload.pop("_total_trials", None)
    _die_with_parent(payload.pop("_parent", None))
    settings = settings_from_dict(payload).replace(quiet=True)
    if trials == 0 and settings.timeout is None:
        raise ValueError("trials=0 (no limit) needs a timeout in the settings")

    sampler = sampler_for(settings, seed=_sampler_seed(settings.seed, index), n_trials=total)
    with storage_errors(settings.storage):
        _worker_trials(TrialRunner(settings, sampler=sampler), index, trials)


def _worker_trials(run: TrialRunner, index: int, trials: int) -> None:
    stale = fail_stale_trials(run.study)
    if stale:
        print(f"worker {index}: marked stale trials {stale} FAIL", flush=True)
    ident = process_identity()
    worker = dict(index=index, host=ident["host"], pid=ident["pid"], gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
    ran = [0]

    def emit(t: Any) -> None:
        ran[0] += 1
        print(TRIAL_LINE + json.dumps(R.TrialRecord.of(t).event(worker=index), default=str), flush=True)

    print(f"worker {index}: pid {os.getpid()}, device {run.evaluator.device_name}, "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}, {trials or 'unlimited'} trials, "
          f"storage {run.settings.storage}", flush=True)
    try:
        with signals_as_interrupts():
            stopped = run_trials(run, n_trials=trials or None, timeout=run.settings.timeout, on_trial=emit,
                                 worker=worker)
    except KeyboardInterrupt as e:
        print(f"worker {index}: interrupted by {getattr(e, 'signal_name', 'SIGINT')} after {ran[0]} trial(s); "
              f"its running trial is recorded FAIL", flush=True)
        raise SystemExit(130) from None
    print(DONE_LINE + json.dumps(dict(worker=index, ran=ran[0], stopped_reason=stopped)), flush=True)


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


def _note_other_default_storage(study: str, storage: str, out: Callable[[str], None]) -> None:
    """If the study also lives in the single-process default SQLite file, say so (resume goes elsewhere)."""
    db = DEFAULT_STORAGE[len("sqlite:///"):]
    if storage not in (DEFAULT_JOURNAL, absolute_url(DEFAULT_JOURNAL)) or not Path(db).is_file():
        return
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(DEFAULT_STORAGE, include_best_trial=False)}
    except Exception as e:  # unreadable db: nothing to point out, but say why
        out(f"(could not read {DEFAULT_STORAGE}: {type(e).__name__}: {e})")
        return
    if study in names:
        out(f"[yellow]note: study {study!r} also exists in {DEFAULT_STORAGE} (single-process runs); --workers uses "
            f"{DEFAULT_JOURNAL}, a separate storage. To continue that study in parallel, copy it: "
            f"optuna.copy_study(from_study_name={study!r}, from_storage={DEFAULT_STORAGE!r}, to_storage=...)[/]")


class ParallelBackend:
    """``workers`` local worker processes on one study (see the module docstring)."""

    name = "parallel"

    def __init__(self, workers: int, *, python: Optional[str] = None):
        self.workers = check_int("workers", workers, minimum=1)
        self.python = python or sys.executable

    @staticmethod
    def shared_settings(settings: SearchSettings, workers: int) -> SearchSettings:
        """Settings with the shared storage (refusing SQLite for several writers), absolute paths."""
        return settings.replace(storage=absolute_url(parallel_storage(settings.storage, workers=workers)),
                                workers=workers)

    def prepare(self, drv: Any) -> None:
        drv.load_data()  # the workers load it again; a missing dataset is refused here, before the study exists

    def _plan(self, s: SearchSettings) -> tuple[list[Optional[int]], list[Optional[str]], int]:
        budgets: list[Optional[int]] = list(split_trials(s.trials, self.workers)) if s.trials is not None \
            else [None] * self.workers
        n = len(budgets)
        gpus: list[Optional[str]] = (list(assign_gpus(n, visible=os.environ.get("CUDA_VISIBLE_DEVICES")))
                                     if s.device == "cuda" else [None] * n)
        return budgets, gpus, max(1, (os.cpu_count() or 1) // n)

    def _announce(self, drv: Any, budgets: list, gpus: list, threads: int) -> None:
        s, n = drv.settings, len(budgets)
        profiles = any(o.needs == "profile" for o in drv.objectives)
        if s.device == "cuda":
            where = f"one per GPU (CUDA_VISIBLE_DEVICES {', '.join(g for g in gpus if g is not None)})"
            if len(set(gpus)) < n and profiles:
                drv.out(f"[bold red]warning: {n} workers share {len(set(gpus))} GPU(s): throughput/latency/memory "
                        f"of trials running together are measured on a busy GPU[/]")
        else:
            where = f"on the CPU, {threads} thread(s) each"
            if n > 1 and profiles:
                drv.out(f"[yellow]note: {n} CPU workers measure throughput/latency at the same time: the numbers "
                        f"compete for the same cores[/]")
        _note_other_default_storage(s.study, s.storage, drv.out)
        drv.out(f"[bold]backend[/]: {n} local worker process(es) {where}")
        drv.out(f"[bold]storage[/]: {drv.storage_desc}")
        plan = f"budget {'+'.join(str(b) for b in budgets)} = {s.trials}" if s.trials else "until the timeout"
        drv.out(f"[bold]study[/]: {s.study} ({drv.before} trial(s) already in it; {plan})")
        if drv.stale:
            drv.out(f"[yellow]marked trials {drv.stale} FAIL: their workers died (no heartbeat)[/]")
        if drv.queued:
            drv.out(f"[bold]presets queued[/]: {', '.join(drv.queued)}")
        drv.out(f"[bold]logs[/]: {drv.log_file} and {drv.results_dir / 'logs'}/{s.study}.worker<i>.log")

    def _start(self, drv: Any, i: int, budget: Optional[int], gpu: Optional[str], threads: int, n: int,
               events: "queue.Queue") -> _Worker:
        s = drv.settings
        w = _Worker(i, budget, gpu, drv.results_dir / "logs" / f"{s.study}.worker{i}.log")
        with open(w.log_path, "a") as f:  # a resumed study appends: the log of a killed run stays readable
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} nas search --workers {n}: worker {i}, "
                    f"{budget if budget is not None else 'unlimited'} trials ===\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        else:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.setdefault(var, str(threads))
        body = json.dumps({**settings_for_process(s), "_worker": i, "_total_trials": s.trials, "_parent": os.getpid()})
        cmd = [self.python, "-m", "nas.cli", "worker", body, "--trials", str(budget or 0)]
        if gpu is not None:
            cmd += ["--gpu", gpu]
        # own process group: a Ctrl-C reaches the parent only, which stops the workers in order
        w.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                  start_new_session=True)
        threading.Thread(target=_reader, args=(w, events), daemon=True).start()
        drv.out(f"started worker {i} (pid {w.proc.pid}{', GPU ' + gpu if gpu is not None else ''}, "
                f"{budget if budget is not None else 'unlimited'} trials): log {w.log_path}")
        return w

    def run(self, drv: Any) -> Optional[str]:
        s = drv.settings
        budgets, gpus, threads = self._plan(s)
        n = len(budgets)
        self._announce(drv, budgets, gpus, threads)
        events: "queue.Queue[tuple[str, int, Any]]" = queue.Queue()
        ws: list[_Worker] = []
        problems: list[str] = []
        finished, open_streams = 0, n
        try:
            for i, (budget, gpu) in enumerate(zip(budgets, gpus)):
                ws.append(self._start(drv, i, budget, gpu, threads, n, events))
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
                    drv.trial_line(w.label, finished, _record_of(data))
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
                        drv.out(f"[bold red]{escape(msg)}[/]")
                        tail = _tail(w.log_path)
                        if tail:
                            drv.out(escape(tail))
                    elif w.stopped_reason:
                        problems.append(f"worker {i}: {w.stopped_reason}")
        finally:
            _stop_workers(ws)  # never leave a worker behind (exceptions, interrupts)
        drv.out("workers: " + "; ".join(f"{w.label}: {w.finished}/{w.budget if w.budget is not None else '-'} "
                                        f"trials ({w.complete} complete, {w.failed} failed), "
                                        f"{_describe_exit(w.returncode or 0)}" for w in ws))
        if s.storage != DEFAULT_STORAGE:
            drv.out(f"inspect with: nas pareto --study {s.study} --storage {s.storage}")
        return "; ".join(problems) or None


def _record_of(event: dict[str, Any]) -> R.TrialRecord:
    return R.TrialRecord(number=event["number"], state=event["state"], values=event.get("values"),
                         error=event.get("error"), wall_s=event.get("wall_s"), summary=event.get("summary"),
                         preset=event.get("preset"))


def _stop_workers(ws: Sequence[_Worker], grace: float = 30.0) -> None:
    """SIGTERM the running workers (each records its trial FAIL), SIGKILL those still alive after ``grace``."""
    alive = [w.proc for w in ws if w.proc is not None and w.proc.poll() is None]
    for proc in alive:
        proc.terminate()
    end = time.monotonic() + grace
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_parallel(settings: SearchSettings, *, workers: Optional[int] = None, console: Any = None,
                 python: Optional[str] = None) -> Any:
    """Run (or resume) ``settings.study`` with ``workers`` worker processes (default ``settings.workers``);
    returns a ``SearchResult``.

    Bad settings raise ValueError before any process starts. ``python``: interpreter for the
    workers (default: this one).
    """
    backend = ParallelBackend(settings.workers if workers is None else workers, python=python)
    drv = StudyDriver(ParallelBackend.shared_settings(settings, backend.workers), console=console)
    return drv.run(backend)
