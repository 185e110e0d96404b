"""Heartbeats and stale trials, for every storage: no trial stays RUNNING after its process died.

JournalStorage has no heartbeat in Optuna 5.0, so this module provides the equivalent of
``RDBStorage(heartbeat_interval, grace_period)`` + ``optuna.storages.fail_stale_trials`` for every
storage: while a trial runs, a thread of its process stamps the trial's system attribute
``nas:heartbeat`` (unix time) every ``HEARTBEAT_INTERVAL_S`` seconds; ``nas:owner`` records the
process (host, pid-namespace, pid, process start time). ``fail_stale_trials`` marks a RUNNING trial
FAIL with ``user_attrs["error"]`` saying why when

- its owner process is gone from this host (checked at once, robust to pid reuse), or
- its owner runs on another host and the last beat is older than ``STALE_AFTER_S``, or
- it has no owner at all and started more than ``UNOWNED_AFTER_S`` ago: its process died between
  creating the trial and its first beat (every ``nas`` process beats within a moment of asking).

A trial whose process is alive on this host is never touched; finished trials never change.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError

from .adapters import storage_of
from .record import ERROR, HEARTBEAT_KEY, OWNER_KEY, STATUS, Status
from .storage import HEARTBEAT_INTERVAL_S

__all__ = ["HEARTBEAT_INTERVAL_S", "STALE_AFTER_S", "UNOWNED_AFTER_S", "HEARTBEAT_KEY", "OWNER_KEY",
           "TrialHeartbeat", "fail_stale_trials", "fail_trial", "fail_own_trials", "process_identity", "trial_id"]

log = logging.getLogger("nas.heartbeat")

STALE_AFTER_S = 60.0        # 12 missed beats; only used for processes on other hosts
UNOWNED_AFTER_S = 300.0     # a trial never beaten this long after its start: its process died before beating


def trial_id(storage: Any, study_name: str, number: int) -> int:
    """A trial's storage id from its study name and number (public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


# ------------------------------------------------------------------------------------------ processes
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


def process_gone(owner: dict[str, Any]) -> Optional[bool]:
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


# ------------------------------------------------------------------------------------------ beating
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
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except UpdateFinishedTrialError:
                return  # the trial is finished: nothing left to keep alive
            except Exception as e:  # a storage hiccup: the next beat tries again (grace covers a few misses)
                log.warning("heartbeat of trial id %d not written: %s: %s", self.trial_id, type(e).__name__, e)

    def start(self) -> "TrialHeartbeat":
        self.storage.set_trial_system_attr(self.trial_id, OWNER_KEY, self.owner)
        self._beat()
        self._thread = threading.Thread(target=self._run, name=f"nas-heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "TrialHeartbeat":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ failing
def fail_trial(storage: Any, trial_id: int, reason: str, status: str = Status.ERROR) -> bool:
    """Mark a RUNNING trial FAIL with ``status`` and ``error=reason``; False if it had finished already."""
    try:
        if storage.get_trial(trial_id).state.is_finished():
            return False
        storage.set_trial_user_attr(trial_id, STATUS, status)
        storage.set_trial_user_attr(trial_id, ERROR, reason)
        return bool(storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False  # it finished (or another process failed it) in the meantime


def _age(t: Any, now: float) -> float:
    start = t.datetime_start
    return max(0.0, now - start.timestamp()) if isinstance(start, datetime) else 0.0


def _stale_reason(t: Any, now: float, stale_after: float, unowned_after: float) -> Optional[str]:
    beat = t.system_attrs.get(HEARTBEAT_KEY)
    if beat is None:
        age = _age(t, now)
        if age <= unowned_after:
            return None  # just asked for: its process is about to beat
        return (f"worker died before its first heartbeat: RUNNING for {age:.0f}s without one "
                f"(more than {unowned_after:g}s)")
    owner = t.system_attrs.get(OWNER_KEY) or {}
    gone = process_gone(owner)
    age = max(0.0, now - float(beat))
    if gone is False or (gone is None and age <= stale_after):
        return None
    where = f"process {owner.get('pid')} on {owner.get('host')}"
    return (f"worker died: no heartbeat for {age:.0f}s ({where} is gone)" if gone else
            f"worker died: no heartbeat for {age:.0f}s (more than {stale_after:g}s; {where})")


def fail_stale_trials(study: Any, *, stale_after: float = STALE_AFTER_S, unowned_after: float = UNOWNED_AFTER_S,
                      now: Optional[float] = None) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL (with the reason in ``user_attrs["error"]``); their numbers.

    See the module docstring for when a worker counts as dead (clocks must agree across hosts).
    """
    if not stale_after > 0 or not unowned_after > 0:
        raise ValueError(f"stale_after={stale_after!r} and unowned_after={unowned_after!r} must be > 0 seconds")
    now = time.time() if now is None else now
    storage = storage_of(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reason = _stale_reason(t, now, stale_after, unowned_after)
        if reason is None:
            continue
        if fail_trial(storage, trial_id(storage, study.study_name, t.number), reason, Status.WORKER_DIED):
            log.warning("trial %d marked FAIL: %s", t.number, reason)
            failed.append(t.number)
    return failed


def fail_own_trials(study: Any, reason: str, *, since: Optional[float] = None) -> list[int]:
    """FAIL the RUNNING trials of this process (interrupted): those it owns, and, with ``since``
    (unix time), those without an owner started after it (asked for, interrupted before the first beat)."""
    me = process_identity()
    storage = storage_of(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER_KEY)
        mine = (owner is not None and all(owner.get(k) == me[k] for k in ("host", "pidns", "pid", "start"))) or (
            owner is None and since is not None and t.datetime_start is not None
            and t.datetime_start.timestamp() >= since - 1.0)
        if mine and fail_trial(storage, trial_id(storage, study.study_name, t.number), reason, Status.INTERRUPTED):
            failed.append(t.number)
    return failed
