"""``nas dashboard``: optuna-dashboard on a storage (localhost)."""

from __future__ import annotations

from typing import Optional

import typer

from nas.storage import DEFAULT_STORAGE, describe_storage, get_storage

from ._common import console, fail


def dashboard(
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    port: int = typer.Option(8080, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (default: localhost only)."),
) -> None:
    """Serve optuna-dashboard for the studies in STORAGE until interrupted."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        fail("optuna-dashboard is not installed: pip install optuna-dashboard")
    url = storage or DEFAULT_STORAGE
    if url.startswith("sqlite:///") and not __import__("os").path.exists(url[len("sqlite:///"):]):
        fail(f"no study database at {url[len('sqlite:///'):]}: run `nas search` first or pass --storage")
    _label_studies(url)
    console.print(f"optuna-dashboard for {describe_storage(url)} at http://{host}:{port}/ (Ctrl-C to stop)",
                  highlight=False)
    run_server(get_storage(url), host=host, port=port)


def _label_studies(url: str) -> None:
    """Studies made before metric labels existed get them (so Best Trials and plots name each value)."""
    import optuna

    from nas.migrate import label_study
    storage = get_storage(url)
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        labels = label_study(optuna.load_study(study_name=s.study_name, storage=storage))
        if labels:
            console.print(f"study {s.study_name}: metric names set to {'; '.join(labels)}", highlight=False)
