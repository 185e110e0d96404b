"""``nas dashboard``: optuna-dashboard on a storage (localhost)."""

from __future__ import annotations

from typing import Any, Optional

import typer

from nas.storage import DEFAULT_STORAGE, StorageError, describe_storage, get_storage, storage_errors

from ._common import console, fail, user_errors


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
    with user_errors():  # a mistyped or unreadable storage: one line, as in `nas search` and `nas pareto`
        opened = get_storage(url)
        with storage_errors(url):
            _label_studies(url, opened)
    console.print(f"optuna-dashboard for {describe_storage(url)} at http://{host}:{port}/ (Ctrl-C to stop)",
                  highlight=False)
    run_server(opened, host=host, port=port)


def _label_studies(url: str, storage: Any = None) -> None:
    """Studies made before metric labels existed get them (so Best Trials and plots name each value); a
    read-only storage is shown as it is."""
    import optuna

    from nas.migrate import label_study

    storage = storage if storage is not None else get_storage(url)
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        try:
            with storage_errors(url):
                labels = label_study(optuna.load_study(study_name=s.study_name, storage=storage))
        except StorageError as e:
            console.print(f"study {s.study_name}: metric names not set ({e})", highlight=False)
            continue
        if labels:
            console.print(f"study {s.study_name}: metric names set to {'; '.join(labels)}", highlight=False)
