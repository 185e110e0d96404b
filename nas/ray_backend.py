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
   (``nas.heartbeat``). One ``TrialRunner`` (evaluator, dataset) per actor process, cached;
3. it reports the metrics with ``tune.report``; the ``train`` proxy also reports the validation
   accuracy after each epoch through the objective's explicit ``on_epoch`` callback
   (``nas_status="running"``), so ``ASHAScheduler(metric="accuracy", mode="max")`` can stop poor
   trials;
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
Suggested trials that never started (time budget) are FAILed with a reason at the end. A ``tell``
that fails (storage fault) still ends the trial FAIL, with the reason, so none stays RUNNING.
Between being suggested and its actor's first heartbeat a trial is owned by the driver process
(``nas:owner``), so a killed driver's trials are failed as stale, too.

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
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import record as R
from .heartbeat import HEARTBEAT_KEY, OWNER_KEY, fail_trial, process_identity, storage_of, trial_id
from .record import Status
from .settings import SearchSettings, absolute_url, check_int, check_number, portable_settings
from .storage import DEFAULT_JOURNAL, storage_kind

__all__ = ["run_ray_search", "RayBackend", "RayNotInstalledError", "ray_storage", "INSTALL_HINT"]

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
    return absolute_url(storage)


# ------------------------------------------------------------------------------------------ trainable side
_RUNS: dict[str, Any] = {}


def _trial_runner(settings_json: str) -> Any:
    """One TrialRunner (settings, space, evaluator with its dataset, study) per actor process."""
    run = _RUNS.get(settings_json)
    if run is None:
        import optuna

        from .search import TrialRunner
        from .settings import settings_from_dict

        settings = settings_from_dict(json.loads(settings_json))
        # parameters are sampled by the driver; this sampler is never asked for a value
        run = TrialRunner(settings, sampler=optuna.samplers.RandomSampler(seed=settings.seed),
                          cuda=settings.device == "cuda" or None)
        _RUNS.clear()
        _RUNS[settings_json] = run
    return run


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

    run = _trial_runner(settings_json)
    names = [o.name for o in run.objectives]
    nan = {n: math.nan for n in names}
    trial = optuna.trial.Trial(run.study, int(config["nas_trial_id"]))
    ident = process_identity()
    worker = dict(backend="ray", host=ident["host"], pid=ident["pid"], node_ip=ray.util.get_node_ip_address(),
                  gpu_ids=[str(g) for g in ray.get_gpu_ids()], tune_trial_id=tune.get_context().get_trial_id())

    def on_epoch(step: int, accuracy: float, measured: dict[str, Any]) -> None:
        metrics = _metrics(run.objectives, {**measured, "accuracy": accuracy})
        tune.report({**metrics, "nas_status": "running", "nas_step": int(step)})

    state, values, error = run.run_trial(trial, worker=worker, on_epoch=on_epoch, tell=False)
    if state is None:
        return  # the driver has told this trial already (ASHA stop, time budget): nothing more to report
    if state == optuna.trial.TrialState.COMPLETE:
        tune.report({**dict(zip(names, values)), "nas_status": "complete"})
    elif state == optuna.trial.TrialState.PRUNED:
        tune.report({**nan, "nas_status": "pruned", "nas_error": error})
    else:
        tune.report({**nan, "nas_status": "failed", "nas_error": error})


# ------------------------------------------------------------------------------------------ driver side
class _DefineByRun:
    """OptunaSearch's space: sample the knobs on the Optuna trial; Tune's config carries the trial id."""

    def __init__(self, space: Any):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        from .search import suggest_config

        ot = trial.ot_trial  # Ray's suggest-captor wraps the Optuna trial
        storage = storage_of(ot.study)
        tid = trial_id(storage, ot.study.study_name, ot.number)
        # owned by the driver until its actor beats: a killed driver leaves no ownerless RUNNING trial
        storage.set_trial_system_attr(tid, OWNER_KEY, process_identity())
        storage.set_trial_system_attr(tid, HEARTBEAT_KEY, time.time())
        try:
            suggest_config(trial, self.space)
            refused = None
        except ValueError as e:  # recorded by the trainable (it replays the same refusal), not here
            refused = str(e)
        return {"nas_trial_id": tid, "nas_trial_number": ot.number, "nas_refused": refused}


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

    from .search import consecutive_failures

    states = optuna.trial.TrialState
    _trial_id = trial_id

    class NasOptunaSearch(OptunaSearch):
        """OptunaSearch that tells outcomes from ``nas_status`` (see the module docstring) and prints progress."""

        def __init__(self, *args: Any, control: _Control, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._control = control

        def save(self, checkpoint_path: str) -> None:
            """No Tune searcher checkpoint: the Optuna storage is the state (resume: same --study again)."""

        def __getstate__(self) -> dict[str, Any]:
            """Tune pickles the searcher into tuner.pkl (for ``Tuner.restore``, which nas does not use: the
            Optuna storage is the state). Optuna's GA samplers (NSGA-II/III) hold a thread lock since
            optuna 5.1, and the study holds its sampler: both stay out of the pickle."""
            return dict(self.__dict__, _sampler=None, _ot_study=None)

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            storage = storage_of(self._ot_study)
            tid = _trial_id(storage, self._ot_study.study_name, ot_trial.number)
            status = (result or {}).get("nas_status")
            values = None
            attrs: dict[str, Any] = {}
            if error:
                state = states.FAIL
                attrs = {R.STATUS: Status.ERROR, R.ERROR: self._control.error_of(trial_id)}
            elif status == "complete":
                state, values = states.COMPLETE, [float(result[n]) for n in self._control.names]
            elif status == "failed":
                state = states.FAIL
            elif status == "pruned":
                state = states.PRUNED
            elif status == "running":
                state = states.PRUNED
                attrs = {R.STATUS: Status.PRUNED,
                         R.ERROR: f"stopped by ASHA after {result.get('training_iteration')} report(s) "
                                  f"(step {result.get('nas_step')}, accuracy {result.get('accuracy')})"}
            else:
                state = states.FAIL
                attrs = {R.STATUS: Status.NOT_RUN, R.ERROR: "Ray Tune stopped this trial before it reported a result "
                                                            "(time budget, stop, or shutdown)"}
            try:
                for k, v in attrs.items():
                    storage.set_trial_user_attr(tid, k, v)
                self._ot_study.tell(ot_trial, values, state=state)
            except Exception as e:  # a storage fault: the trial must still end, with the reason
                reason = f"the driver could not record the outcome {state.name}: {type(e).__name__}: {e}"
                log.warning("trial %d: %s", ot_trial.number, reason)
                fail_trial(storage, tid, reason, Status.ERROR)
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
                    detail = str(t.user_attrs.get(R.ERROR) or "")[:100]
                wall = t.user_attrs.get(R.WALL_S)
                c.out(f"[{c.told}{total}] ray #{t.number} {t.state.name} {escape(detail)}"
                      + (f" ({wall:.1f}s)" if isinstance(wall, (int, float)) else ""))
            if c.stop_reason is None:
                c.stop_reason = consecutive_failures(self._ot_study, c.max_fail)
                if c.stop_reason:
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


class RayBackend:
    """Trials as Ray Tune trials (see the module docstring); built by ``run_ray_search`` once Ray is up."""

    name = "ray"

    def __init__(self, ray: Any, *, address: Optional[str], workers: int, gpus_per_trial: float, use_asha: bool,
                 nodes: int, resources: dict[str, Any]):
        self.ray, self.address, self.workers = ray, address, workers
        self.gpus_per_trial, self.use_asha, self.nodes, self.resources = gpus_per_trial, use_asha, nodes, resources

    def prepare(self, drv: Any) -> None:
        """Only the dataset's name is checked here: on a cluster the files may exist on the workers only."""
        from evaluators.data import DATASETS, list_datasets

        key = drv.settings.data.partition(":")[0]
        if key not in DATASETS:
            raise ValueError(f"unknown dataset {drv.settings.data!r}; known: {', '.join(list_datasets())}")

    def _announce(self, drv: Any) -> None:
        s, res = drv.settings, self.resources
        drv.announce(f"Ray Tune {self.ray.__version__} ({'local Ray' if self.address is None else self.address}; "
                     f"{self.nodes} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU), {self.workers} "
                     f"trial(s) at once, {self.gpus_per_trial:g} GPU and 1 CPU per trial, device {s.device}"
                     + (", ASHA on accuracy" if self.use_asha else ""))
        if s.device == "cuda" and self.gpus_per_trial < 1 and any(o.needs == "profile" for o in drv.objectives):
            drv.out(f"[bold red]warning: --gpus-per-trial {self.gpus_per_trial:g} shares GPUs between trials: "
                    f"throughput/latency/memory are measured on a busy GPU[/]")

    def run(self, drv: Any) -> Optional[str]:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        s = drv.settings
        self._announce(drv)
        control = _Control(drv.out, s.trials, drv.names, s.max_consecutive_failures)
        Searcher, FailureStopper, TrialList = _classes()
        searcher = Searcher(space=_DefineByRun(drv.space), metric=drv.names,
                            mode=["max" if o.maximize else "min" for o in drv.objectives], sampler=drv.sampler,
                            study_name=s.study, storage=storage_of(drv.study), control=control)
        scheduler = None
        if self.use_asha:
            scheduler = ASHAScheduler(metric="accuracy", mode="max", time_attr="training_iteration",
                                      max_t=max(2, math.ceil(s.train_epochs)), grace_period=1, reduction_factor=2)
        settings_json = json.dumps(portable_settings(s), sort_keys=True)
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, settings_json=settings_json),
                                        {"cpu": 1, "gpu": self.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.trials or -1,
                                        max_concurrent_trials=self.workers, time_budget_s=s.timeout,
                                        # an actor keeps its TrialRunner (imports, dataset) across trials; not
                                        # with ASHA: a stopped function trainable's thread cannot be ended, so
                                        # Tune's reset fails and it would error the next trial (Ray 2.60)
                                        reuse_actors=scheduler is None),
            run_config=tune.RunConfig(name=f"{s.study}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str((drv.results_dir / "ray").resolve()), verbose=0,
                                      stop=FailureStopper(control), callbacks=[TrialList(control)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        try:
            tuner.fit()
        finally:
            self._fail_unrun(searcher)
        drv.out(f"inspect with: nas pareto --study {s.study} --storage {s.storage}")
        return control.stop_reason

    @staticmethod
    def _fail_unrun(searcher: Any) -> None:
        """Trials suggested but never run (time budget, stop, interrupt): FAIL with the reason."""
        storage = storage_of(searcher._ot_study)
        for tune_id, ot_trial in searcher._ot_trials.items():
            if tune_id not in searcher._completed_trials:
                tid = trial_id(storage, searcher._ot_study.study_name, ot_trial.number)
                fail_trial(storage, tid, "Ray Tune ended before this trial ran", Status.NOT_RUN)


def _cluster(ray: Any, address: Optional[str], ray_init_kwargs: Optional[dict[str, Any]]) -> bool:
    if ray.is_initialized():
        return False
    ray.init(address=address, **(ray_init_kwargs or {}))
    return True


def run_ray_search(settings: SearchSettings, *, address: Optional[str] = None, workers: int = 1,
                   gpus_per_trial: float = 1.0, asha: Optional[bool] = None, console: Any = None,
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
    from .search import StudyDriver

    ray, _ = _import_ray()
    check_int("workers", workers, minimum=1)
    check_number("gpus_per_trial", gpus_per_trial, minimum=0)
    settings.validated()  # cheap checks before any cluster starts
    ray_storage(settings.storage, nodes=1)
    started = _cluster(ray, address, ray_init_kwargs)
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
        s = dataclasses.replace(settings, storage=ray_storage(settings.storage, nodes=nodes), device=device)
        names = list(s.objectives)
        sh = s.fidelity == "sh"  # nas.fidelity's multi-objective rungs run inside each trial instead of ASHA
        if asha and sh:
            raise ValueError("asha=True and --fidelity sh are two schedulers: --fidelity sh already stops trials "
                             "at its multi-objective rungs")
        use_asha = asha if asha is not None else (not sh and "accuracy" in names and s.proxy == "train"
                                                  and s.train_epochs > 1)
        if use_asha and "accuracy" not in names:
            raise ValueError(f"asha=True needs 'accuracy' among the objectives, not {names}")
        # the GPUs are the cluster's (the head may have none): resolve the defaults for them
        drv = StudyDriver(s, console=console, cuda=device == "cuda")
        backend = RayBackend(ray, address=address, workers=workers, gpus_per_trial=gpus_per_trial,
                             use_asha=use_asha, nodes=nodes, resources=resources)
        return drv.run(backend)
    finally:
        if started:
            ray.shutdown()
