"""Live progress of a search (rich): trials done, failures, Pareto-front size, hypervolume, ETA."""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import record as R
from .front import hypervolume

__all__ = ["SearchProgress"]


class SearchProgress:
    """Context manager + Optuna callback. Quiet mode prints nothing."""

    def __init__(self, study: Any, objectives: Sequence[Any], *, total: Optional[int], timeout: Optional[float],
                 console: Any = None, quiet: bool = False, header: Optional[Mapping[str, str]] = None):
        self.study = study
        self.objectives = objectives
        self.total = total
        self.timeout = timeout
        self.quiet = quiet
        self.header = dict(header or {})
        self.start = 0.0
        self.done = 0
        self.failed = 0
        self._progress: Optional[Progress] = None
        self._task: Any = None
        if not quiet:
            self.console = console or Console(stderr=True)

    def __enter__(self) -> "SearchProgress":
        self.start = time.perf_counter()
        if self.quiet:
            return self
        for k, v in self.header.items():
            self.console.print(f"[bold]{k}[/]: {v}", highlight=False)
        self._progress = Progress(TextColumn("[bold blue]search"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[status]}"), console=self.console, transient=False)
        self._progress.__enter__()
        total = self.total if self.total is not None else None
        self._task = self._progress.add_task("search", total=total, status="starting")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def callback(self, study: Any, trial: Any) -> None:
        self.done += 1
        if trial.state == optuna.trial.TrialState.FAIL:
            self.failed += 1
        if self.quiet or self._progress is None:
            return
        front = len(study.best_trials)
        hv = hypervolume(study)
        status = f"failed {self.failed} | front {front} | HV {hv:.4g}" if hv is not None else f"failed {self.failed}"
        if trial.state == optuna.trial.TrialState.FAIL:
            status += f" | last: #{trial.number} failed ({str(trial.user_attrs.get(R.ERROR))[:60]})"
        total = self.total
        if total is None and self.timeout:
            elapsed = time.perf_counter() - self.start
            total = max(self.done + 1, int(self.done * self.timeout / max(elapsed, 1e-9)))
        self._progress.update(self._task, completed=self.done, total=total, status=status)
