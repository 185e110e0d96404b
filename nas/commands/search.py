"""``nas search``: a multi-objective study (local Optuna, parallel workers, or Ray Tune)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import typer
from rich.markup import escape

from nas.objectives import MEASURED, PREDICTED, parse_constraint, parse_objectives, use_predicted
from nas.settings import (
    DTYPES,
    EstimatorOptions,
    SearchOptions,
    SearchSettings,
    StorageOptions,
    ThroughputOptions,
    WorkerOptions,
    device_default,
)
from nas.storage import DEFAULT_JOURNAL, DEFAULT_STORAGE

from ._common import console, err_console, typed, user_errors
from .confirm import run_confirm
from .pareto import print_pareto_rows

# every default below is read from the settings groups (nas.settings), never repeated here
SEARCH, ESTIMATOR, THROUGHPUT = SearchOptions, EstimatorOptions, ThroughputOptions
STORAGE, WORKERS = StorageOptions, WorkerOptions
_TRAIN = "--proxy train: "


def search(
    ctx: typer.Context,
    objective: str = typer.Option(",".join(SEARCH.objectives), "--objective", "-o",
                                  help="2-3 of: accuracy, throughput, latency, params, flops, memory."),
    proxy: str = typer.Option(
        ESTIMATOR.proxy, help="The accuracy estimator: a zero-cost proxy (see `nas proxies`) or 'train' (a short "
        "training run). Default: the best single zero-cost proxy on the fmnist-odd ground truth (tau 0.45; README)."),
    trials: Optional[int] = typer.Option(SEARCH.trials, "--trials", "-n",
                                         help=f"Trials to add (default: {device_default(SEARCH, 'trials')})."),
    timeout: Optional[float] = typer.Option(SEARCH.timeout, help="Stop starting trials after this many seconds."),
    sampler: str = typer.Option(SEARCH.sampler, help="nsga2 | nsga3 | tpe | gp | random."),
    population: Optional[int] = typer.Option(
        SEARCH.population, help="nsga2/nsga3 population size (default: trials / 5, 8..50; with --timeout alone set it "
        "to ~1/3 of the trials that fit, or NSGA-II stays in its random first generation)."),
    constraint: List[str] = typer.Option(list(SEARCH.constraints), "--constraint", "-c",
                                         help="e.g. 'params<=60e6' (repeatable)."),
    space: str = typer.Option(SEARCH.space, help="Built-in space name or a YAML file."),
    data: str = typer.Option(ESTIMATOR.data, help="fmnist-odd (default: the ground-truth task) | fmnist-pairs | "
                             "fashion-mnist | cifar10 | cifar100 | imagefolder:PATH."),
    data_dir: Optional[str] = typer.Option(ESTIMATOR.data_dir, help="Folder holding the dataset files."),
    storage: Optional[str] = typer.Option(STORAGE.storage, help=f"Optuna storage URL (default {DEFAULT_STORAGE}; "
                                          f"{DEFAULT_JOURNAL} with --workers)."),
    study: str = typer.Option(STORAGE.study, help="Study name; the same name resumes and adds trials."),
    device: Optional[str] = typer.Option(WORKERS.device, help="cuda | cpu (default: cuda if present)."),
    seed: int = typer.Option(SEARCH.seed, help="Seed of the sampler, data batch and accuracy estimator."),
    enqueue_presets: Optional[bool] = typer.Option(SEARCH.enqueue_presets, "--enqueue-presets/--no-enqueue-presets",
                                                   help="Evaluate FasterViT-0..3 first as reference points "
                                                        "(default: on with a GPU)."),
    proxy_resolution: Optional[int] = typer.Option(
        ESTIMATOR.proxy_resolution,
        help=f"Resolution the accuracy is estimated at (default {device_default(ESTIMATOR, 'proxy_resolution')})."),
    proxy_batch_size: Optional[int] = typer.Option(
        ESTIMATOR.proxy_batch_size,
        help=f"Images of the zero-cost proxies' batch (default {device_default(ESTIMATOR, 'proxy_batch_size')})."),
    batch_size: Optional[int] = typer.Option(
        THROUGHPUT.batch_size, help=f"Profiler batch size (default {device_default(THROUGHPUT, 'batch_size')})."),
    dtype: str = typer.Option(THROUGHPUT.dtype, help=f"Profiler dtype: {' | '.join(DTYPES)}."),
    pad_channels: Optional[int] = typer.Option(
        THROUGHPUT.pad_channels, "--pad-channels", metavar="N",
        help="Profiler: zero-pad each deployed network's widths and head dims to multiples of N (8: tensor cores; "
             "same outputs) before timing, as `nas export`'s model card deploys it. Part of what a measured value "
             "means (a study keeps one); not with a predicted throughput (predictors are fitted unpadded). "
             "Default: off."),
    gelu_epilogue: bool = typer.Option(
        THROUGHPUT.gelu_epilogue, "--gelu-epilogue",
        help="Profiler: after the deploy step (and the padding), run each MLP's fc1 -> GELU as one GEMM with a "
             "bias+GELU epilogue (search_spaces.fuse_gelu_epilogue; tanh-approximate GELU on CUDA) before timing. "
             "Part of what a measured value means (a study keeps one); not with a predicted throughput "
             "(predictors are fitted unfused). Default: off."),
    train_epochs: float = typer.Option(ESTIMATOR.train_epochs, help=_TRAIN + "the full training budget in epochs."),
    train_subset: Optional[int] = typer.Option(ESTIMATOR.train_subset,
                                               help=_TRAIN + "training images (a fixed subset)."),
    train_val_subset: Optional[int] = typer.Option(ESTIMATOR.train_val_subset,
                                                   help=_TRAIN + "validation images (default all)."),
    train_batch_size: int = typer.Option(ESTIMATOR.train_batch_size,
                                         help=_TRAIN + "batch size (an epoch: subset // batch steps)."),
    train_recipe: Optional[str] = typer.Option(
        ESTIMATOR.train_recipe, metavar="JSON|FILE",
        help=_TRAIN + "the rest of the recipe as TrainRecipe fields, e.g. '{\"grad_clip\": 1.0, \"augment\": "
                      "{\"crop\": 0.0625, \"flip\": true}}', or a JSON file (one with a top-level \"recipe\", such as "
                      "results/benchmarks/groundtruth2-summary.json, gives that). Keys an option also sets must "
                      "agree with it. Default: the train proxy's recipe."),
    fidelity: str = typer.Option(ESTIMATOR.fidelity, help="full (every trial trains the whole budget) | sh "
                                 "(multi-objective successive halving on the train proxy: rungs at B, eta*B, ... "
                                 "epochs)."),
    min_budget: Optional[float] = typer.Option(ESTIMATOR.min_budget, help="--fidelity sh: epochs of the first rung "
                                               "(default train-epochs / eta^2)."),
    eta: int = typer.Option(ESTIMATOR.eta, help="--fidelity sh: the top 1/eta of each rung go on (integer >= 2)."),
    confirm: int = typer.Option(SEARCH.confirm, help="After the search, train the K most accurate front points: "
                                "--proxy train re-trains with another seed, supernet:DIR trains stand-alone with "
                                "two seeds (see `nas confirm`)."),
    workers: int = typer.Option(WORKERS.workers, help="Parallel worker processes sharing the study (one per GPU)."),
    backend: str = typer.Option(WORKERS.backend, help="optuna (this box) | ray (Ray Tune)."),
    ray_address: Optional[str] = typer.Option(WORKERS.ray_address, help="Ray cluster address (auto | HOST:PORT)."),
    gpus_per_trial: float = typer.Option(WORKERS.gpus_per_trial, help="GPUs per Ray trial (fractions allowed)."),
    results_dir: str = typer.Option(STORAGE.results_dir, help="Where logs and reports go."),
    quiet: bool = typer.Option(STORAGE.quiet, "--quiet", "-q", help="No progress display."),
    measure_references: bool = typer.Option(
        STORAGE.measure_references, "--measure-references/--no-measure-references",
        help="At the end, measure FasterViT-0..3 the study lacks as its trials were measured (trained, with "
             "--proxy train), for the report; once, cached in the study."),
    throughput: str = typer.Option(MEASURED, help="measured (profiler) | predicted:NAME (a throughput "
                                   "predictor: `nas predictor list`; no GPU needed). Objective and constraints "
                                   "become predicted_throughput."),
    latency: str = typer.Option(MEASURED, help="measured | predicted:NAME (as --throughput)."),
) -> None:
    """Search the space for the Pareto front of the chosen objectives; prints the front and a report path.

    Exit codes: 0 done; 1 stopped early (20 failed trials in a row, a worker died); 2 bad input or
    storage fault (one line saying what to do); 130 interrupted (what was kept and how to resume).
    """
    from nas.estimators import canonical_proxy, estimator_type  # torch, optuna: imported when the command runs
    from nas.search import Interrupted

    with user_errors():
        objectives, constraints, predictor = use_predicted(objective.split(","), constraint, throughput=throughput,
                                                           latency=latency)
        settings = SearchSettings(
            objectives=objectives, constraints=constraints, space=space, sampler=sampler, population=population,
            trials=trials, timeout=timeout, seed=seed, enqueue_presets=enqueue_presets, confirm=confirm,
            proxy=canonical_proxy(proxy), data=data, data_dir=data_dir, proxy_resolution=proxy_resolution,
            proxy_batch_size=proxy_batch_size, train_epochs=train_epochs, train_subset=train_subset,
            train_val_subset=train_val_subset, train_batch_size=train_batch_size, train_recipe=train_recipe,
            fidelity=fidelity,
            min_budget=min_budget, eta=eta, batch_size=batch_size, dtype=dtype, predictor=predictor,
            pad_channels=pad_channels, gelu_epilogue=gelu_epilogue,
            storage=storage, study=study, results_dir=results_dir, quiet=quiet,
            measure_references=measure_references, device=device, workers=workers,
            backend=backend, ray_address=ray_address, gpus_per_trial=gpus_per_trial)
        refuse_inapplicable(ctx, settings, throughput=throughput, latency=latency)
        refuse_default_data_for_a_supernet(ctx, settings)
        if confirm and not estimator_type(proxy).confirmable:
            raise ValueError(f"--confirm {confirm} trains front points: it needs --proxy train or supernet:DIR, "
                             f"not {proxy!r}")
        if confirm and backend == "ray":
            raise ValueError("--confirm runs on this machine after the search: with --backend ray run "
                             "`nas confirm --study S --storage URL --top K` there instead")
        # with Ray the trials run on the cluster's devices (the head may have no GPU): run_ray_search decides
        if backend != "ray":
            settings = settings.resolved()
    if predictor and not quiet:
        from evaluators.predictor import load_predictor

        with user_errors():
            p = load_predictor(predictor, search_dirs=[f"{results_dir}/predictors"])
        console.print(f"throughput/latency are predicted, not measured: {escape(p.describe())}", highlight=False)
    measured = any(n in ("throughput", "latency", "memory") for n in objectives)
    if backend != "ray" and settings.device == "cpu" and not quiet and measured:
        console.print("[yellow]no CUDA GPU in use: running on the CPU. Throughput/latency are CPU measurements "
                      f"(batch {settings.batch_size}, eager), not the paper's GPU protocol.[/]")
    try:
        with user_errors():
            result = _run(settings)
    except Interrupted as e:
        err_console.print(f"[bold yellow]{escape(str(e))}[/]", highlight=False)
        raise typer.Exit(130) from None
    _print_result(result, quiet, settings.storage)
    if confirm and result.n_complete:
        _confirm(settings, confirm)
    if not result.ok:
        raise typer.Exit(1)


def _estimator_is(proxy: str, *kinds: str) -> bool:
    """Whether ``--proxy`` names an estimator of one of the classes ``kinds`` of ``evaluators.estimators``."""
    import evaluators.estimators  # torch: imported when the command runs, not for `nas --help`
    from nas.estimators import estimator_type

    return issubclass(estimator_type(proxy), tuple(getattr(evaluators.estimators, k) for k in kinds))


def _needs(settings: SearchSettings) -> set[str]:
    """What the objectives and constraints measure (``nas.objectives.Objective.needs``)."""
    return {o.needs for o in parse_objectives(settings.objectives)} | \
        {parse_constraint(c).objective.needs for c in settings.constraints}


# options that only mean something with another choice: (options, applies(settings, needs), the choice, this run's)
_ONLY_WITH: tuple[tuple[tuple[str, ...], Callable[[SearchSettings, set[str]], bool], str,
                        Callable[[SearchSettings], str]], ...] = (
    (("min_budget", "eta"), lambda s, n: s.fidelity == "sh", "with --fidelity sh",
     lambda s: f"--fidelity {s.fidelity}"),
    (("gpus_per_trial", "ray_address"), lambda s, n: s.backend == "ray", "with --backend ray",
     lambda s: f"--backend {s.backend}"),
    (("proxy", "proxy_resolution"), lambda s, n: "proxy" in n, "when accuracy is an objective or constraint",
     lambda s: f"--objective {','.join(s.objectives)}"),
    (("train_epochs", "train_subset", "train_batch_size", "train_recipe"),  # --fidelity sh: the estimator refuses
     lambda s, n: "proxy" in n and (s.fidelity == "sh" or _estimator_is(s.proxy, "TrainingEstimator")),
     "to an accuracy estimator that trains (--proxy train)", lambda s: f"--proxy {s.proxy}"),
    (("train_val_subset",),
     lambda s, n: "proxy" in n and (s.fidelity == "sh"
                                    or _estimator_is(s.proxy, "TrainingEstimator", "SupernetEstimator")),
     "to an accuracy estimator that scores on held-out images (--proxy train or supernet:DIR)",
     lambda s: f"--proxy {s.proxy}"),
    (("proxy_batch_size",), lambda s, n: "proxy" in n and _estimator_is(s.proxy, "ZeroCostEstimator"),
     "to a zero-cost proxy (`nas proxies`)", lambda s: f"--proxy {s.proxy}"),
    (("batch_size", "dtype"), lambda s, n: "profile" in n,
     "when a measured throughput, latency or memory is an objective or constraint",
     lambda s: f"--objective {','.join(s.objectives)}"),
)


def refuse_default_data_for_a_supernet(ctx: typer.Context, settings: SearchSettings) -> None:
    """With ``--proxy supernet:DIR`` the default ``--data`` means the supernet's own data; typing the default's
    name for a supernet trained on other data cannot be told apart from not typing it: refused, not ignored."""
    if not typed(ctx, "data") or settings.data != ESTIMATOR.data or not settings.proxy.startswith("supernet:"):
        return
    from evaluators.supernet_folder import SupernetFolder

    try:
        trained_on = SupernetFolder(settings.proxy.split(":", 1)[1]).read().get("data")
    except (OSError, ValueError):
        return  # not a supernet folder: the estimator says so
    if trained_on != settings.data:
        raise ValueError(f"--data {settings.data} with --proxy {settings.proxy}: that supernet was trained on "
                         f"{trained_on!r}, and with a supernet the default --data means its own data; scoring it "
                         f"on {settings.data!r} is not supported: drop --data")


def refuse_inapplicable(ctx: typer.Context, settings: SearchSettings, *, throughput: str, latency: str) -> None:
    """An option typed where it cannot apply is refused (ValueError), not silently ignored."""
    needs = _needs(settings)
    for names, applies, when, this_run in _ONLY_WITH:
        for name in names:
            if typed(ctx, name) and not applies(settings, needs):
                raise ValueError(f"--{name.replace('_', '-')} {ctx.params[name]} only applies {when} "
                                 f"(this run: {this_run(settings)}); drop it")
    measured = set(settings.objectives) | {parse_constraint(c).name for c in settings.constraints}
    for quantity, spec in (("throughput", throughput), ("latency", latency)):
        if spec != MEASURED and PREDICTED[quantity] not in measured:
            raise ValueError(f"--{quantity} {spec} only applies when {quantity} is an objective or constraint "
                             f"(this run: --objective {','.join(settings.objectives)}); drop it")


def _confirm(settings: SearchSettings, top: int) -> None:
    """``--confirm K`` after the search: re-train the K most accurate front points (nas.confirm)."""
    from nas.parallel import parallel_storage
    from nas.pareto import load_study

    storage = parallel_storage(settings.storage, workers=settings.workers) if settings.workers > 1 else settings.storage
    with user_errors():
        run_confirm(load_study(settings.study, storage), top=top, device=settings.device)


def _run(settings: SearchSettings) -> Any:
    """The search on the backend the settings choose: Ray Tune, worker processes, or this process."""
    if settings.backend == "ray":
        from nas.ray_backend import run_ray_search

        return run_ray_search(settings)
    if settings.workers > 1:
        from nas.parallel import run_parallel

        return run_parallel(settings)
    from nas.search import run_search

    return run_search(settings)




def _print_result(result: Any, quiet: bool, storage: Optional[str] = None) -> None:
    if result.stopped_reason:
        console.print(f"[red]{escape(result.stopped_reason)}[/]")
    extra = "".join(f", {n} {label}" for n, label in ((result.n_running, "running"), (result.n_waiting, "waiting"))
                    if n)
    console.print(f"study [bold]{result.study_name}[/] on {result.storage}: {result.n_trials} trial(s): "
                  f"{result.n_complete} complete, {result.n_failed} failed, {result.n_pruned} pruned{extra}",
                  highlight=False)
    if result.nothing_completed or (result.n_complete == 0 and result.failures):
        what = "no trial completed" + (" in this run" if result.n_complete else "")
        console.print(f"[red]{what}; the last failures:[/]" if result.failures else
                      f"[red]{what}: none ran (raise --timeout or --trials)[/]", highlight=False)
        for f in result.failures:
            console.print(f"  #{f['trial']}: {escape(str(f['error']))}", highlight=False)
    print_pareto_rows(result.pareto, result.hypervolume, result.objectives,
                      result.labels or None)  # columns say what they measure
    if result.report:
        console.print(f"report: {result.report}", highlight=False)
    if result.log_file:
        console.print(f"log: {result.log_file}", highlight=False)


def worker(
    settings_json: str = typer.Argument(..., help="JSON of SearchSettings (written by the parent)."),
    trials: int = typer.Option(..., help="Trials this worker runs."),
    gpu: Optional[str] = typer.Option(None, help="CUDA_VISIBLE_DEVICES for this worker."),
) -> None:
    """Internal: one parallel worker of `nas search --workers N`."""
    from nas.parallel import worker_main

    with user_errors():  # a storage fault in a worker: one line in its log, which the parent shows
        worker_main(settings_json, trials=trials, gpu=gpu)
