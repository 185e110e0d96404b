"""What a search takes (``SearchSettings``), checked once, before any study or process exists.

``validated()`` refuses every bad value with a message naming the setting, the value and the
rule: unknown names (objective, proxy, sampler, dataset, space, constraint), numbers out of range
(``batch_size=0`` is refused, not replaced by a default), an empty or path-like study name.
``resolved()`` then fills the device-dependent defaults. ``portable_settings`` /
``settings_from_dict`` carry settings to another process (parallel workers, Ray actors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from evaluators.checks import check_int, check_number  # shared with evaluators, which cannot import nas

__all__ = ["SearchSettings", "check_int", "check_number", "cuda_available", "portable_settings",
           "settings_from_dict", "absolute_url"]

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# ------------------------------------------------------------------------------------------ checks
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ------------------------------------------------------------------------------------------ settings
@dataclass
class SearchSettings:
    """Everything ``nas search`` takes; ``None`` means "choose for the device" (see ``resolved``)."""

    objectives: Sequence[str] = ("accuracy", "throughput")
    proxy: str = "az_progressivity"  # best single zero-cost proxy on the fmnist-odd ground truth (README)
    trials: Optional[int] = None
    timeout: Optional[float] = None
    sampler: str = "nsga2"
    population: Optional[int] = None  # nsga2/nsga3 population (None: ~trials / 5, see nas.samplers)
    constraints: Sequence[str] = ()
    space: Any = "default"
    data: str = "fmnist-odd"  # the ground-truth task the default proxy was validated on
    data_dir: Optional[str] = None
    storage: Any = None
    study: str = "default"
    device: Optional[str] = None
    seed: int = 0
    enqueue_presets: Optional[bool] = None
    # accuracy proxy
    proxy_resolution: Optional[int] = None
    proxy_batch_size: Optional[int] = None
    train_epochs: float = 1.0
    train_subset: Optional[int] = 10000
    train_val_subset: Optional[int] = None  # validation images of the train proxy (None: all)
    train_batch_size: int = 256  # an epoch is train_subset // train_batch_size optimizer steps
    # multi-fidelity (nas.fidelity): "full" trains every trial for train_epochs; "sh" successive halving
    fidelity: str = "full"
    min_budget: Optional[float] = None  # epochs of the first rung (None: train_epochs / eta**2)
    eta: int = 3
    # profiler
    batch_size: Optional[int] = None
    profile_mode: Optional[str] = None
    dtype: str = "fp16"
    repeats: Optional[int] = None
    # throughput predictor (objectives predicted_throughput / predicted_latency): a name or JSON file
    predictor: Optional[str] = None
    # output
    results_dir: str = "results"
    quiet: bool = False
    max_consecutive_failures: int = 20
    heartbeat: bool = False

    def validated(self) -> "SearchSettings":
        """Refuse bad numbers and unknown names (before any study is created); returns self."""
        from .objectives import parse_constraint, parse_objectives
        from .samplers import SAMPLERS, check_population

        if not isinstance(self.study, str) or not _STUDY_NAME.match(self.study):
            raise ValueError(f"--study {self.study!r} must be a non-empty name of letters, digits, '.', '_', '+', '-' "
                             f"(it names the log and report files), starting with a letter or digit")
        check_int("--trials", self.trials, minimum=1, optional=True)
        check_number("--timeout", self.timeout, positive=True, optional=True)
        check_int("--seed", self.seed, minimum=0)
        check_int("--proxy-resolution", self.proxy_resolution, minimum=16, maximum=4096, optional=True)
        check_int("--proxy-batch-size", self.proxy_batch_size, minimum=2, optional=True)
        check_int("--batch-size", self.batch_size, minimum=1, optional=True)
        check_int("repeats", self.repeats, minimum=1, optional=True)
        check_int("train_subset", self.train_subset, minimum=1, optional=True)
        check_number("train_epochs", self.train_epochs, positive=True)
        check_int("max_consecutive_failures", self.max_consecutive_failures, minimum=1)
        check_int("train_val_subset", self.train_val_subset, minimum=1, optional=True)
        check_int("train_batch_size", self.train_batch_size, minimum=1)
        from .fidelity import check_fidelity

        check_fidelity(self.fidelity, proxy=self.proxy, objectives=list(self.objectives), min_budget=self.min_budget,
                       eta=self.eta, budget=self.train_epochs)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {sorted(SAMPLERS)}")
        check_population(self.sampler, self.population)
        objectives = parse_objectives(self.objectives)
        for c in self.constraints:
            parse_constraint(c)
        if any(o.needs == "proxy" for o in objectives) and self.proxy != "train":
            from evaluators.proxies import get_proxy

            get_proxy(self.proxy)  # "unknown proxy 'nope'; known: ..."
        self._check_predictor(objectives)
        if self.dtype not in ("fp16", "bf16", "fp32"):
            raise ValueError(f"dtype={self.dtype!r} must be fp16, bf16 or fp32")
        if self.device is not None and self.device not in ("cpu", "cuda"):
            raise ValueError(f"device={self.device!r} must be 'cuda' or 'cpu'")
        return self

    def _check_predictor(self, objectives: Sequence[Any]) -> None:
        """A predicted objective needs a predictor that loads and gives it (refused before any study)."""
        from .objectives import PREDICTED_KEYS, parse_constraint

        needs = [o.name for o in objectives if o.needs == "predict"]
        needs += [c.name for c in map(parse_constraint, self.constraints) if c.objective.needs == "predict"]
        if not needs:
            return
        if not self.predictor:
            raise ValueError(f"{needs[0]} needs a predictor: --throughput predicted:NAME (or --latency)")
        from evaluators.predictor import load_predictor

        p = load_predictor(self.predictor, search_dirs=[Path(self.results_dir) / "predictors"])
        missing = [n for n in needs if PREDICTED_KEYS[n] not in p.targets]
        if missing:
            raise ValueError(f"predictor {self.predictor!r} gives {p.targets}, not {PREDICTED_KEYS[missing[0]]} "
                             f"({missing[0]}): its dataset had no batch-1 latency")

    def resolved(self, *, cuda: Optional[bool] = None) -> "SearchSettings":
        """Fill device-dependent defaults (GPU: paper protocol; CPU: a small, fast budget).

        ``cuda``: whether the trials' machines have CUDA (default: this process's torch says);
        the Ray driver passes the cluster's answer, its head may have no GPU.
        """
        self.validated()
        s = dataclasses.replace(self)
        have_cuda = cuda_available() if cuda is None else cuda
        if s.device is None:
            s.device = "cuda" if have_cuda else "cpu"
        if s.device == "cuda" and not have_cuda:
            raise ValueError("device='cuda' but no CUDA GPU is available; use --device cpu")
        gpu = s.device == "cuda"
        if s.trials is None and s.timeout is None:
            s.trials = 40 if gpu else 8
        if s.enqueue_presets is None:
            s.enqueue_presets = gpu
        s.proxy_resolution = s.proxy_resolution if s.proxy_resolution is not None else (128 if gpu else 96)
        s.proxy_batch_size = s.proxy_batch_size if s.proxy_batch_size is not None else (64 if gpu else 16)
        s.batch_size = s.batch_size if s.batch_size is not None else (128 if gpu else 2)
        s.profile_mode = s.profile_mode or ("cudagraph" if gpu else "eager")
        s.repeats = s.repeats if s.repeats is not None else (10 if gpu else 2)
        return s

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = self.space if isinstance(self.space, str) else getattr(self.space, "name", "custom")
        d["storage"] = self.storage if isinstance(self.storage, (str, type(None))) else type(self.storage).__name__
        d["objectives"], d["constraints"] = list(self.objectives), list(self.constraints)
        return d


# ------------------------------------------------------------------------------------------ to another process
def absolute_url(url: str) -> str:
    """A storage URL whose file (journal, SQLite) is absolute, so another cwd opens the same file."""
    from .storage import journal_path, storage_kind

    kind = storage_kind(url)
    if kind == "journal":
        return "journal:" + os.path.abspath(journal_path(url))
    if kind == "sqlite":
        db = url[len("sqlite:///"):]
        if db and db != ":memory:" and not os.path.isabs(db):
            return "sqlite:///" + os.path.abspath(db)
    return url


def portable_settings(settings: SearchSettings) -> dict[str, Any]:
    """SearchSettings as a JSON-ready dict that another process (another cwd) resolves identically.

    Storage, results/data folders and a space file become absolute paths; a space object or dict
    is inlined (``SearchSpace.to_dict()``).
    """
    from search_spaces.space import SearchSpace, list_builtin_spaces, load_space

    d = dataclasses.asdict(settings)
    d["objectives"], d["constraints"] = list(settings.objectives), list(settings.constraints)
    space = settings.space
    if isinstance(space, (SearchSpace, dict)):
        d["space"] = load_space(space).to_dict()
    elif isinstance(space, (str, os.PathLike)):
        name = str(space)
        d["space"] = name if name in list_builtin_spaces() or not Path(name).is_file() else os.path.abspath(name)
    else:
        raise ValueError(f"space={space!r}: give a built-in name, a YAML file, a dict or a SearchSpace")
    if settings.storage is not None:
        if not isinstance(settings.storage, str):
            raise ValueError(f"storage={type(settings.storage).__name__} object cannot be passed to another process; "
                             f"give a URL")
        d["storage"] = absolute_url(settings.storage)
    d["results_dir"] = os.path.abspath(settings.results_dir)
    if settings.data_dir is not None:
        d["data_dir"] = os.path.abspath(settings.data_dir)
    if isinstance(settings.data, str) and settings.data.startswith("imagefolder:"):
        d["data"] = "imagefolder:" + os.path.abspath(settings.data[len("imagefolder:"):])
    json.dumps(d)  # fail here, not in the worker, if something is not JSON-ready
    return d


def settings_from_dict(d: dict[str, Any]) -> SearchSettings:
    """Inverse of ``portable_settings`` (unknown keys are an error, naming them)."""
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"settings JSON has unknown keys {unknown}; known: {sorted(names)}")
    d = dict(d)
    d["objectives"] = tuple(d.get("objectives", ()))
    d["constraints"] = tuple(d.get("constraints", ()))
    return SearchSettings(**d)
