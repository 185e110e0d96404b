"""A throughput dataset for the predictor: sampled configs, each profiled once, appended to a JSON-lines file.

The file is append-only and resumable: every record carries a ``key`` (architecture with its
resolution, profiler mode, dtype, batch size); a run skips the keys already in the file, so a
collection cut by a time limit (or Ctrl-C) goes on where it stopped. Each line is one
``ThroughputRecord.to_dict()`` (GPU, driver, torch, timestamp, settings, numbers) plus ``config``,
``key``, ``index`` (position in the seeded sample) and ``flops``. Used by ``nas profile --sample``
and ``bench/profile_dataset.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from search_spaces import FasterViTConfig
from search_spaces.space import load_space

__all__ = ["RESOLUTIONS", "sample_configs", "record_key", "DatasetFile", "collect", "parse_resolutions"]

#: the training grid of bench/profile_dataset.py: 160..512 px in steps of 32
RESOLUTIONS = tuple(range(160, 513, 32))
_MAX_TRIES = 200


def parse_resolutions(text: str) -> tuple[int, ...]:
    """'160-512' (steps of 32), '160-512:16', or '224,256,288' -> resolutions; errors name the text."""
    try:
        if "-" in text:
            span, _, step = text.partition(":")
            lo, hi = (int(v) for v in span.split("-"))
            values = tuple(range(lo, hi + 1, int(step) if step else 32))
        else:
            values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"resolutions {text!r} must look like 160-512, 160-512:16 or 224,256") from None
    if not values or min(values) < 32:
        raise ValueError(f"resolutions {text!r} must give sizes >= 32")
    return values


def sample_configs(space: Any = "default", n: int = 1000, *, seed: int = 0,
                   resolutions: Sequence[int] = RESOLUTIONS) -> list[FasterViTConfig]:
    """``n`` distinct configs: uniform knob values of ``space`` moved to a uniformly drawn resolution.

    Moving keeps each stage's windows per side (``FasterViTConfig.at_resolution``); draws the
    generator refuses are drawn again. The same (space, n, seed, resolutions) gives the same list.
    """
    sp = load_space(space)
    rng = np.random.default_rng(seed)
    out: list[FasterViTConfig] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > _MAX_TRIES * max(n, 1):
            raise ValueError(f"space {sp.name!r}: only {len(out)} distinct buildable configs in {tries} draws "
                             f"at resolutions {list(resolutions)}")
        try:
            _, cfg = sp.sample_random(rng)
            cfg = cfg.at_resolution(int(resolutions[int(rng.integers(len(resolutions)))]))
        except ValueError:
            continue
        if cfg.arch_id in seen:
            continue
        seen.add(cfg.arch_id)
        out.append(cfg)
    return out


def record_key(cfg: FasterViTConfig, *, mode: str, dtype: str, batch_size: int) -> str:
    """What makes two measurements the same one (``arch_id`` covers the resolution)."""
    return f"{cfg.arch_id}|{mode}|{dtype}|b{batch_size}"


class DatasetFile:
    """An append-only JSON-lines file of records; ``done`` holds the keys already there."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.is_file():
            self._repair_tail()
            for line in self.path.read_text().splitlines():
                if line.strip():
                    self.done.add(json.loads(line).get("key", ""))
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _repair_tail(self) -> None:
        """Drop a torn last line (a run killed mid-write) so the next append starts clean."""
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as f:
            f.truncate(cut)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(record["key"])

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def collect(configs: Iterable[FasterViTConfig], out: Union[str, Path], *, mode: str, dtype: str, batch_size: int,
            device: Any = None, repeats: int = 10, warmup: int = 3, latency_b1: bool = True,
            deadline: Optional[float] = None, measure: Optional[Callable[..., Any]] = None,
            progress: Callable[[int, int, dict[str, Any]], None] = lambda i, n, r: None,
            **options: Any) -> dict[str, int]:
    """Profile each config not yet in ``out`` and append its record; stops at ``deadline`` (time.monotonic).

    Returns counts: ``measured``, ``skipped`` (already there), ``failed`` (record with an error:
    kept, so it is not retried), ``left`` (not reached before the deadline).
    """
    from evaluators.cost import analytic_flops
    from evaluators.profiler import measure_throughput

    measure = measure or measure_throughput
    dataset = DatasetFile(out)
    configs = list(configs)
    counts = dict(measured=0, skipped=0, failed=0, left=0)
    for i, cfg in enumerate(configs):
        key = record_key(cfg, mode=mode, dtype=dtype, batch_size=batch_size)
        if key in dataset.done:
            counts["skipped"] += 1
            continue
        if deadline is not None and time.monotonic() > deadline:
            counts["left"] = len(configs) - i - sum(1 for c in configs[i:] if record_key(
                c, mode=mode, dtype=dtype, batch_size=batch_size) in dataset.done)
            break
        rec = measure(cfg, mode=mode, dtype=dtype, batch_size=batch_size, device=device, repeats=repeats,
                      warmup=warmup, latency_b1=latency_b1, **options).to_dict()
        rec.update(config=cfg.to_dict(), key=key, index=i, flops=analytic_flops(cfg))
        dataset.append(rec)
        counts["failed" if rec.get("error") else "measured"] += 1
        progress(i, len(configs), rec)
    return counts
