"""Small helpers shared by the subcommands: clean errors, config resolution, JSON output."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit non-zero (no traceback)."""
    from rich.markup import escape  # messages are text: "nas-fastervit[ray]" must not be read as a style tag

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad config, missing file or dataset) into one message."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except OSError as e:  # read-only folder, full disk...: the file and the reason, no traceback
        from nas.storage import _os_message

        fail(_os_message(e, str(e.filename) if e.filename else "a file"))


def load_config(spec: str) -> Any:
    """A FasterViTConfig from a preset name or a config JSON path (errors as messages)."""
    from search_spaces import resolve_config

    with user_errors():
        return resolve_config(spec)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
