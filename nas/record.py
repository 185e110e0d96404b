"""The trial record, written down once: the keys every backend writes and every reader reads.

A trial of a ``nas`` study is an Optuna trial whose *user attributes* hold everything measured
(``TrialRecord`` lists them with their meaning), whose *system attributes* hold the heartbeat
bookkeeping (``HEARTBEAT_KEY``, ``OWNER_KEY``), and whose study holds ``STUDY_*`` attributes.
Search, parallel workers, Ray, export and the reports all read the keys from here, so a key is
renamed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

__all__ = ["TrialRecord", "Status", "DEVICE", "STATUS", "CONFIG", "ARCH_ID", "SUMMARY", "PARAMS", "FLOPS", "PROFILE",
           "PREDICTED", "PROXY", "TIMINGS", "TRAIN_HISTORY", "WEIGHTS_PATH", "ERROR", "TRACEBACK", "WALL_S", "PRESET",
           "WORKER",
           "OBJECTIVE_PREFIX", "objective_key", "RUNGS", "RUNG", "RUNG_EPOCHS", "RUNG_ACCURACY", "CACHE_HIT",
           "MEASURED_WITH", "STUDY_CONFIRMATIONS", "HEARTBEAT_KEY", "OWNER_KEY", "STUDY_OBJECTIVES", "STUDY_PROXY",
           "STUDY_ESTIMATOR", "STUDY_SPACE", "STUDY_SETTINGS", "STUDY_REFERENCES", "error_of"]

# ---- trial user attributes -------------------------------------------------------------------
DEVICE = "device"                # str: the device name the trial was measured on (GPU name or "cpu")
STATUS = "status"                # str: one of Status (finer than the Optuna state)
CONFIG = "config"                # dict: FasterViTConfig.to_dict() of the sampled architecture
ARCH_ID = "arch_id"              # str: FasterViTConfig.arch_id
SUMMARY = "summary"              # str: FasterViTConfig.summary()
PARAMS = "params"                # int
FLOPS = "flops"                  # int (MACs, fvcore's convention)
PROFILE = "profile"              # dict: evaluators.profiler record (to_dict)
PREDICTED = "predicted"          # dict: predictor name, GPU, protocol and predicted values (evaluators.predictor)
PROXY = "proxy"                  # dict: the accuracy estimate's details (Estimate.details): per-proxy results,
                                 #   or {"train": TrainResult.to_dict()}
TIMINGS = "timings"              # dict: seconds per measurement (cost_s, profile_s, proxy_s)
TRAIN_HISTORY = "train_history"  # list[[step, accuracy]]: each report of the estimate (train: validations)
WEIGHTS_PATH = "weights_path"    # str: absolute path of the trained weights (train proxy)
ERROR = "error"                  # str: why the trial failed / was pruned (always set when it did)
TRACEBACK = "traceback"          # str: tail of the traceback of an unexpected exception
WALL_S = "wall_s"                # float: wall-clock seconds of the trial
PRESET = "preset"                # str: FasterViT preset name of a queued reference trial
WORKER = "worker"                # dict: which worker ran it (index/pid/host, or Ray ids)
OBJECTIVE_PREFIX = "objective_"  # objective_<name>: float value of each objective
RUNGS = "rungs"                  # list[dict]: --fidelity sh, one entry per rung reached: rung, epochs, step,
                                 #   accuracy, values (objective vector ranked), position, peers, keep, front, decision
RUNG = "rung"                    # int: index of the last rung reached (--fidelity sh)
RUNG_EPOCHS = "rung_epochs"      # float: its budget in epochs
RUNG_ACCURACY = "rung_accuracy"  # float: validation top-1 at that rung
CACHE_HIT = "cache_hit"          # int: the trial whose measurements this one reused (same arch_id)
MEASURED_WITH = "measured_with"  # dict: what a measurement depends on: device, data, seed, profiler protocol
                                 #   (pad_channels, gelu_epilogue when set), estimator (its identity);
                                 #   a cache hit needs the same

# ---- trial system attributes (heartbeats; see nas.heartbeat) -------------------------------------
HEARTBEAT_KEY = "nas:heartbeat"  # float: unix time of the last beat
OWNER_KEY = "nas:owner"          # dict: host, pidns, pid, start of the process running the trial

# ---- study user attributes ------------------------------------------------------------------------
STUDY_OBJECTIVES = "objectives"  # list[str]
STUDY_PROXY = "proxy"            # str | None: the accuracy proxy (results of two proxies do not compare)
STUDY_ESTIMATOR = "estimator"    # dict | None: the accuracy estimator's identity (a resume compares it)
STUDY_SPACE = "space"            # dict: what of the space decides the networks (base, fixed, knobs: nas.resume.
                                 #   space_meaning); a resume compares it
STUDY_SETTINGS = "settings"      # dict: SearchSettings.to_dict() of the run that created the study (nas.settings.
                                 #   settings_for_study: no absolute path of that machine)
STUDY_REFERENCES = "reference_points"  # dict: preset -> {values, params, flops, note}: FasterViT measured apart
                                       #   (nas.references), cached
STUDY_CONFIRMATIONS = "confirmations"  # dict: str(trial number) -> list of {seed, accuracy, epochs, ...} re-trains


def objective_key(name: str) -> str:
    return OBJECTIVE_PREFIX + name


class Status:
    """Values of ``user_attrs["status"]``."""

    COMPLETE = "complete"
    REFUSED = "refused"          # the generator refused the sampled config (FAIL)
    INFEASIBLE = "infeasible"    # a cheap constraint failed before the expensive measurements (PRUNED)
    FAILED = "failed"            # a measurement failed: OOM, NaN proxy, profiler error (FAIL)
    ERROR = "error"              # an unexpected exception, with its traceback (FAIL)
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM while it ran (FAIL)
    WORKER_DIED = "worker died"  # its process vanished (no heartbeat) (FAIL)
    PRUNED = "pruned"            # stopped early by a scheduler (ASHA, --fidelity sh rung) (PRUNED)
    NOT_RUN = "not run"          # asked for but never started (Ray time budget) (FAIL)


@dataclass(frozen=True)
class TrialRecord:
    """A typed view of one trial's user attributes (``TrialRecord.of(frozen_trial)``)."""

    number: int
    state: str
    values: Optional[list[float]] = None
    device: Optional[str] = None
    status: Optional[str] = None
    config: Optional[dict[str, Any]] = None
    arch_id: Optional[str] = None
    summary: Optional[str] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    profile: Optional[dict[str, Any]] = None
    predicted: Optional[dict[str, Any]] = None
    proxy: Optional[dict[str, Any]] = None
    timings: Optional[dict[str, float]] = None
    train_history: Optional[list[Any]] = None
    weights_path: Optional[str] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    wall_s: Optional[float] = None
    preset: Optional[str] = None
    worker: Optional[dict[str, Any]] = None
    rungs: Optional[list[dict[str, Any]]] = None
    rung: Optional[int] = None
    rung_epochs: Optional[float] = None
    rung_accuracy: Optional[float] = None
    cache_hit: Optional[int] = None
    measured_with: Optional[dict[str, Any]] = None

    @classmethod
    def of(cls, trial: Any) -> "TrialRecord":
        attrs: Mapping[str, Any] = trial.user_attrs
        known = {f.name for f in fields(cls)} - {"number", "state", "values"}
        return cls(number=trial.number, state=trial.state.name, values=trial.values,
                   **{k: attrs.get(k) for k in known})

    def event(self, **extra: Any) -> dict[str, Any]:
        """The short JSON form a worker streams to its parent per finished trial."""
        return dict(number=self.number, state=self.state, values=self.values, error=self.error, wall_s=self.wall_s,
                    summary=self.summary, preset=self.preset, **extra)


def error_of(trial: Any) -> Optional[str]:
    """The recorded reason of a failed/pruned trial (None when it has none)."""
    return trial.user_attrs.get(ERROR)
