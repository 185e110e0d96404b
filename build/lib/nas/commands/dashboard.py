"""``nas dashboard``: optuna-dashboard on a storage (localhost)."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import console, fail


def dashboard(
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    port: int = typer.Option(8080, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (default: localhost only)."),
) -> None:
    """Serve optuna-dashboard for the studies in STORAGE until interrupted."""
    from nas.storage import DEFAULT_STORAGE, describe_storage, get_storage

    try:
        from optuna_dashboard import run_server
    except ImportError:
        fail("optuna-dashboard is not installed: pip install optuna-dashboard")
    url = storage or DEFAULT_STORAGE
    if url.startswith("sqlite:///") and not __import__("os").path.exists(url[len("sqlite:///"):]):
        fail(f"no study database at {url[len('sqlite:///'):]}: run `nas search` first or pass --storage")
    console.print(f"optuna-dashboard for {describe_storage(url)} at http://{host}:{port}/ (Ctrl-C to stop)",
                  highlight=False)
    run_server(get_storage(url), host=host, port=port)
