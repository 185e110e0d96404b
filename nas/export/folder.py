"""The atomic export folder: write into a hidden temporary folder next to ``out``, move it into place.

A temporary folder is named ``.<name>.tmp-<random>`` and holds ``OWNER_FILE`` (the exporting
process: host, pid, start time). One left by a killed export (SIGKILL, power loss) is removed by the
next export to the same ``out`` (``clean_stale_temps``) once its owner process is gone (or, without
an owner file, when older than ``STALE_TEMP_S``); a concurrent export's folder is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

from ..heartbeat import process_gone, process_identity
from .base import ExportError

__all__ = ["check_out", "commit", "normal_permissions", "clean_stale_temps", "make_temp", "OWNER_FILE"]

OWNER_FILE = ".nas-export-owner"
STALE_TEMP_S = 24 * 3600.0


def temp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def make_temp(out: Path) -> Path:
    """A new hidden temporary folder next to ``out`` holding the owner file (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), dir=out.parent))
    (tmp / OWNER_FILE).write_text(json.dumps(process_identity()))
    return tmp


def _owner_gone(folder: Path, now: float) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict):
        gone: Optional[bool] = process_gone(owner)
        if gone is not None:
            return gone
    return now - folder.stat().st_mtime > STALE_TEMP_S


def clean_stale_temps(out: Path) -> list[Path]:
    """Remove the temporary (and replaced ``.old-``) folders that killed exports to ``out`` left behind."""
    if not out.parent.is_dir():
        return []
    now, removed = time.time(), []
    for p in out.parent.iterdir():
        if not p.is_dir() or p.is_symlink():
            continue
        if p.name.startswith(temp_prefix(out)) or p.name.startswith(f".{out.name}.old-"):
            if _owner_gone(p, now):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"--out {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} exists and is not empty; add --force to replace it, or choose another folder")


def normal_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder and some writers make 0600 files: give the export the
    permissions of an ordinary folder under the user's umask."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for p in folder.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def commit(tmp: Path, out: Path, force: bool) -> None:
    """Move the complete ``tmp`` folder to ``out`` (renames in one file system, so atomic)."""
    check_out(out, force)
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # onto a missing or empty folder (rename replaces an empty directory)
