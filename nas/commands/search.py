"""``nas search``: a multi-objective study (local Optuna, parallel workers, or Ray Tune)."""

from __future__ import annotations

from typing import List, Optional

import typer

from rich.markup import escape

from ._common import console, err_console, user_errors


def search(
    objective: str = typer.Option("accuracy,throughput", "--objective", "-o",
                                  help="2-3 of: accuracy, throughput, latency, params, flops, memory."),
    proxy: str = typer.Option("az_progressivity", help="Accuracy proxy (see `nas proxies`), or 'train'. Default: the best single zero-cost proxy on the fmnist-odd ground truth (tau 0.45; README)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Trials to add (default: 40 on a GPU, 8 on CPU)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    sampler: str = typer.Option("nsga2", help="nsga2 | nsga3 | tpe | gp | random."),
    population: Optional[int] = typer.Option(None, help="nsga2/nsga3 population size (default: trials / 5, "
                                             "8..50; with --timeout alone set it to ~1/3 of the trials that "
                                             "fit, or NSGA-II stays in its random first generation)."),
    constraint: List[str] = typer.Option([], "--constraint", "-c", help="e.g. 'params<=60e6' (repeatable)."),
    space: str = typer.Option("default", help="Built-in space name or a YAML file."),
    data: str = typer.Option("fmnist-odd", help="fmnist-odd (default: the ground-truth task) | fmnist-pairs | fashion-mnist | cifar10 | cifar100 | imagefolder:PATH."),
    data_dir: Optional[str] = typer.Option(None, help="Folder holding the dataset files."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db; "
                                          "journal:results/nas.journal with --workers)."),
    study: str = typer.Option("default", help="Study name; the same name resumes and adds trials."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: cuda if present)."),
    seed: int = typer.Option(0, help="Seed of the sampler, data batch and proxies."),
    enqueue_presets: Optional[bool] = typer.Option(None, "--enqueue-presets/--no-enqueue-presets",
                                                   help="Evaluate FasterViT-0..3 first as reference points "
                                                        "(default: on with a GPU)."),
    proxy_resolution: Optional[int] = typer.Option(None, help="Resolution the proxy scores at (default 128 GPU / 96 CPU)."),
    batch_size: Optional[int] = typer.Option(None, help="Profiler batch size (default 128 GPU / 2 CPU)."),
    train_epochs: float = typer.Option(1.0, help="--proxy train: the full training budget in epochs."),
    train_subset: Optional[int] = typer.Option(10000, help="--proxy train: training images (a fixed subset)."),
    train_val_subset: Optional[int] = typer.Option(None, help="--proxy train: validation images (default all)."),
    train_batch_size: int = typer.Option(256, help="--proxy train: batch size (an epoch: subset // batch steps)."),
    fidelity: str = typer.Option("full", help="full (every trial trains the whole budget) | sh (multi-objective "
                                 "successive halving on the train proxy: rungs at B, eta*B, ... epochs)."),
    min_budget: Optional[float] = typer.Option(None, help="--fidelity sh: epochs of the first rung "
                                               "(default train-epochs / eta^2)."),
    eta: int = typer.Option(3, help="--fidelity sh: the top 1/eta of each rung go on (integer >= 2)."),
    confirm: int = typer.Option(0, help="After the search, re-train the K most accurate front points with another "
                                "seed (--proxy train; see `nas confirm`)."),
    workers: int = typer.Option(1, help="Parallel worker processes sharing the study (one per GPU)."),
    backend: str = typer.Option("optuna", help="optuna (this box) | ray (Ray Tune)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (auto | HOST:PORT)."),
    gpus_per_trial: float = typer.Option(1.0, help="GPUs per Ray trial (fractions allowed)."),
    results_dir: str = typer.Option("results", help="Where logs and reports go."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    throughput: str = typer.Option("measured", help="measured (profiler) | predicted:NAME (a throughput "
                                   "predictor: `nas predictor list`; no GPU needed). Objective and constraints "
                                   "become predicted_throughput."),
    latency: str = typer.Option("measured", help="measured | predicted:NAME (as --throughput)."),
) -> None:
    """Search the space for the Pareto front of the chosen objectives; prints the front and a report path.

    Exit codes: 0 done; 1 stopped early (20 failed trials in a row, a worker died); 2 bad input or
    storage fault (one line saying what to do); 130 interrupted (what was kept and how to resume).
    """
    from nas.search import Interrupted, SearchSettings
    from nas.settings import check_int

    from nas.objectives import use_predicted

    with user_errors():
        objectives, constraints, predictor = use_predicted(objective.split(","), constraint, throughput=throughput,
                                                           latency=latency)
    settings = SearchSettings(
        objectives=objectives, predictor=predictor, proxy=proxy, trials=trials, timeout=timeout, sampler=sampler,
        population=population,
        constraints=constraints, space=space, data=data, data_dir=data_dir, storage=storage, study=study,
        device=device, seed=seed, enqueue_presets=enqueue_presets, proxy_resolution=proxy_resolution,
        batch_size=batch_size, results_dir=results_dir, quiet=quiet, train_epochs=train_epochs,
        train_subset=train_subset, train_val_subset=train_val_subset,
        train_batch_size=train_batch_size, fidelity=fidelity, min_budget=min_budget, eta=eta)
    with user_errors():
        if backend not in BACKENDS:
            raise ValueError(f"--backend {backend!r} must be one of {', '.join(repr(b) for b in BACKENDS)}")
        check_int("--workers", workers, minimum=1)
        check_int("--confirm", confirm, minimum=0)
        if confirm and proxy != "train":
            raise ValueError(f"--confirm {confirm} re-trains front points: it needs --proxy train, not {proxy!r}")
        if confirm and backend == "ray":
            raise ValueError("--confirm runs on this machine after the search: with --backend ray run "
                             "`nas confirm --study S --storage URL --top K` there instead")
        # with Ray the trials run on the cluster's devices (the head may have no GPU): run_ray_search decides
        resolved = settings.resolved() if backend != "ray" else settings.validated()
    if predictor and not quiet:
        from evaluators.predictor import load_predictor

        p = load_predictor(predictor, search_dirs=[f"{results_dir}/predictors"])
        console.print(f"throughput/latency are predicted, not measured: {escape(p.describe())}", highlight=False)
    measured = any(n in ("throughput", "latency", "memory") for n in objectives)
    if backend != "ray" and resolved.device == "cpu" and not quiet and measured:
        console.print("[yellow]no CUDA GPU in use: running on the CPU. Throughput/latency are CPU measurements "
                      f"(batch {resolved.batch_size}, eager), not the paper's GPU protocol.[/]")
    try:
        with user_errors():
            result = _run(settings, backend, workers, ray_address, gpus_per_trial)
    except Interrupted as e:
        err_console.print(f"[bold yellow]{escape(str(e))}[/]", highlight=False)
        raise typer.Exit(130) from None
    _print_result(result, quiet, settings.storage)
    if confirm and result.n_complete:
        from nas.commands.confirm import run_confirm
        from nas.pareto import load_study

        storage = resolved.storage
        if workers > 1:
            from nas.parallel import parallel_storage

            storage = parallel_storage(storage, workers=workers)
        with user_errors():
            run_confirm(load_study(resolved.study, storage), top=confirm, device=resolved.device)
    if not result.ok:
        raise typer.Exit(1)


BACKENDS = ("optuna", "ray")


def _run(settings, backend: str, workers: int, ray_address: Optional[str], gpus_per_trial: float):
    if backend == "ray":
        from nas.ray_backend import run_ray_search

        return run_ray_search(settings, address=ray_address, workers=workers, gpus_per_trial=gpus_per_trial)
    if workers > 1:
        from nas.parallel import run_parallel

        return run_parallel(settings, workers=workers)
    from nas.search import run_search

    return run_search(settings)


def _print_result(result, quiet: bool, storage: Optional[str] = None) -> None:
    from nas.commands.pareto import print_pareto_rows

    if result.stopped_reason:
        console.print(f"[red]{escape(result.stopped_reason)}[/]")
    extra = "".join(f", {n} {label}" for n, label in ((result.n_running, "running"), (result.n_waiting, "waiting"))
                    if n)
    console.print(f"study [bold]{result.study_name}[/] on {result.storage}: {result.n_trials} trial(s): "
                  f"{result.n_complete} complete, {result.n_failed} failed, {result.n_pruned} pruned{extra}",
                  highlight=False)
    if result.n_complete == 0 and result.failures:
        console.print("no trial completed; the last failures:", highlight=False)
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
