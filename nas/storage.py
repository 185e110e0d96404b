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
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["DEFAULT_STORAGE", "DEFAULT_JOURNAL", "StorageError", "get_storage", "storage_kind", "describe_storage",
           "journal_path", "check_journal", "storage_exists", "writable_dir", "writable_file", "storage_errors",
           "SafeJournalFileBackend", "os_message"]

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
    if url.startswith("journal:") or ("://" not in url and not url.startswith("sqlite:")
                                      and url.endswith((".journal", ".log"))):
        return "journal"
    if url.startswith("sqlite:"):
        return "sqlite"
    if "://" in url:
        return "rdb"
    raise StorageError(f"storage {url!r} is not a storage URL: use sqlite:///PATH.db, journal:PATH, or an RDB URL "
                       f"such as postgresql://user@host/db")


def journal_path(url: str) -> Path:
    raw = url[len("journal:"):] if url.startswith("journal:") else url
    if not raw.strip():
        raise StorageError(f"storage {url!r} names no file: write journal:PATH, e.g. journal:results/nas.journal")
    return Path(raw)


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def _file_kind(path: Path) -> str:
    """What a storage file holds by its first bytes: 'empty', 'sqlite', 'journal' (a JSON record) or 'other'."""
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return "empty"
    if head.startswith(SQLITE_HEADER):
        return "sqlite"
    return "journal" if head.lstrip()[:1] in (b"{", b"") else "other"


def _not_a_folder(path: Path, storage: str, example: str) -> None:
    if path.is_dir():
        raise StorageError(f"storage {storage}: {path} is a folder, not a file; name a file inside it, e.g. "
                           f"{example}")


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


def writable_file(path: Union[str, Path], what: str) -> Path:
    """``path`` as a file that can be (over)written, checked before slow work and creating nothing: no folder,
    writable if it exists, its nearest existing folder writable; StorageError naming ``what`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"{what} {path} is a folder: give the path of the file to write inside it")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StorageError(f"{what} {path}: the file is not writable (read-only or permissions); choose another "
                               f"path")
        return path
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == Path(p.anchor or "."))
    if not folder.is_dir():
        raise StorageError(f"{what} {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(f"{what} {path}: the folder {folder} is not writable (read-only or permissions); choose "
                           f"a writable location")
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
                f"in the middle, so Optuna cannot read the records after it. To go on with the {line_no - 1} good "
                f"records before it, copy them into a new journal (this file stays as it is): head -n {line_no - 1} "
                f"{path} > {path}.fixed, then pass --storage journal:{path}.fixed") from None
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
    kind = _file_kind(path)
    if kind == "sqlite":
        raise StorageError(f"journal {path}: the file is an SQLite database, not a journal; pass --storage "
                           f"sqlite:///{path}")
    if kind == "other":
        raise StorageError(f"journal {path}: the file is not an Optuna journal (its first line is no JSON record); "
                           f"pass the study's journal, or a path that does not exist yet to start one")
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
    if "database is locked" in low:
        return f"storage {url}: another process held the database's lock for {SQLITE_TIMEOUT_S} s ({text}); run " \
               f"again when it is done, or use journal:PATH or PostgreSQL for several processes at once"
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


# ------------------------------------------------------------------------------------------ a locked SQLite file
SQLITE_TIMEOUT_S = 60  # how long a statement waits for another process's lock before "database is locked"
LOCK_NOTICE_S = 3.0  # a statement waiting this long on a locked file says so (once per wait)
_waiting: dict[int, tuple[float, str]] = {}  # thread -> (start of its statement, SQLite file)
_watcher: list[threading.Thread] = []


def _locked(db: str) -> bool:
    """Whether another connection holds a lock on the SQLite file ``db`` that keeps a writer out (probed at once)."""
    import sqlite3

    try:
        con = sqlite3.connect(db, timeout=0, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as e:
        return "locked" in str(e).lower()
    finally:
        con.close()


def _watch() -> None:
    told: set[tuple[int, float]] = set()
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        for thread, (start, db) in list(_waiting.items()):
            if now - start >= LOCK_NOTICE_S and (thread, start) not in told and _locked(db):
                told.add((thread, start))
                print(f"nas: waiting for the SQLite database {db}: another process holds its lock (up to "
                      f"{SQLITE_TIMEOUT_S} s, then this stops with 'database is locked')", file=sys.stderr, flush=True)


def _started(conn: Any, *_: Any) -> None:
    if conn.dialect.name == "sqlite" and conn.engine.url.database not in (None, "", ":memory:"):
        _waiting[threading.get_ident()] = (time.monotonic(), conn.engine.url.database)


def _ended(*_: Any) -> None:
    _waiting.pop(threading.get_ident(), None)


def _say_when_waiting() -> None:
    """From now on, a statement or commit on an SQLite file that waits on another process's lock says so on
    stderr (SQLite itself waits silently for up to ``SQLITE_TIMEOUT_S``). Installed once, for every engine."""
    if _watcher:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    for name in ("before_cursor_execute", "commit"):
        event.listen(Engine, name, _started)
    for name in ("after_cursor_execute", "handle_error"):
        event.listen(Engine, name, _ended)
    event.listen(Pool, "checkin", _ended)  # after a commit, the connection goes back to the pool
    _watcher.append(threading.Thread(target=_watch, name="nas-sqlite-lock", daemon=True))
    _watcher[0].start()


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
        _not_a_folder(path, storage, f"journal:{path / 'nas.journal'}")
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
        _not_a_folder(Path(db or "."), storage, f"sqlite:///{Path(db) / 'nas.db'}")
        if db and db != ":memory:" and Path(db).is_file() and _file_kind(Path(db)) == "journal":
            raise StorageError(f"storage {storage}: {db} is an Optuna journal, not an SQLite database; pass --storage "
                               f"journal:{db}")
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
            if kind != "sqlite":
                return optuna.storages.RDBStorage(storage, **kwargs)
            _say_when_waiting()
            return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}},
                                              **kwargs)
        except ImportError as e:
            cause = e.__cause__ or e
            raise StorageError(f"storage {storage}: its database driver is not installed ({cause}); for PostgreSQL "
                               f"pip install psycopg2-binary and write postgresql+psycopg2://..., or pip install "
                               f"'psycopg[binary]' for postgresql://...") from None


def storage_exists(storage: Union[None, str, Any]) -> bool:
    """Whether ``storage`` already holds a database or journal file (a server's URL or a storage object: yes)."""
    if storage is None:
        storage = DEFAULT_STORAGE
    if not isinstance(storage, str):
        return True
    kind = storage_kind(storage)
    if kind == "journal":
        return journal_path(storage).is_file()
    if kind == "sqlite":
        db = _sqlite_path(storage)
        return bool(db) and db != ":memory:" and Path(db).is_file()
    return True


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
