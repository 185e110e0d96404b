"""Ray Tune backend: trials run as Ray actors (one machine or a cluster), recorded in the Optuna study.

``nas search --backend ray [--ray-address auto] [--workers N] [--gpus-per-trial G]``
(``run_ray_search``). The study lives in the SAME Optuna storage as a local run, with the same
user attributes per trial, so ``nas pareto``, the HTML report and optuna-dashboard cannot tell a
Ray-run study from a local one.

How a trial flows:

1. the driver creates/loads the study (directions, metric names, settings; presets queued), fails
   stale trials, and hands Ray Tune a ``nas.ray_tune.NasSearcher`` over that study (Tune's public
   ``Searcher`` API): ``suggest`` asks the study for a trial (so the Optuna trial holds the
   parameters, sampled by our sampler, e.g. NSGA-II) and returns its id;
2. the Ray trainable (another process, maybe another machine) opens the storage by URL, rebuilds
   that trial (``nas.adapters.trial_of``: every ``suggest_*`` replays the stored value) and runs
   the very objective of a local run (``TrialRunner.objective``: config, arch_id, summary, params,
   flops, profile, accuracy estimate, timings, status, error, wall_s, constraints), with a heartbeat
   (``nas.heartbeat``). One ``TrialRunner`` (evaluator, dataset) per actor process, cached;
3. it reports the metrics with ``tune.report``; an accuracy estimator that reports on the way (the
   ``train`` proxy: each epoch's validation) reports through the objective's ``on_epoch`` callback
   (``nas_status="running"``), so ``ASHAScheduler(metric="accuracy", mode="max")`` can stop poor
   trials;
4. the driver's searcher tells Optuna the outcome (``NasSearcher.on_trial_complete``).

Why not Ray's stock ``OptunaSearch`` (Ray 2.60): it tells COMPLETE with ``result[m]`` of the LAST
result, so (a) a trial stopped by ASHA would enter the Pareto front with its intermediate
(under-trained) accuracy, and (b) a multi-objective result missing any metric makes ``study.tell``
raise, only logged, and the Optuna trial stays RUNNING forever; changing that meant reading its
private attributes. Here every report carries every metric (NaN when not measured, which ASHA's
``nanpercentile`` ignores) plus ``nas_status``, and the outcome is told from it: ``complete`` ->
COMPLETE with the values; ``failed`` (refused config, OOM, NaN proxy...) -> FAIL (the reason is already in
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

import json
import logging
import math
import time
from typing import Any, Optional, Sequence

import optuna

from evaluators.data import DATASETS, list_datasets
from evaluators.estimators import AccuracyEstimator

from .adapters import storage_of, trial_of
from .heartbeat import fail_trial, process_identity
from .record import Status
from .search import StudyDriver, TrialRunner
from .settings import SearchSettings, absolute_url, check_int, check_number, settings_for_process, settings_from_dict
from .storage import DEFAULT_JOURNAL, storage_kind

__all__ = ["run_ray_search", "RayBackend", "RayNotInstalledError", "ray_storage", "INSTALL_HINT", "use_asha"]

log = logging.getLogger("nas.ray")

INSTALL_HINT = ('the Ray backend needs Ray Tune, which is not installed: pip install "nas-fastervit[ray]" '
                '(from a checkout: pip install -e ".[ray]"), or pip install "ray[tune]>=2.40"')


class RayNotInstalledError(ImportError, ValueError):
    """Ray Tune is missing (a ValueError too, so the CLI prints it as one message)."""


def _import_ray() -> Any:
    """Ray, or one clear error saying how to install it (Ray is an optional extra)."""
    try:
        import ray
        from ray.tune.search import Searcher  # noqa: F401  (fails early if Ray lacks Tune)
    except ImportError as e:
        raise RayNotInstalledError(f"{INSTALL_HINT} ({e})") from None
    return ray


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


def use_asha(estimator: Optional[AccuracyEstimator], objectives: Sequence[str], *, fidelity: str,
             asked: Optional[bool] = None) -> bool:
    """Whether ASHA stops poor trials: asked for, or by default when accuracy is an objective and its estimator
    reports on the way (``intermediate_reports``: the train proxy with more than one epoch). ``--fidelity sh``
    already stops trials at its own multi-objective rungs, so the two are refused together."""
    sh = fidelity == "sh"
    if asked and sh:
        raise ValueError("asha=True and --fidelity sh are two schedulers: --fidelity sh already stops trials "
                         "at its multi-objective rungs")
    if asked and "accuracy" not in objectives:
        raise ValueError(f"asha=True needs 'accuracy' among the objectives, not {list(objectives)}")
    if asked is not None:
        return asked
    return not sh and "accuracy" in objectives and estimator is not None and estimator.intermediate_reports > 0


# ------------------------------------------------------------------------------------------ trainable side
_RUNS: dict[str, TrialRunner] = {}


def _trial_runner(settings_json: str) -> TrialRunner:
    """One TrialRunner (settings, space, evaluator with its dataset, study) per actor process."""
    run = _RUNS.get(settings_json)
    if run is None:
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
    import ray
    from ray import tune

    run = _trial_runner(settings_json)
    names = [o.name for o in run.objectives]
    nan = {n: math.nan for n in names}
    trial = trial_of(run.study, int(config["nas_trial_id"]))
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
class RayBackend:
    """Trials as Ray Tune trials (see the module docstring); built by ``run_ray_search`` once Ray is up."""

    name = "ray"

    def __init__(self, ray: Any, *, address: Optional[str], workers: int, gpus_per_trial: float, asha: bool,
                 nodes: int, resources: dict[str, Any]):
        self.ray, self.address, self.workers = ray, address, workers
        self.gpus_per_trial, self.asha, self.nodes, self.resources = gpus_per_trial, asha, nodes, resources

    def prepare(self, drv: StudyDriver) -> None:
        """Only the dataset's name is checked here: on a cluster the files may exist on the workers only."""
        key = drv.settings.data.partition(":")[0]
        if key not in DATASETS:
            raise ValueError(f"unknown dataset {drv.settings.data!r}; known: {', '.join(list_datasets())}")

    def _announce(self, drv: StudyDriver) -> None:
        s, res = drv.settings, self.resources
        drv.announce(f"Ray Tune {self.ray.__version__} ({'local Ray' if self.address is None else self.address}; "
                     f"{self.nodes} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU), {self.workers} "
                     f"trial(s) at once, {self.gpus_per_trial:g} GPU and 1 CPU per trial, device {s.device}"
                     + (", ASHA on accuracy" if self.asha else ""))
        if s.device == "cuda" and self.gpus_per_trial < 1 and any(o.needs == "profile" for o in drv.objectives):
            drv.out(f"[bold red]warning: --gpus-per-trial {self.gpus_per_trial:g} shares GPUs between trials: "
                    f"throughput/latency/memory are measured on a busy GPU[/]")

    def run(self, drv: StudyDriver) -> Optional[str]:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        from .ray_tune import Control, FailureStopper, NasSearcher, TrialList  # imports Ray: only once it is there

        s = drv.settings
        self._announce(drv)
        control = Control(drv.out, s.trials, drv.names, s.max_consecutive_failures)
        searcher = NasSearcher(study=drv.study, space=drv.space, control=control)
        scheduler = None
        if self.asha:
            assert drv.estimator is not None  # use_asha: accuracy is an objective
            scheduler = ASHAScheduler(metric="accuracy", mode="max", time_attr="training_iteration",
                                      max_t=max(2, drv.estimator.intermediate_reports + 1), grace_period=1,
                                      reduction_factor=2)
        settings_json = json.dumps(settings_for_process(s), sort_keys=True)
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
        finally:  # trials suggested but never run (time budget, stop, interrupt): FAIL with the reason
            for tid in searcher.unfinished():
                fail_trial(storage_of(drv.study), tid, "Ray Tune ended before this trial ran", Status.NOT_RUN)
        drv.out(f"inspect with: nas pareto --study {s.study} --storage {s.storage}")
        return control.stop_reason


def _cluster(ray: Any, address: Optional[str], ray_init_kwargs: Optional[dict[str, Any]]) -> bool:
    if ray.is_initialized():
        return False
    ray.init(address=address, **(ray_init_kwargs or {}))
    return True


def run_ray_search(settings: SearchSettings, *, address: Optional[str] = None, workers: Optional[int] = None,
                   gpus_per_trial: Optional[float] = None, asha: Optional[bool] = None, console: Any = None,
                   ray_init_kwargs: Optional[dict[str, Any]] = None) -> Any:
    """Run (or resume) ``settings.study`` with Ray Tune; returns ``nas.search.SearchResult``.

    Args:
        settings: ``SearchSettings``; ``device=None`` means cuda when the cluster has GPUs.
        address: Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``; default ``settings.ray_address``);
            None starts a local Ray (or uses the one this process already initialised).
        workers: trials running at once (``max_concurrent_trials``; default ``settings.workers``).
        gpus_per_trial: GPUs each trial reserves (fractions share a GPU; 0 on the CPU; default
            ``settings.gpus_per_trial``).
        asha: stop poor trials with ASHA on ``accuracy`` (``use_asha``; default: when the accuracy
            estimator reports on the way, e.g. the ``train`` proxy with ``train_epochs > 1``).
        ray_init_kwargs: extra ``ray.init`` arguments (e.g. ``num_cpus``, ``runtime_env``).
    """
    ray = _import_ray()
    address = settings.ray_address if address is None else address
    workers = check_int("workers", settings.workers if workers is None else workers, minimum=1)
    gpus_per_trial = check_number("gpus_per_trial", settings.gpus_per_trial if gpus_per_trial is None
                                  else gpus_per_trial, minimum=0)
    ray_storage(settings.storage, nodes=1)  # cheap checks before any cluster starts
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
        s = settings.replace(storage=ray_storage(settings.storage, nodes=nodes), device=device)
        # the GPUs are the cluster's (the head may have none): resolve the defaults for them
        drv = StudyDriver(s, console=console, cuda=device == "cuda")
        backend = RayBackend(ray, address=address, workers=workers, gpus_per_trial=gpus_per_trial,
                             asha=use_asha(drv.estimator, drv.names, fidelity=s.fidelity, asked=asha), nodes=nodes,
                             resources=resources)
        return drv.run(backend)
    finally:
        if started:
            ray.shutdown()
