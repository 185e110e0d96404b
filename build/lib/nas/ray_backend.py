"""Ray Tune backend: trials run as Ray actors (one machine or a cluster), recorded in the Optuna study.

``nas search --backend ray [--ray-address auto] [--workers N] [--gpus-per-trial G]``
(``run_ray_search``). The study lives in the SAME Optuna storage as a local run, with the same
user attributes per trial, so ``nas pareto``, the HTML report and optuna-dashboard cannot tell a
Ray-run study from a local one.

How a trial flows:

1. the driver creates/loads the study (directions, metric names, settings; presets queued), fails
   stale trials, and hands Ray Tune an ``OptunaSearch`` over that study. Its define-by-run
   function calls ``nas.search.suggest_config`` on the Optuna trial (so the Optuna trial holds
   the parameters, sampled by our sampler, e.g. NSGA-II) and returns the Optuna trial id;
2. the Ray trainable (another process, maybe another machine) opens the storage by URL, rebuilds
   ``optuna.trial.Trial(study, trial_id)`` (every ``suggest_*`` replays the stored value) and runs
   the very objective of a local run (``SearchRun.objective``: config, arch_id, summary, params,
   flops, profile, proxy, timings, status, error, wall_s, constraints), with a heartbeat
   (``nas.parallel``). One ``SearchRun`` (evaluator, dataset) per actor process, cached;
3. it reports the metrics with ``tune.report``; the ``train`` proxy also reports the validation
   accuracy after each epoch (``nas_status="running"``), so ``ASHAScheduler(metric="accuracy",
   mode="max")`` can stop poor trials;
4. the driver's searcher tells Optuna the outcome (``_NasOptunaSearch.on_trial_complete``).

How Ray's stock ``OptunaSearch.on_trial_complete`` (Ray 2.60) tells trials, and what we change:
it takes ``result[m]`` for each metric of the LAST result and tells COMPLETE; a trial with no
result is told PRUNED, or FAIL when it errored. So (a) a trial stopped by ASHA would be told
COMPLETE with its intermediate (under-trained) accuracy and enter the Pareto front as if it were
final, and (b) a multi-objective result missing any metric gives ``[.., None]``, ``study.tell``
raises, the exception is only logged, and the Optuna trial stays RUNNING forever. Here every
report carries every metric (NaN when not measured, which ASHA's ``nanpercentile`` ignores) plus
``nas_status``, and the outcome is told from it: ``complete`` -> COMPLETE with the values;
``failed`` (refused config, OOM, NaN proxy...) -> FAIL (the reason is already in
``user_attrs["error"]``); ``pruned`` (a cheap constraint failed) -> PRUNED; ``running`` (stopped
by ASHA between epochs) -> PRUNED with ``error = "stopped by ASHA ..."`` and the accuracy history
in ``train_history``; an actor that crashed -> FAIL with the last line of Tune's error file.
Suggested trials that never started (time budget) are FAILed with a reason at the end.

Storage: every Ray worker must reach it. A journal file works on one machine (default
``journal:results/nas.journal``, made absolute: Tune runs trainables in per-trial folders); on a
cluster of several nodes only an RDB URL reachable from all nodes works (e.g. PostgreSQL), and a
file storage is refused. SQLite is refused (concurrent writers). Tune's own experiment folder
(``results/ray/``) only holds Tune logs; resume by running the same ``--study`` again (the Optuna
storage is the state; Tune's searcher checkpoint is not written).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from unittest import mock

from .parallel import _absolute_url, fail_stale_trials, open_driver, portable_settings, process_identity, with_heartbeat
from .storage import DEFAULT_JOURNAL, get_storage, storage_kind

__all__ = ["run_ray_search", "RayNotInstalledError", "ray_storage", "INSTALL_HINT"]

log = logging.getLogger("nas.ray")

INSTALL_HINT = ('the Ray backend needs Ray Tune, which is not installed: pip install "nas-fastervit[ray]" '
                '(from a checkout: pip install -e ".[ray]"), or pip install "ray[tune]>=2.40"')


class RayNotInstalledError(ImportError, ValueError):
    """Ray Tune is missing (a ValueError too, so the CLI prints it as one message)."""


def _import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401  (fails early if Ray lacks it)
    except ImportError as e:
        raise RayNotInstalledError(f"{INSTALL_HINT} ({e})") from None
    return ray, tune


def ray_storage(storage: Any, *, nodes: int) -> str:
    """The storage URL for a Ray run on ``nodes`` alive nodes (refusals explain the alternative)."""
    if storage is None:
        storage = DEFAULT_JOURNAL
    if not isinstance(storage, str):
        raise ValueError(f"storage={type(storage).__name__} object: Ray workers open the storage themselves, so give "
                         f"a URL (journal:PATH on one machine, postgresql://... on a cluster)")
    kind = storage_kind(storage)
    if kind == "sqlite":
        raise ValueError(f"--storage {storage} cannot be used with --backend ray: trials write to the study from "
                         f"several processes at once and SQLite allows one writer (Optuna FAQ). Use "
                         f"--storage {DEFAULT_JOURNAL} on one machine, or a PostgreSQL/MySQL URL on a cluster")
    if kind == "journal" and nodes > 1:
        raise ValueError(f"--storage {storage} is a file on this machine, but the Ray cluster has {nodes} nodes: "
                         f"trials on the other nodes cannot reach it. Give an RDB URL every node can reach, e.g. "
                         f"--storage postgresql://USER:PASSWORD@HEAD_HOST:5432/nas")
    return _absolute_url(storage)


# ------------------------------------------------------------------------------------------ trainable side
class _FinishedElsewhere(BaseException):
    """The driver finished this trial (ASHA stop, end of the time budget): the trainable stops quietly.

    A BaseException so the objective's ``except Exception`` does not record it as the trial's error.
    """


_RUNS: dict[str, Any] = {}


def _search_run(settings_json: str) -> Any:
    """One SearchRun (settings, space, evaluator with its dataset, study) per actor process."""
    run = _RUNS.get(settings_json)
    if run is None:
        import optuna

        from .parallel import settings_from_dict
        from .search import SearchRun

        settings = settings_from_dict(json.loads(settings_json))
        # parameters are sampled by the driver; this sampler is never asked for a value
        run = SearchRun(settings, enqueue=False, sampler=optuna.samplers.RandomSampler(seed=settings.seed))
        _RUNS.clear()
        _RUNS[settings_json] = run
    return run


def _tune_trial_class() -> type:
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    class TuneTrial(optuna.trial.Trial):
        """An Optuna trial rebuilt from its id in a Ray worker; reports epochs of the train proxy to Tune."""

        def __init__(self, study: Any, trial_id: int, objectives: Sequence[Any], report: Callable[[dict], None]):
            super().__init__(study, trial_id)
            self._nas_objectives = list(objectives)
            self._nas_report = report
            self._nas_measured: dict[str, Any] = {}

        def set_user_attr(self, key: str, value: Any) -> None:
            try:
                super().set_user_attr(key, value)
            except UpdateFinishedTrialError:
                raise _FinishedElsewhere() from None
            if key in ("params", "flops", "profile"):
                self._nas_measured[key] = value
            elif key == "train_history" and value:
                step, acc = value[-1]
                m = {**self._nas_measured, "accuracy": acc}
                self._nas_report({**_metrics(self._nas_objectives, m), "nas_status": "running", "nas_step": int(step)})

        def set_constraint(self, key: str, value: float) -> None:
            try:
                super().set_constraint(key, value)
            except UpdateFinishedTrialError:
                raise _FinishedElsewhere() from None

    return TuneTrial


def _metrics(objectives: Sequence[Any], measured: dict[str, Any]) -> dict[str, float]:
    out = {}
    for o in objectives:
        v = o.extract(measured)
        out[o.name] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    return out


def _ray_trial(config: dict[str, Any], settings_json: str) -> None:
    """The Ray Tune trainable: evaluate the Optuna trial ``config["nas_trial_id"]`` like a local run."""
    import optuna
    import ray
    from ray import tune

    from .search import TrialFailure

    run = _search_run(settings_json)
    names = [o.name for o in run.objectives]
    nan = {n: math.nan for n in names}
    trial = _tune_trial_class()(run.study, int(config["nas_trial_id"]), run.objectives, tune.report)
    ident = process_identity()
    objective = with_heartbeat(run.objective, worker=dict(backend="ray", host=ident["host"], pid=ident["pid"],
                                                          node_ip=ray.util.get_node_ip_address(),
                                                          gpu_ids=[str(g) for g in ray.get_gpu_ids()],
                                                          tune_trial_id=tune.get_context().get_trial_id()))
    try:
        values = objective(trial)
    except _FinishedElsewhere:
        return  # the driver has told this trial already; nothing more to report
    except optuna.TrialPruned as e:
        tune.report({**nan, "nas_status": "pruned", "nas_error": str(e)})
    except TrialFailure as e:
        tune.report({**nan, "nas_status": "failed", "nas_error": str(e)})
    else:
        tune.report({**dict(zip(names, values)), "nas_status": "complete"})


# ------------------------------------------------------------------------------------------ driver side
class _DefineByRun:
    """OptunaSearch's space: sample the knobs on the Optuna trial; Tune's config carries the trial id."""

    def __init__(self, space: Any):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        from .search import suggest_config

        ot = trial.ot_trial  # Ray's suggest-captor wraps the Optuna trial
        try:
            suggest_config(trial, self.space)
            refused = None
        except ValueError as e:  # recorded by the trainable (it replays the same refusal), not here
            refused = str(e)
        return {"nas_trial_id": ot._trial_id, "nas_trial_number": ot.number, "nas_refused": refused}


class _Control:
    """Driver state shared by the searcher, the stopper and the callback (never pickled with them)."""

    def __init__(self, out: Callable[[str], None], total: Optional[int], names: Sequence[str],
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
        for t in self.tune_trials:
            if t.trial_id == tune_trial_id:
                path = getattr(t, "error_file", None)
                if path and os.path.isfile(path):
                    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
                    return f"Ray trial failed: {lines[-1] if lines else 'no message'} (Tune error file: {path})"
        return "Ray trial failed (its actor died; see the Tune experiment folder)"


def _classes() -> tuple[type, type, type]:
    """Searcher, stopper and callback classes (built on first use: Ray is an optional dependency)."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.stopper import Stopper
    from rich.markup import escape

    states = optuna.trial.TrialState

    class NasOptunaSearch(OptunaSearch):
        """OptunaSearch that tells outcomes from ``nas_status`` (see the module docstring) and prints progress."""

        def __init__(self, *args: Any, control: _Control, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._control = control

        def save(self, checkpoint_path: str) -> None:
            """No Tune searcher checkpoint: the Optuna storage is the state (resume: same --study again)."""

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            storage, tid = self._ot_study._storage, ot_trial._trial_id
            status = (result or {}).get("nas_status")
            values = None
            attrs: dict[str, Any] = {}
            if error:
                state = states.FAIL
                attrs = dict(status="error", error=self._control.error_of(trial_id))
            elif status == "complete":
                state, values = states.COMPLETE, [float(result[n]) for n in self._control.names]
            elif status == "failed":
                state = states.FAIL
            elif status == "pruned":
                state = states.PRUNED
            elif status == "running":
                state = states.PRUNED
                attrs = dict(status="pruned", error=f"stopped by ASHA after {result.get('training_iteration')} "
                                                    f"report(s) (step {result.get('nas_step')}, "
                                                    f"accuracy {result.get('accuracy')})")
            else:
                state = states.FAIL
                attrs = dict(status="not run", error="Ray Tune stopped this trial before it reported a result "
                                                     "(time budget, stop, or shutdown)")
            try:
                for k, v in attrs.items():
                    storage.set_trial_user_attr(tid, k, v)
                self._ot_study.tell(ot_trial, values, state=state)
            except Exception as e:  # e.g. already failed as stale: keep the study's record, say so
                log.warning("trial %d: could not tell %s: %s: %s", ot_trial.number, state.name, type(e).__name__, e)
            self._completed_trials.add(trial_id)
            self._after_tell(storage.get_trial(tid))

        def _after_tell(self, t: Any) -> None:
            c = self._control
            c.told += 1
            if c.out is not None:
                total = f"/{c.total}" if c.total else ""
                if t.state == states.COMPLETE:
                    detail = " ".join(f"{n}={v:.4g}" for n, v in zip(c.names, t.values))
                else:
                    detail = str(t.user_attrs.get("error") or "")[:100]
                wall = t.user_attrs.get("wall_s")
                c.out(f"[{c.told}{total}] ray #{t.number} {t.state.name} {escape(detail)}"
                      + (f" ({wall:.1f}s)" if isinstance(wall, (int, float)) else ""))
            n = c.max_fail
            recent = [x for x in self._ot_study.get_trials(deepcopy=False) if x.state.is_finished()]
            recent = sorted(recent, key=lambda x: x.datetime_complete or x.datetime_start)[-n:]
            if len(recent) == n and all(x.state == states.FAIL for x in recent) and c.stop_reason is None:
                c.stop_reason = (f"stopped after {n} failed trials in a row; last error: "
                                 f"{recent[-1].user_attrs.get('error')}")
                log.warning(c.stop_reason)

    class FailureStopper(Stopper):
        def __init__(self, control: _Control):
            self._control = control

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return self._control.stop_reason is not None

    class TrialList(tune.Callback):
        """Keeps Tune's trial list, so the searcher can read a failed trial's error file."""

        def __init__(self, control: _Control):
            self._control = control

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            self._control.tune_trials = trials

    return NasOptunaSearch, FailureStopper, TrialList


def _resolve_for_cluster(settings: Any, device: str) -> Any:
    """``settings.resolved()`` for ``device``, also when the GPUs are on the cluster and not here."""
    from . import search as search_mod

    s = dataclasses.replace(settings, device=device)
    local_cuda = device != "cuda" or search_mod._cuda_available()
    with (nullcontext() if local_cuda else mock.patch.object(search_mod, "_cuda_available", lambda: True)):
        return s.resolved()


def run_ray_search(settings: Any, *, address: Optional[str] = None, workers: int = 1, gpus_per_trial: float = 1.0,
                   asha: Optional[bool] = None, console: Any = None,
                   ray_init_kwargs: Optional[dict[str, Any]] = None) -> Any:
    """Run (or resume) ``settings.study`` with Ray Tune; returns ``nas.search.SearchResult``.

    Args:
        settings: ``SearchSettings``; ``device=None`` means cuda when the cluster has GPUs.
        address: Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``); None starts a local Ray
            (or uses the one this process already initialised).
        workers: trials running at once (``max_concurrent_trials``).
        gpus_per_trial: GPUs each trial reserves (fractions share a GPU; 0 on the CPU).
        asha: stop poor trials of the ``train`` proxy with ASHA on ``accuracy``; default: on when
            the objectives include accuracy, the proxy is ``train`` and it validates more than once
            (``train_epochs > 1``).
        ray_init_kwargs: extra ``ray.init`` arguments (e.g. ``num_cpus``, ``runtime_env``).
    """
    import optuna

    ray, tune = _import_ray()
    from ray.tune.schedulers import ASHAScheduler

    from .objectives import parse_constraint, parse_objectives
    from .samplers import make_sampler
    from .search import summarize
    from search_spaces.space import load_space

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, (int, float)) or not gpus_per_trial >= 0:
        raise ValueError(f"gpus_per_trial={gpus_per_trial!r} must be a number >= 0")
    # cheap checks before any cluster starts
    parse_objectives(settings.objectives)
    for c in [*settings.constraints, *load_space(settings.space).constraints]:
        parse_constraint(c)
    ray_storage(settings.storage, nodes=1)
    started = False
    if not ray.is_initialized():
        ray.init(address=address, **(ray_init_kwargs or {}))
        started = True
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        cluster_gpus = float(resources.get("GPU", 0))
        device = settings.device or ("cuda" if cluster_gpus > 0 and gpus_per_trial > 0 else "cpu")
        if device == "cuda":
            if gpus_per_trial <= 0:
                raise ValueError("device='cuda' needs --gpus-per-trial > 0 (0 would give trials no GPU)")
            if cluster_gpus < gpus_per_trial:
                raise ValueError(f"--gpus-per-trial {gpus_per_trial:g} but the Ray cluster has {cluster_gpus:g} GPU(s)")
        else:
            gpus_per_trial = 0.0
        storage = ray_storage(settings.storage, nodes=nodes)
        s = _resolve_for_cluster(dataclasses.replace(settings, storage=storage), device)
        objectives = parse_objectives(s.objectives)
        space = load_space(s.space)
        for c in [*s.constraints, *space.constraints]:
            parse_constraint(c)
        settings_json = json.dumps(portable_settings(s), sort_keys=True)
        names = [o.name for o in objectives]
        use_asha = asha if asha is not None else ("accuracy" in names and s.proxy == "train" and s.train_epochs > 1)
        if use_asha and "accuracy" not in names:
            raise ValueError(f"asha=True needs 'accuracy' among the objectives, not {names}")

        drv = open_driver(s, space, console)
        out, study, stale, queued = drv.out, drv.study, drv.stale, drv.queued
        results_dir, log_file, storage_desc = drv.results_dir, drv.log_file, drv.storage_desc
        out(f"[bold]backend[/]: Ray Tune {ray.__version__} ({'local Ray' if address is None else address}; {nodes} "
            f"node(s), {resources.get('CPU', 0):g} CPU, {cluster_gpus:g} GPU), {workers} trial(s) at once, "
            f"{gpus_per_trial:g} GPU and 1 CPU per trial, device {device}"
            + (", ASHA on accuracy" if use_asha else ""))
        out(f"[bold]storage[/]: {storage_desc}")
        out(f"[bold]study[/]: {s.study} ({len(study.trials)} trial(s) already in it; "
            f"{s.trials if s.trials else 'until the timeout'} to add)")
        if stale:
            out(f"[yellow]marked trials {stale} FAIL: their workers died (no heartbeat)[/]")
        if queued:
            out(f"[bold]presets queued[/]: {', '.join(queued)}")
        if device == "cuda" and gpus_per_trial < 1 and any(o.needs == "profile" for o in objectives):
            out(f"[bold red]warning: --gpus-per-trial {gpus_per_trial:g} shares GPUs between trials: "
                f"throughput/latency/memory are measured on a busy GPU[/]")

        control = _Control(out, s.trials, names, s.max_consecutive_failures)
        Searcher, FailureStopper, TrialList = _classes()
        sampler = make_sampler(s.sampler, seed=s.seed, n_trials=s.trials or 100)
        searcher = Searcher(space=_DefineByRun(space), metric=names,
                            mode=["max" if o.maximize else "min" for o in objectives], sampler=sampler,
                            study_name=s.study, storage=get_storage(s.storage), control=control)
        scheduler = None
        if use_asha:
            max_t = max(2, math.ceil(s.train_epochs))
            scheduler = ASHAScheduler(metric="accuracy", mode="max", time_attr="training_iteration", max_t=max_t,
                                      grace_period=1, reduction_factor=2)
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, settings_json=settings_json),
                                        {"cpu": 1, "gpu": gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.trials or -1,
                                        max_concurrent_trials=workers, time_budget_s=s.timeout,
                                        # an actor keeps its SearchRun (imports, dataset) across trials; not
                                        # with ASHA: a stopped function trainable's thread cannot be ended, so
                                        # Tune's reset fails and it would error the next trial (Ray 2.60)
                                        reuse_actors=scheduler is None),
            run_config=tune.RunConfig(name=f"{s.study}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str((results_dir / "ray").resolve()), verbose=0,
                                      stop=FailureStopper(control), callbacks=[TrialList(control)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()

        # trials suggested but never run (time budget / stop): fail them with the reason
        for tune_id, ot_trial in searcher._ot_trials.items():
            if tune_id in searcher._completed_trials:
                continue
            t = study._storage.get_trial(ot_trial._trial_id)
            if t.state == optuna.trial.TrialState.RUNNING:
                study._storage.set_trial_user_attr(t._trial_id, "status", "not run")
                study._storage.set_trial_user_attr(t._trial_id, "error", "Ray Tune ended before this trial ran")
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        stale = fail_stale_trials(study)
        if stale:
            out(f"[yellow]marked trials {stale} FAIL: their workers died (no heartbeat)[/]")
        out(f"inspect with: nas pareto --study {s.study} --storage {settings.storage or DEFAULT_JOURNAL}")
        return summarize(study, s, storage_desc=storage_desc, log_file=log_file, stopped_reason=control.stop_reason)
    finally:
        if started:
            ray.shutdown()
