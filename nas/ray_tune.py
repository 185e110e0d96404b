"""Ray Tune's side of ``--backend ray``, on Tune's public API: the searcher, the stopper, the trial list.

Imported only when Ray is installed (``nas.ray_backend`` checks first: Ray is an optional extra).

``NasSearcher`` is a ``ray.tune.search.Searcher`` over the driver's Optuna study: ``suggest`` asks
the study for a trial (its sampler, e.g. NSGA-II, chooses the knobs; queued presets come first),
owns it in the driver's name until its actor beats, and hands Tune the trial id; the Ray trainable
(``nas.ray_backend``) evaluates that trial like a local run. ``on_trial_complete`` tells the study
the outcome from the last report's ``nas_status`` (module docstring of ``nas.ray_backend``):
``complete`` -> COMPLETE; ``failed`` -> FAIL; ``pruned`` -> PRUNED; ``running`` (ASHA stopped it
between epochs) -> PRUNED; an errored actor -> FAIL with Tune's error; no result -> FAIL ("not run").
A ``tell`` that fails still ends the trial FAIL with the reason. The Optuna storage is the state:
``save``/``restore`` keep nothing (resume: the same ``--study`` again).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import optuna
from ray import tune
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from . import record as R
from .adapters import storage_of
from .heartbeat import HEARTBEAT_KEY, OWNER_KEY, fail_trial, process_identity, trial_id
from .record import Status
from .search import consecutive_failures, suggest_config, trial_line

__all__ = ["Control", "NasSearcher", "FailureStopper", "TrialList"]

log = logging.getLogger("nas.ray")
States = optuna.trial.TrialState


class Control:
    """Driver state shared by the searcher, the stopper and the callback (never pickled with them).

    ``out``: where the one line per finished trial goes (None: nowhere); ``total``: the trial budget
    shown in it; ``names``: the objectives; ``max_consecutive_failures``: the failure guard.
    """

    def __init__(self, out: Optional[Callable[[str], None]], total: Optional[int], names: Sequence[str],
                 max_consecutive_failures: int):
        self.out = out
        self.total = total
        self.names = list(names)
        self.max_fail = max_consecutive_failures
        self.tune_trials: list[Any] = []
        self.told = 0
        self.stop_reason: Optional[str] = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its config (tuner.pkl): drop the console
        return dict(self.__dict__, out=None, tune_trials=[])

    def error_of(self, tune_trial_id: str) -> str:
        """The last line of a crashed Tune trial's error file."""
        for t in self.tune_trials:
            if t.trial_id == tune_trial_id:
                path = getattr(t, "error_file", None)
                if path and os.path.isfile(path):
                    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
                    return f"Ray trial failed: {lines[-1] if lines else 'no message'} (Tune error file: {path})"
        return "Ray trial failed (its actor died; see the Tune experiment folder)"

    def told_one(self, study: Any, frozen: Any) -> None:
        """After a trial was told: its line, and the failure guard."""
        self.told += 1
        if self.out is not None:
            self.out(trial_line("ray", self.told, self.total, self.names, R.TrialRecord.of(frozen)))
        if self.stop_reason is None:
            self.stop_reason = consecutive_failures(study, self.max_fail)
            if self.stop_reason:
                log.warning(self.stop_reason)


class NasSearcher(Searcher):
    """Suggests the trials of the driver's Optuna study to Tune and tells the study their outcomes."""

    def __init__(self, *, study: Any, space: Any, control: Control):
        super().__init__()
        self.study, self.space, self.control = study, space, control
        self.storage = storage_of(study)
        self.asked: dict[str, Any] = {}  # Tune trial id -> Optuna trial
        self.told: set[str] = set()

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # the space is the study's and the metrics its objectives: nothing for Tune to set

    def suggest(self, trial_id: str) -> Optional[dict]:
        trial = self.study.ask()
        tid = self._id(trial.number)
        # owned by the driver until its actor beats: a killed driver leaves no ownerless RUNNING trial
        self.storage.set_trial_system_attr(tid, OWNER_KEY, process_identity())
        self.storage.set_trial_system_attr(tid, HEARTBEAT_KEY, time.time())
        try:
            suggest_config(trial, self.space)
            refused = None
        except ValueError as e:  # recorded by the trainable (it replays the same refusal), not here
            refused = str(e)
        self.asked[trial_id] = trial
        return {**trial.params, "nas_trial_id": tid, "nas_trial_number": trial.number, "nas_refused": refused}

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self.told or trial_id not in self.asked:
            return
        trial = self.asked[trial_id]
        tid = self._id(trial.number)
        state, values, attrs = self._outcome(trial_id, result or {}, error)
        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(tid, k, v)
            self.study.tell(trial, values, state=state)
        except Exception as e:  # a storage fault: the trial must still end, with the reason
            reason = f"the driver could not record the outcome {state.name}: {type(e).__name__}: {e}"
            log.warning("trial %d: %s", trial.number, reason)
            fail_trial(self.storage, tid, reason, Status.ERROR)
        self.told.add(trial_id)
        self.control.told_one(self.study, self.storage.get_trial(tid))

    def _outcome(self, trial_id: str, result: dict, error: bool) -> tuple[Any, Optional[list[float]], dict[str, Any]]:
        """(state, values, user attributes to record) from the last report (module docstring)."""
        status = result.get("nas_status")
        if error:
            return States.FAIL, None, {R.STATUS: Status.ERROR, R.ERROR: self.control.error_of(trial_id)}
        if status == "complete":
            return States.COMPLETE, [float(result[n]) for n in self.control.names], {}
        if status == "failed":
            return States.FAIL, None, {}
        if status == "pruned":
            return States.PRUNED, None, {}
        if status == "running":
            return States.PRUNED, None, {R.STATUS: Status.PRUNED,
                                         R.ERROR: f"stopped by ASHA after {result.get('training_iteration')} "
                                                  f"report(s) (step {result.get('nas_step')}, accuracy "
                                                  f"{result.get('accuracy')})"}
        return States.FAIL, None, {R.STATUS: Status.NOT_RUN, R.ERROR: "Ray Tune stopped this trial before it "
                                                                        "reported a result (time budget, stop, or "
                                                                        "shutdown)"}

    def unfinished(self) -> list[int]:
        """Storage ids of the trials suggested but never told (time budget, stop, interrupt)."""
        return [self._id(t.number) for k, t in self.asked.items() if k not in self.told]

    def _id(self, number: int) -> int:
        return trial_id(self.storage, self.study.study_name, number)

    def save(self, checkpoint_path: str) -> None:
        """No Tune searcher checkpoint: the Optuna storage is the state (resume: same --study again)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see ``save``)."""

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the searcher into tuner.pkl (for ``Tuner.restore``, which nas does not use). The study
        holds its sampler (Optuna's GA samplers hold a thread lock) and storage: they stay out of the pickle."""
        return dict(self.__dict__, study=None, storage=None, asked={}, control=None)


class FailureStopper(Stopper):
    """Stops the whole run once the failure guard fired (``Control.stop_reason``)."""

    def __init__(self, control: Control):
        self.control = control

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.control.stop_reason is not None


class TrialList(tune.Callback):
    """Keeps Tune's trial list, so the searcher can read a failed trial's error file."""

    def __init__(self, control: Control):
        self.control = control

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.control.tune_trials = trials
