"""``nas predictor``: fit a throughput predictor on a profiled dataset, list and show predictors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import console, print_json, user_errors

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
                      f"{'n/a' if err['spearman'] is None else err['spearman']}, median error {err['median_rel_err']:.1%}", highlight=False)
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
