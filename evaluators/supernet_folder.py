"""The output folder of a supernet training run: what it is, where it stands, its checkpoint.

Files (all written atomically: a temporary file in the folder, flushed, then renamed over):

- ``supernet.json``: the identity of the run (the space's name and full definition, the data,
  the training resolution, the recipe), the sandwich's extremes, its status (``running``,
  ``paused``, ``done``, ``nan``) with the reason, the steps done, the history and one record per
  invocation (``sessions``). A folder holding another run's identity is refused before training.
- ``checkpoint.pt``: model, optimizer, step, RNG states and the batch iterator's state; the
  last good one is never overwritten by a NaN state.
- ``supernet.safetensors``: the trained weights alone, written when training is done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .jsonfile import atomic_write_bytes, finite

__all__ = ["SupernetFolder", "META_FILE", "CHECKPOINT_FILE", "WEIGHTS_FILE", "FOLDER_KIND", "STATUSES",
           "IDENTITY_KEYS"]

META_FILE = "supernet.json"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "supernet.safetensors"
FOLDER_KIND = "nas.supernet"
SCHEMA_VERSION = 1
STATUSES = ("running", "paused", "done", "nan")
#: What makes two runs the same run (a resume must match all of them).
IDENTITY_KEYS = ("space", "data", "resolution", "num_classes", "recipe")


class SupernetFolder:
    """One supernet run's folder (``path``)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    @property
    def meta_path(self) -> Path:
        return self.path / META_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def exists(self) -> bool:
        return self.meta_path.is_file()

    # ------------------------------------------------------------------ metadata
    def read(self) -> dict[str, Any]:
        """The folder's ``supernet.json`` (ValueError when it is not a supernet folder)."""
        if not self.meta_path.is_file():
            what = "does not exist" if not self.path.exists() else f"has no {META_FILE}"
            raise FileNotFoundError(f"{self.path} {what}: expected a folder written by `nas supernet train`")
        try:
            meta = json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.meta_path} is not valid JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("kind") != FOLDER_KIND:
            raise ValueError(f"{self.meta_path} is not a supernet record (kind {FOLDER_KIND!r} expected)")
        return meta

    def write(self, meta: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(finite(dict(meta, kind=FOLDER_KIND, schema_version=SCHEMA_VERSION)), indent=1,
                          allow_nan=False) + "\n"
        atomic_write_bytes(self.meta_path, lambda f: f.write(text.encode()))

    def check_new_or_same(self, identity: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """Refuse a folder that holds something else; return its record when it holds this run.

        Only the ``IDENTITY_KEYS`` present in ``identity`` are compared (the space can be checked
        before the data is loaded).

        ValueError: the folder holds another supernet (names what differs), or files that are not a
        supernet run.
        """
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a folder")
        if not self.exists():
            if any(self.path.iterdir()):
                raise ValueError(f"--out {self.path} is not empty and holds no {META_FILE}: not a supernet folder; "
                                 f"use a new or empty folder")
            return None
        meta = self.read()
        theirs = {k: meta.get(k) for k in IDENTITY_KEYS}
        ours = json.loads(json.dumps(finite(dict(identity))))
        if "space" in ours and theirs["space"] != ours["space"]:
            name = (theirs["space"] or {}).get("name")
            raise ValueError(f"--out {self.path} holds a supernet of another space ({name!r}, "
                             f"{(theirs['space'] or {}).get('source')}); this run trains space "
                             f"{ours['space']['name']!r}: use another --out")
        diff = [k for k in IDENTITY_KEYS if k in ours and theirs[k] != ours[k]]
        if diff:
            details = []
            for k in diff:
                a, b = theirs[k], ours[k]
                if isinstance(a, dict) and isinstance(b, dict):
                    keys = sorted(x for x in set(a) | set(b) if a.get(x) != b.get(x))
                    details.append(", ".join(f"{k}.{x}: {a.get(x)!r} there, {b.get(x)!r} now" for x in keys))
                else:
                    details.append(f"{k}: {a!r} there, {b!r} now")
            raise ValueError(f"--out {self.path} holds another supernet run ({'; '.join(details)}); resume it with "
                             f"the same settings or use another --out")
        return meta

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.checkpoint_path, lambda f: torch.save(dict(state), f))

    def load_checkpoint(self, map_location: Union[str, torch.device] = "cpu") -> Optional[dict[str, Any]]:
        if not self.checkpoint_path.is_file():
            return None
        return torch.load(self.checkpoint_path, map_location=map_location, weights_only=True)

    def save_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        blob = save({k: v.detach().cpu().contiguous() for k, v in state.items()},
                    metadata={"format": "pt", "arch": "nas.ElasticFasterViT"})
        atomic_write_bytes(self.weights_path, lambda f: f.write(blob))

    def remove_checkpoint(self) -> None:
        self.checkpoint_path.unlink(missing_ok=True)

    def load_weights(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.weights_path))
