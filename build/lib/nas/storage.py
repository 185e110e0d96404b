"""Where studies live: one function that accepts None, a URL/path, or an Optuna storage object.

- ``sqlite:///results/nas.db`` (default for one process): an RDB storage.
- ``journal:PATH`` or a path ending in ``.journal``/``.log``: Optuna's JournalStorage over a file —
  the default for parallel workers, since SQLite is unsafe with concurrent writers (Optuna FAQ).
- any other SQLAlchemy URL (``postgresql://…``): an RDB storage with Optuna's heartbeat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

__all__ = ["DEFAULT_STORAGE", "DEFAULT_JOURNAL", "get_storage", "storage_kind", "describe_storage"]

DEFAULT_STORAGE = "sqlite:///results/nas.db"
DEFAULT_JOURNAL = "journal:results/nas.journal"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30


def storage_kind(url: str) -> str:
    """'sqlite', 'journal' or 'rdb'."""
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    if "://" in url:
        return "rdb"
    raise ValueError(f"storage {url!r} is not a storage URL: use sqlite:///PATH.db, journal:PATH, or an RDB URL "
                     f"such as postgresql://user@host/db")


def _journal_path(url: str) -> Path:
    return Path(url[len("journal:"):] if url.startswith("journal:") else url)


def get_storage(storage: Union[None, str, Any] = None, *, heartbeat: bool = False) -> Any:
    """An Optuna storage from None (the default SQLite file), a URL, or a storage object (returned as is).

    Folders for file-backed storages are created. ``heartbeat=True`` turns on Optuna's heartbeat
    for RDB storages (stale RUNNING trials of killed workers become FAIL); journal storages get the
    equivalent from ``nas.parallel``.
    """
    import optuna

    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return storage
    kind = storage_kind(storage)
    if kind == "journal":
        path = _journal_path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        db = storage[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S)
    return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}} if kind == "sqlite" else {},
                                      **kwargs)


def describe_storage(storage: Union[None, str, Any]) -> str:
    """A one-line human description (printed so the user knows which backend is in use)."""
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return type(storage).__name__
    kind = storage_kind(storage)
    if kind == "journal":
        return f"JournalStorage file {os.path.abspath(_journal_path(storage))} (safe for parallel workers)"
    if kind == "sqlite":
        return f"SQLite {storage} (one writer at a time; use journal:PATH or PostgreSQL for parallel workers)"
    return f"RDB {storage.split('@')[-1]}"
