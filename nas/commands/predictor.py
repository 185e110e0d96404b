"""``nas predictor``: fit a throughput predictor on a profiled dataset, adapt one to another GPU, list and show them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console, err_console, fail, print_json, user_errors

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
DEFAULT_DIR = Path("results") / "predictors"  # where `fit` writes and `nas search --throughput predicted:NAME` looks


@app.command("fit")
def fit_cmd(
    dataset: str = typer.Argument(..., metavar="FILE", help="JSON-lines dataset of `nas profile --sample`."),
    name: Optional[str] = typer.Option(None, help="Predictor name (default: the file's stem)."),
    out: Optional[str] = typer.Option(None, help=f"Predictor JSON to write (default {DEFAULT_DIR}/NAME.json)."),
    mode: Optional[str] = typer.Option(None, help="Fit on records of this profiler mode only "
                                                  "(needed when the file holds several)."),
    held_out: float = typer.Option(0.2, help="Share of configs kept apart to measure the error."),
    seed: int = typer.Option(0, help="Seed of the split and of the trees."),
    as_json: bool = typer.Option(False, "--json", help="Print the predictor's facts as JSON."),
) -> None:
    """Fit a predictor of images/s and batch-1 latency from config features; prints its held-out error.

    Use it in a search with `nas search --throughput predicted:NAME` (no GPU needed).
    """
    from evaluators.predictor import fit, read_records

    with user_errors():
        records = read_records(dataset)
        name = name or Path(dataset).stem
        predictor = fit(records, name=name, mode=mode, held_out=held_out, seed=seed)
        path = predictor.save(out or DEFAULT_DIR / f"{name}.json")
    if as_json:
        print_json(dict(path=str(path), **predictor.meta))
        return
    console.print(predictor.describe(), highlight=False)
    for target, err in (predictor.meta.get("held_out") or {}).items():
        console.print(f"  {target}: held-out n={err['n']}, {err['within_10pct']:.0%} within ±10% "
                      f"({err['within_5pct']:.0%} within ±5%), Spearman "
                      f"{'n/a' if err['spearman'] is None else err['spearman']}, "
                      f"median error {err['median_rel_err']:.1%}", highlight=False)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); search with "
                  f"`nas search --throughput predicted:{name}`", highlight=False)


@app.command("list")
def list_cmd(
    folder: str = typer.Option(str(DEFAULT_DIR), help="Folder of fitted predictors (NAME.json)."),
) -> None:
    """Registered (shipped) predictors and those fitted into FOLDER."""
    from evaluators.predictor import PredictorError, known_predictors, load_predictor

    for name in known_predictors([folder]):
        try:
            console.print(load_predictor(name, search_dirs=[folder]).describe(), highlight=False)
        except PredictorError as e:
            console.print(f"{name}: unavailable ({e})", highlight=False)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Predictor name or JSON file."),
    folder: str = typer.Option(str(DEFAULT_DIR), help="Folder of fitted predictors (NAME.json)."),
) -> None:
    """A predictor's facts (GPU, driver, torch, protocol, data, held-out error) as JSON."""
    from evaluators.predictor import load_predictor

    with user_errors():
        p = load_predictor(name, search_dirs=[folder])
    print_json(dict(name=p.name, targets=p.targets, **p.meta))


@app.command("adapt")
def adapt_cmd(
    base: str = typer.Option(..., help="Predictor to adapt: a registered name (h200), NAME.json in --folder, "
                                       "or a file."),
    samples: int = typer.Option(..., "--samples", "-n", help="Configs to profile on this GPU (at least 3; 10 is a "
                                                            "good default)."),
    out: Optional[str] = typer.Option(None, "--out", help="Name of the adapted predictor, written to FOLDER/NAME.json "
                                                         "[BASE-to-CARD-nN]."),
    correction: str = typer.Option("auto", help="scale (N >= 3) | roofline (N >= 8) | linear (N >= 30) | auto: the "
                                                "richest one N allows."),
    records: Optional[str] = typer.Option(None, help="Configs already measured on the new card (a dataset file of "
                                                     "`nas profile --sample`): N of them are chosen, nothing is "
                                                     "profiled, no GPU needed."),
    pool: int = typer.Option(1000, help="Candidates sampled from --space to choose the N configs from."),
    space: str = typer.Option("default", help="Search space of the candidates."),
    seed: int = typer.Option(0, help="Seed of the candidates and of the choice."),
    device: str = typer.Option("cuda", help="cuda | cuda:N: the GPU to adapt to."),
    folder: str = typer.Option(str(DEFAULT_DIR), help="Folder of fitted predictors (NAME.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the adapted predictor's facts as JSON."),
) -> None:
    """Adapt a predictor of one GPU to this GPU from N profiled configs (few-shot transfer).

    The N configs are spread over the base predictor's range; a correction with few coefficients
    (a factor, then compute and memory slopes as N grows) is fitted on their log error and folded
    into the base. Prints its leave-one-out error; provenance (base, its GPU, N, this GPU, date)
    is in the file's meta. Measured records go to FOLDER/NAME-samples.jsonl (resumable).
    """
    from evaluators.predictor import load_predictor, read_records
    from evaluators.predictor_transfer import adapt, adapt_on_gpu, choose_correction, default_name, design, of_protocol

    with user_errors():
        choose_correction(samples, correction)
        predictor = load_predictor(base, search_dirs=[folder])
        if records is not None:
            measured, aside = of_protocol(predictor, read_records(records))
            for label, n in aside.items():
                err_console.print(f"set aside {n} record(s) of {records} with {label}: not {predictor.name!r}'s "
                                  "protocol", highlight=False)
            picked = [measured[i] for i in design(predictor, [r["config"] for r in measured], samples, seed=seed)]
            gpu = str(picked[0].get("gpu_name"))
            adapted = adapt(predictor, picked, name=out or default_name(predictor.name, gpu, samples),
                            correction=correction)
    if records is None:
        from evaluators.profiler import NoGPUError, resolve_device

        try:
            with user_errors():
                dev = resolve_device(device)
        except NoGPUError:
            dev = None
        if dev is None or dev.type != "cuda":
            fail(f"no CUDA GPU to adapt to ({device!r}): `nas predictor adapt` profiles {samples} configs on the GPU "
                 f"it adapts {predictor.name!r} to; run it there, or pass --records FILE of configs measured there",
                 code=3)
        import torch

        gpu = torch.cuda.get_device_name(dev)
        name = out or default_name(predictor.name, gpu, samples)
        path = Path(folder) / f"{name}-samples.jsonl"
        m = predictor.meta
        err_console.print(f"adapting {predictor.name} ({predictor.gpu}) to {gpu}: profiling {samples} configs chosen "
                          f"from {pool} of space {space!r} ({m.get('mode')}, {m.get('dtype')}, batch "
                          f"{m.get('batch_size')}) into {path}", highlight=False)

        def line(i: int, total: int, rec: dict) -> None:
            value = f"{rec['images_per_s']:,.1f} img/s" if rec.get("images_per_s") else f"error: {rec.get('error')}"
            err_console.print(f"  {rec['resolution'][0]} px {rec['model'][:60]}: {value}", highlight=False)

        with user_errors():
            adapted = adapt_on_gpu(predictor, samples=samples, records_path=path, name=name, correction=correction,
                                   pool=pool, space=space, seed=seed, device=dev, gpu_name=gpu, progress=line)
    with user_errors():
        path = adapted.save(Path(folder) / f"{adapted.name}.json")
    if as_json:
        print_json(dict(path=str(path), **adapted.meta))
        return
    a = adapted.meta["adapted"]
    console.print(adapted.describe(), highlight=False)
    for target, err in adapted.meta["cross_validated"].items():
        console.print(f"  {target}: leave-one-out over the {err['n']} samples: {err['within_10pct']:.0%} within ±10% "
                      f"({err['within_5pct']:.0%} within ±5%), median error {err['median_rel_err']:.1%}, worst "
                      f"{err['max_rel_err']:.1%}", highlight=False)
    console.print(f"  correction {a['correction']}: {a['coefficients']['images_per_s']}", highlight=False)
    console.print(f"wrote {path}; search with `nas search --throughput predicted:{adapted.name}`", highlight=False)
