"""Where studies live: one function that accepts None, a URL/path, or an Optuna storage object.

- ``sqlite:///results/nas.db`` (default for one process): an RDB storage.
- ``journal:PATH`` or a path ending in ``.journal``/``.log``: Optuna's JournalStorage over a file —
  the default for parallel workers, since SQLite is unsafe with concurrent writers (Optuna FAQ).
- any other SQLAlchemy URL (``postgresql://…``): an RDB storage with Optuna's heartbeat.

Faults become one ``StorageError`` line naming the file/URL and what to do: an unknown URL scheme,
``sqlite:/x.db`` (two slashes missing), a file that is not an SQLite database, a missing database
when reading (``nas pareto`` on a mistyped path creates nothing), a read-only or full location.

Journal files: Optuna writes one JSON record per line (``JournalFileBackend.append_logs``: one
write + fsync under a lock). A write cut short (killed process, full disk) leaves a *torn tail*
without a newline that Optuna skips when reading — and the next append glues a new record onto
it, after which every read of the file fails. ``SafeJournalFileBackend`` therefore (1) on open
keeps every complete record and moves a torn tail aside into ``PATH.torn-<time>`` with a
message; (2) before each append checks that the file ends with a newline (repairing under the
lock if not); (3) truncates a failed write back, so a full disk never leaves a torn record. A
damaged line in the middle (complete, not JSON) is reported with the file and line number.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["DEFAULT_STORAGE", "DEFAULT_JOURNAL", "StorageError", "get_storage", "storage_kind", "describe_storage",
           "journal_path", "check_journal", "writable_dir", "storage_errors", "SafeJournalFileBackend", "os_message"]

log = logging.getLogger("nas.storage")

DEFAULT_STORAGE = "sqlite:///results/nas.db"
DEFAULT_JOURNAL = "journal:results/nas.journal"
GRACE_PERIOD_S = 30
HEARTBEAT_INTERVAL_S = 5.0  # RDB heartbeats and nas.heartbeat's journal beats: one cadence for every storage


class StorageError(ValueError):
    """The storage cannot be opened or written; the message names it and says what to do."""


def storage_kind(url: str) -> str:
    """'sqlite', 'journal' or 'rdb'."""
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage {url!r} is empty: use sqlite:///PATH.db, journal:PATH, or an RDB URL")
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    if "://" in url:
        return "rdb"
    raise StorageError(f"storage {url!r} is not a storage URL: use sqlite:///PATH.db, journal:PATH, or an RDB URL "
                       f"such as postgresql://user@host/db")


def journal_path(url: str) -> Path:
    return Path(url[len("journal:"):] if url.startswith("journal:") else url)


def _sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise StorageError(f"storage {url!r}: an SQLite URL has three slashes before a relative path "
                           f"(sqlite:///results/nas.db) and four before an absolute one (sqlite:////tmp/nas.db)")
    return url[len("sqlite:///"):]


def writable_dir(path: Union[str, Path], what: str) -> Path:
    """Create ``path`` (a folder) and check it is writable; StorageError naming ``what`` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{what} {path}: cannot create the folder ({e.strerror}); choose a writable location") \
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path}: the folder is not writable (read-only or permissions); "
                           f"choose a writable location")
    return path


# ------------------------------------------------------------------------------------------ journal files
def _torn_tail(data: bytes, path: Path) -> int:
    """Length of the good prefix of a journal: every complete JSON line. A bad complete line that is
    not the last one is an error (file and line number)."""
    good, line_no, pos = 0, 0, 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            return good  # a last line without newline: torn
        line_no += 1
        try:
            json.loads(data[pos:end])
        except ValueError as e:
            if end + 1 >= n:
                return good  # the last line is garbage: torn
            raise StorageError(
                f"journal {path}: line {line_no} (byte {pos}) is not a valid record ({e}); the file was damaged "
                f"in the middle, so Optuna cannot read the records after it. Keep a copy, then keep the "
                f"{line_no - 1} good records before it: head -n {line_no - 1} {path} > {path}.fixed && "
                f"mv {path}.fixed {path}") from None
        good = pos = end + 1
    return good


def _move_tail_aside(path: Path, good: int, size: int) -> Path:
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    with open(path, "rb") as f:
        f.seek(good)
        aside.write_bytes(f.read())
    os.truncate(path, good)
    msg = (f"journal {path}: its last record was cut short ({size - good} bytes without an end, an interrupted "
           f"write or a full disk); every complete record is kept and the torn bytes were moved to {aside}")
    log.warning(msg)
    print(f"nas: {msg}", file=sys.stderr, flush=True)
    return aside


def check_journal(path: Union[str, Path], *, repair: bool = True) -> None:
    """Refuse a journal damaged in the middle; move a torn tail aside (under the journal's lock)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if _torn_tail(data, path) == len(data):
        return
    if not repair:
        raise StorageError(f"journal {path}: its last record is torn (an interrupted write); open it once for "
                           f"writing (e.g. nas search) to move the torn bytes aside")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StorageError(f"journal {path}: its last record is torn, and the file is read-only so it cannot be "
                           f"repaired; make it writable once (complete records are kept)")
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:  # again under the lock: a writer may have been mid-write on the first look
        data = path.read_bytes()
        good = _torn_tail(data, path)
        if good != len(data):
            _move_tail_aside(path, good, len(data))
    finally:
        lock.release()


def _journal_backend_class() -> type:
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    class _SafeJournalFileBackend(JournalFileBackend):
        """A JournalFileBackend that never appends onto a torn record and never leaves one (see module doc)."""

        def __init__(self, file_path: str):
            self._nas_path = Path(file_path)
            self._nas_lock = JournalFileSymlinkLock(file_path)
            super().__init__(file_path, lock_obj=self._nas_lock)

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            data = ("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode("utf-8")
            self._nas_lock.acquire()
            try:
                with open(self._nas_path, "r+b") as f:
                    size = f.seek(0, os.SEEK_END)
                    if size:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            whole = self._nas_path.read_bytes()
                            _move_tail_aside(self._nas_path, _torn_tail(whole, self._nas_path), size)
                            size = f.seek(0, os.SEEK_END)
                    try:
                        f.seek(size)
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError as e:
                        os.ftruncate(f.fileno(), size)  # no torn record left behind
                        raise StorageError(os_message(e, f"journal {self._nas_path}")) from None
            finally:
                self._nas_lock.release()

    return _SafeJournalFileBackend


def SafeJournalFileBackend(file_path: str) -> Any:  # noqa: N802 - a class built on first use (optuna import)
    return _journal_backend_class()(file_path)


# ------------------------------------------------------------------------------------------ errors
def os_message(e: OSError, what: str) -> str:
    if e.errno == errno.ENOSPC or e.errno == errno.EFBIG or e.errno == errno.EDQUOT:
        return f"{what}: the disk is full ({e.strerror}); free space or use another location, then run again " \
               f"(what was recorded before is kept)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}: not writable ({e.strerror}); make it writable or choose another location"
    return f"{what}: {e.strerror or e}"


def _db_message(e: BaseException, url: str) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return f"storage {url}: the database is read-only ({text}); make the file and its folder writable or pass " \
               f"another --storage"
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        return f"storage {url}: the file is not an SQLite database or is damaged ({text}); pass the right --storage " \
               f"or move the file aside"
    if "disk" in low and "full" in low:
        return f"storage {url}: the disk is full ({text}); free space, then run again"
    if "can't load plugin" in low:
        scheme = url.split("://")[0] if "://" in url else url
        return f"storage {url}: unknown database kind {scheme!r} (SQLAlchemy has no such dialect); use " \
               f"sqlite:///PATH.db, journal:PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB"
    if "unable to open" in low:
        return f"storage {url}: cannot open the database file ({text}); check the path and its permissions"
    return f"storage {url}: {type(e).__name__}: {text}"


@contextmanager
def storage_errors(url: Any) -> Iterator[None]:
    """Turn database and file-system faults raised inside into one ``StorageError`` naming ``url``."""
    import sqlalchemy.exc
    from optuna.exceptions import StorageInternalError

    where = url if isinstance(url, str) else (DEFAULT_STORAGE if url is None else type(url).__name__)
    try:
        yield
    except StorageError:
        raise
    except StorageInternalError as e:  # Optuna's wrapper of a failed commit: the cause says why
        raise StorageError(_db_message(e.__cause__ or e, where)) from None
    except (sqlalchemy.exc.DatabaseError, sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as e:
        raise StorageError(_db_message(e, where)) from None
    except OSError as e:
        name = getattr(e, "filename", None)
        raise StorageError(os_message(e, f"{name}" if name else f"storage {where}")) from None


# ------------------------------------------------------------------------------------------ opening
def get_storage(storage: Union[None, str, Any] = None, *, heartbeat: bool = False, create: bool = False) -> Any:
    """An Optuna storage from None (the default SQLite file), a URL, or a storage object (returned as is).

    ``create``: create a missing database/journal file and its folders (searches); without it a
    missing file is an error (readers such as ``nas pareto`` never leave an empty database behind).
    ``heartbeat=True`` turns on Optuna's heartbeat for RDB storages; journal storages get the
    equivalent from ``nas.heartbeat``.
    """
    import optuna  # here, not at the top: the CLI imports this module for its defaults (`nas --help` stays light)

    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return storage
    kind = storage_kind(storage)
    if kind == "journal":
        path = journal_path(storage)
        if not path.is_file():
            if not create:
                raise StorageError(f"no journal at {path} (storage {storage}): check the path; `nas search "
                                   f"--storage {storage}` creates it")
            writable_dir(path.parent if str(path.parent) else Path("."), "journal folder")
        with storage_errors(storage):
            check_journal(path)
            return optuna.storages.JournalStorage(SafeJournalFileBackend(str(path)))
    if kind == "sqlite":
        db = _sqlite_path(storage)
        if db and db != ":memory:" and not Path(db).is_file():
            if not create:
                raise StorageError(f"no study database at {db} (storage {storage}): check the path; `nas search "
                                   f"--storage {storage}` creates it")
            writable_dir(Path(db).parent, "database folder")
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(heartbeat_interval=int(HEARTBEAT_INTERVAL_S), grace_period=GRACE_PERIOD_S)
    with storage_errors(storage):
        try:
            return optuna.storages.RDBStorage(
                storage, engine_kwargs={"connect_args": {"timeout": 60}} if kind == "sqlite" else {}, **kwargs)
        except ImportError as e:
            cause = e.__cause__ or e
            raise StorageError(f"storage {storage}: its database driver is not installed ({cause}); for PostgreSQL "
                               f"pip install psycopg2-binary and write postgresql+psycopg2://..., or pip install "
                               f"'psycopg[binary]' for postgresql://...") from None


def describe_storage(storage: Union[None, str, Any]) -> str:
    """A one-line human description (printed so the user knows which backend is in use)."""
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return type(storage).__name__
    kind = storage_kind(storage)
    if kind == "journal":
        return f"JournalStorage file {os.path.abspath(journal_path(storage))} (safe for parallel workers)"
    if kind == "sqlite":
        return f"SQLite {storage} (one writer at a time; use journal:PATH or PostgreSQL for parallel workers)"
    return f"RDB {storage.split('@')[-1]}"
