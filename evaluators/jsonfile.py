"""Results files (JSON, reports, figures) written so that a kill or a full disk never leaves half a file, and JSON
without NaN.

Every resumable run (benchmarks, the supernet's folder) rewrites its record after each unit of work:
``write_json`` goes through a temporary file in the same folder, flushed and fsynced, then renamed
over the target. ``finite`` turns non-finite floats into ``None`` (JSON has no NaN), recursively.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["finite", "atomic_write_bytes", "atomic_write_text", "write_json"]


def finite(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None (dicts, lists and tuples recursively; keys as str)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, rename over ``path`` (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, atomically: a full disk or a kill leaves the old file or none, never a torn one."""
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))
    return Path(path)


def write_json(path: Path, data: Any, *, indent: int = 1) -> None:
    """``data`` as JSON (non-finite floats as null, other objects as ``str``) at ``path``, atomically."""
    text = json.dumps(finite(data), indent=indent, default=str, allow_nan=False) + "\n"
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))
