"""``nas confirm``: re-train a study's front points with another seed (nas.confirm)."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import console, print_json, user_errors


def confirm(
    study: str = typer.Option("default", help="Study name."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    top: int = typer.Option(3, help="Confirm the K most accurate front points (one per architecture)."),
    seed: Optional[int] = typer.Option(None, help="Re-training seed (default: a seed the trial was not trained with)."),
    device: Optional[str] = typer.Option(None, help="cuda | cpu (default: the study's device)."),
    as_json: bool = typer.Option(False, "--json", help="Print the re-trains as JSON."),
) -> None:
    """Confirm front points by training: a train-proxy study re-trains them with another seed, a supernet study
    trains them stand-alone (its recipe, data and budget) with two seeds; every value is recorded."""
    from nas.pareto import load_study

    with user_errors():
        rows = run_confirm(load_study(study, storage), top=top, seed=seed, device=device, quiet=as_json)
    if as_json:
        print_json(rows)


def run_confirm(study, *, top: int, seed: Optional[int] = None, device: Optional[str] = None, quiet: bool = False):
    """Confirm ``top`` front points of ``study``, printing one line each and the seed noise."""
    from rich.markup import escape

    from nas.confirm import confirm_front, seed_noise

    say = (lambda line: None) if quiet else (lambda line: console.print(escape(line), highlight=False))
    rows = confirm_front(study, top=top, seed=seed, device=device, out=say)
    noise = seed_noise(study)
    if noise is not None:
        say(f"seed noise (std of one training's top-1, from {sum(1 for _ in rows)} new re-train(s) and earlier ones): "
            f"{noise:.2f} points")
    return rows
