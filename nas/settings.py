"""What a search takes, grouped by concern, each group one frozen dataclass checked when it is made.

============================ =================================================================================
``SearchOptions``            what to search: objectives, constraints, space, sampler, budget, seed
``EstimatorOptions``         what the accuracy objective means: ``--proxy`` (an estimator by name), data,
                             resolution, the train budget and successive halving (``nas.estimators``
                             builds one ``evaluators.estimators.AccuracyEstimator`` from these)
``ThroughputOptions``        how throughput/latency are measured (profiler protocol) or predicted
``StorageOptions``           where the study and its files go (storage URL, study name, results folder)
``WorkerOptions``            where trials run: device, worker processes, Ray
============================ =================================================================================

``SearchSettings`` is all five at once (it inherits them: a function that needs one concern takes
that group's type, and a ``SearchSettings`` is one). Keywords are flat, as on the command line:
``SearchSettings(objectives=("accuracy", "params"), proxy="train", trials=20)``. Every bad value is
refused on creation with a message naming the setting, the value and the rule; ``None`` in a
device-dependent field means "choose for the device" (``DEVICE_DEFAULTS``, filled by ``resolved``).
The CLI (``nas search``) reads its defaults from these classes.

``settings_for_process`` / ``settings_from_dict`` carry settings to another process (absolute
paths, so another cwd resolves identically); ``settings_for_study`` is the opposite, what a study
stores (no absolute path of this machine).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

from evaluators.checks import check_int, check_number

from .objectives import parse_constraint, parse_objectives
from .samplers import SAMPLERS, check_population
from .storage import journal_path, storage_kind

__all__ = ["SearchOptions", "EstimatorOptions", "ThroughputOptions", "StorageOptions", "WorkerOptions",
           "SearchSettings", "GROUPS", "FIDELITIES", "BACKENDS", "DTYPES", "DEVICES", "cuda_available",
           "device_default", "settings_for_process", "settings_from_dict", "settings_for_study", "absolute_url"]

FIDELITIES = ("full", "sh")
BACKENDS = ("optuna", "ray")
DTYPES = ("fp16", "bf16", "fp32")
DEVICES = ("cuda", "cpu")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def cuda_available() -> bool:
    import torch  # here, not at the top: `nas --help` reads this module's defaults without torch

    return torch.cuda.is_available()


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} must be one of {', '.join(allowed)}")


def _names(value: Any) -> tuple[str, ...]:
    """A list of names given as a tuple, a list or one comma-separated string."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


# ------------------------------------------------------------------------------------------ the groups
@dataclass(frozen=True)
class SearchOptions:
    """What to search: objectives, constraints, space, sampler and budget."""

    objectives: tuple[str, ...] = ("accuracy", "throughput")
    constraints: tuple[str, ...] = ()
    space: Any = "default"  # a built-in name, a YAML file, a dict or a SearchSpace
    sampler: str = "nsga2"
    population: Optional[int] = None  # nsga2/nsga3 population (None: ~trials / 5, see nas.samplers)
    trials: Optional[int] = None
    timeout: Optional[float] = None
    seed: int = 0  # the sampler's, the data batch's and the estimator's
    enqueue_presets: Optional[bool] = None  # FasterViT-0..3 first as reference points
    max_consecutive_failures: int = 20
    confirm: int = 0  # after the search, re-train this many front points with another seed (nas.confirm)

    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[Any, Any]]] = {"trials": (40, 8), "enqueue_presets": (True, False)}

    def __post_init__(self) -> None:
        SearchOptions._check(self)

    def _check(self) -> None:
        object.__setattr__(self, "objectives", _names(self.objectives))
        object.__setattr__(self, "constraints", _names(self.constraints))
        parse_objectives(self.objectives)
        for c in self.constraints:
            parse_constraint(c)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {sorted(SAMPLERS)}")
        check_population(self.sampler, self.population)
        check_int("--trials", self.trials, minimum=1, optional=True)
        check_number("--timeout", self.timeout, minimum=0, low_open=True, optional=True)
        check_int("--seed", self.seed, minimum=0)
        check_int("max_consecutive_failures", self.max_consecutive_failures, minimum=1)
        check_int("--confirm", self.confirm, minimum=0)


@dataclass(frozen=True)
class EstimatorOptions:
    """What the accuracy objective means: the estimator (``--proxy``), its data, resolution and budget."""

    proxy: str = "az_progressivity"  # best single zero-cost proxy on the fmnist-odd ground truth (README)
    data: str = "fmnist-odd"  # the ground-truth task the default proxy was validated on
    data_dir: Optional[str] = None
    proxy_resolution: Optional[int] = None
    proxy_batch_size: Optional[int] = None  # images of the zero-cost proxies' batch
    train_epochs: float = 1.0
    train_subset: Optional[int] = 10000
    train_val_subset: Optional[int] = None  # validation images of the train proxy (None: all)
    train_batch_size: int = 256  # an epoch is train_subset // train_batch_size optimizer steps
    train_recipe: Optional[str] = None  # the train proxy's optimisation: a JSON object or file (nas.estimators)
    # multi-fidelity (nas.fidelity): "full" trains every trial for train_epochs; "sh" successive halving
    fidelity: str = "full"
    min_budget: Optional[float] = None  # epochs of the first rung (None: train_epochs / eta**2)
    eta: int = 3

    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[Any, Any]]] = {"proxy_resolution": (128, 96),
                                                             "proxy_batch_size": (64, 16)}

    def __post_init__(self) -> None:
        EstimatorOptions._check(self)

    def _check(self) -> None:
        if not isinstance(self.proxy, str) or not self.proxy:
            raise ValueError(f"--proxy {self.proxy!r} must name an accuracy estimator (see `nas proxies`, or 'train')")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"--data {self.data!r} must name a dataset")
        check_int("--proxy-resolution", self.proxy_resolution, minimum=16, maximum=4096, optional=True)
        check_int("--proxy-batch-size", self.proxy_batch_size, minimum=2, optional=True)
        check_number("--train-epochs", self.train_epochs, minimum=0, low_open=True)
        check_int("--train-subset", self.train_subset, minimum=1, optional=True)
        check_int("--train-val-subset", self.train_val_subset, minimum=1, optional=True)
        check_int("--train-batch-size", self.train_batch_size, minimum=1)
        if self.train_recipe is not None and (not isinstance(self.train_recipe, str) or not self.train_recipe.strip()):
            raise ValueError(f"--train-recipe {self.train_recipe!r} must be a JSON object or a JSON file")
        _one_of("--fidelity", self.fidelity, FIDELITIES)
        check_int("--eta", self.eta, minimum=2)
        check_number("--min-budget", self.min_budget, minimum=0, low_open=True, optional=True)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> "EstimatorOptions":
        """The estimator's part of a flat settings mapping (a study's stored settings); other keys are ignored."""
        return cls(**{f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings})


@dataclass(frozen=True)
class ThroughputOptions:
    """How throughput/latency/memory are measured (profiler) or predicted (``predictor``)."""

    batch_size: Optional[int] = None  # profiler batch size
    profile_mode: Optional[str] = None
    dtype: str = "fp16"
    repeats: Optional[int] = None
    predictor: Optional[str] = None  # a throughput predictor's name or JSON file (predicted_* objectives)
    # zero-pad the deployed model's widths and head dims to multiples of this before timing
    # (search_spaces.pad_channels; same outputs); part of what a measured value means. None: off
    pad_channels: Optional[int] = None
    # run each MLP's fc1 -> GELU as one GEMM with a bias+GELU epilogue before timing
    # (search_spaces.fuse_gelu_epilogue; tanh-approximate GELU on CUDA); part of what a measured value means
    gelu_epilogue: bool = False

    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[Any, Any]]] = {"batch_size": (128, 2),
                                                             "profile_mode": ("cudagraph", "eager"),
                                                             "repeats": (10, 2)}

    def __post_init__(self) -> None:
        ThroughputOptions._check(self)

    def _check(self) -> None:
        check_int("--batch-size", self.batch_size, minimum=1, optional=True)
        check_int("repeats", self.repeats, minimum=1, optional=True)
        _one_of("dtype", self.dtype, DTYPES)
        check_int("--pad-channels", self.pad_channels, minimum=1, optional=True)
        if not isinstance(self.gelu_epilogue, bool):
            raise ValueError(f"--gelu-epilogue={self.gelu_epilogue!r} must be true or false")


@dataclass(frozen=True)
class StorageOptions:
    """Where the study and its files go."""

    storage: Any = None  # an Optuna storage URL or object (None: nas.storage's default)
    study: str = "default"
    results_dir: str = "results"  # logs, reports, weights
    quiet: bool = False
    heartbeat: bool = False
    measure_references: bool = True  # FasterViT-0..3 on the report, measured apart as the trials were

    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[Any, Any]]] = {}

    def __post_init__(self) -> None:
        StorageOptions._check(self)

    def _check(self) -> None:
        if not isinstance(self.study, str) or not _STUDY_NAME.match(self.study):
            raise ValueError(f"--study {self.study!r} must be a non-empty name of letters, digits, '.', '_', '+', '-' "
                             f"(it names the log and report files), starting with a letter or digit")


@dataclass(frozen=True)
class WorkerOptions:
    """Where trials run: the device, worker processes on this machine, or a Ray cluster."""

    device: Optional[str] = None  # cuda | cpu (None: cuda when there is one)
    workers: int = 1  # trials at once (processes sharing the study, or Ray trials)
    backend: str = "optuna"
    ray_address: Optional[str] = None
    gpus_per_trial: float = 1.0

    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[Any, Any]]] = {}

    def __post_init__(self) -> None:
        WorkerOptions._check(self)

    def _check(self) -> None:
        if self.device is not None:
            _one_of("device", self.device, DEVICES)
        check_int("--workers", self.workers, minimum=1)
        _one_of("--backend", self.backend, BACKENDS)
        check_number("--gpus-per-trial", self.gpus_per_trial, minimum=0)


GROUPS: tuple[type, ...] = (SearchOptions, EstimatorOptions, ThroughputOptions, StorageOptions, WorkerOptions)


def device_default(group: type, name: str) -> str:
    """The device-dependent default of a setting as help text reads it: ``128 GPU / 96 CPU``."""
    gpu, cpu = group.DEVICE_DEFAULTS[name]  # type: ignore[attr-defined]
    return f"{gpu} GPU / {cpu} CPU"


# ------------------------------------------------------------------------------------------ all of them
@dataclass(frozen=True)
class SearchSettings(SearchOptions, EstimatorOptions, ThroughputOptions, StorageOptions, WorkerOptions):
    """Everything ``nas search`` takes (the five groups); ``None`` means "choose for the device" (``resolved``)."""

    def __post_init__(self) -> None:
        for group in GROUPS:
            group._check(self)  # type: ignore[attr-defined]
        self._check_predicted()
        self._check_deploy_steps()
        if self.fidelity == "sh" and "accuracy" not in self.objectives:
            raise ValueError(f"--fidelity sh ranks trials on accuracy at each rung: add 'accuracy' to the objectives "
                             f"({', '.join(self.objectives)})")

    def _check_predicted(self) -> None:
        """A predicted objective or constraint needs a predictor (that it gives the value is checked when it loads)."""
        needs = [o.name for o in parse_objectives(self.objectives) if o.needs == "predict"]
        needs += [c.name for c in map(parse_constraint, self.constraints) if c.objective.needs == "predict"]
        if needs and not self.predictor:
            raise ValueError(f"{needs[0]} needs a predictor: --throughput predicted:NAME (or --latency)")

    def _check_deploy_steps(self) -> None:
        """``--pad-channels`` and ``--gelu-epilogue`` change what the profiler measures: each needs a measured
        objective or constraint, and a predicted one cannot follow it (the predictors are fitted on measurements
        of the plain deployed model)."""
        steps = [(f"--pad-channels {self.pad_channels}", "unpadded measurements (their datasets and fit settings "
                  "record no padding), so they cannot predict a padded model", "--pad-channels")
                 ] if self.pad_channels is not None else []
        if self.gelu_epilogue:
            steps.append(("--gelu-epilogue", "unfused measurements (their datasets and fit settings record no GELU "
                          "epilogue), so they cannot predict a fused model", "--gelu-epilogue"))
        if not steps:
            return
        needs = {o.needs for o in parse_objectives(self.objectives)}
        needs |= {c.objective.needs for c in map(parse_constraint, self.constraints)}
        option, fitted, flag = steps[0]
        if "predict" in needs:
            raise ValueError(f"{option} with a predicted throughput/latency (predictor {self.predictor!r}): "
                             f"throughput predictors are fitted on {fitted}; measure it (--throughput measured) "
                             f"or drop {flag}")
        if "profile" not in needs:
            raise ValueError(f"{option} only applies when a measured throughput, latency or memory is an objective "
                             f"or constraint (this run: --objective {','.join(self.objectives)}); drop it")

    @property
    def is_resolved(self) -> bool:
        """Whether ``resolved`` filled the device and its defaults."""
        return self.device is not None and all(
            getattr(self, n) is not None for g in GROUPS for n in g.DEVICE_DEFAULTS  # type: ignore[attr-defined]
            if n != "trials" or self.timeout is None)

    def validated(self) -> "SearchSettings":
        """Settings are checked when they are made; kept for callers that still ask (returns self)."""
        return self

    def resolved(self, *, cuda: Optional[bool] = None) -> "SearchSettings":
        """Fill the device and the device-dependent defaults (GPU: paper protocol; CPU: a small, fast budget).

        ``cuda``: whether the trials' machines have CUDA (default: this process's torch says); the
        Ray driver passes the cluster's answer, its head may have no GPU. Settings already resolved
        are returned as they are.
        """
        if self.is_resolved:
            return self
        have_cuda = cuda_available() if cuda is None else cuda
        device = self.device or ("cuda" if have_cuda else "cpu")
        if device == "cuda" and not have_cuda:
            raise ValueError("device='cuda' but no CUDA GPU is available; use --device cpu")
        pick = 0 if device == "cuda" else 1
        filled: dict[str, Any] = {"device": device}
        for group in GROUPS:
            for name, values in group.DEVICE_DEFAULTS.items():  # type: ignore[attr-defined]
                if getattr(self, name) is None and not (name == "trials" and self.timeout is not None):
                    filled[name] = values[pick]
        return dataclasses.replace(self, **filled)

    def replace(self, **changes: Any) -> "SearchSettings":
        """A copy with ``changes`` (flat names), checked again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-ready (a space or storage object becomes its name)."""
        d = dataclasses.asdict(self)
        d["space"] = self.space if isinstance(self.space, str) else getattr(self.space, "name", "custom")
        d["storage"] = self.storage if isinstance(self.storage, (str, type(None))) else type(self.storage).__name__
        d["objectives"], d["constraints"] = list(self.objectives), list(self.constraints)
        return d


# ------------------------------------------------------------------------------------------ to another process
def absolute_url(url: str) -> str:
    """A storage URL whose file (journal, SQLite) is absolute, so another cwd opens the same file."""
    kind = storage_kind(url)
    if kind == "journal":
        return "journal:" + os.path.abspath(journal_path(url))
    if kind == "sqlite":
        db = url[len("sqlite:///"):]
        if db and db != ":memory:" and not os.path.isabs(db):
            return "sqlite:///" + os.path.abspath(db)
    return url


def settings_for_process(settings: SearchSettings) -> dict[str, Any]:
    """SearchSettings as a JSON-ready dict that another process (another cwd) resolves identically.

    Storage, results/data folders and a space file become absolute paths; a space object or dict
    is inlined (``SearchSpace.to_dict()``).
    """
    from search_spaces.space import SearchSpace, list_builtin_spaces, load_space  # torch: not for `nas --help`

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


def settings_from_dict(d: Mapping[str, Any]) -> SearchSettings:
    """Inverse of ``settings_for_process`` (unknown keys are an error, naming them)."""
    names = {f.name for f in dataclasses.fields(SearchSettings)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"settings JSON has unknown keys {unknown}; known: {sorted(names)}")
    return SearchSettings(**d)


def settings_for_study(settings: Mapping[str, Any], cwd: Optional[str] = None) -> dict[str, Any]:
    """Settings as a study stores them: paths under ``cwd`` relative, other absolute paths reduced to
    ``…/NAME`` (a study attribute must not carry the layout of the machine that ran it)."""
    base = os.path.abspath(cwd or os.getcwd())

    def path(p: str) -> str:
        if not os.path.isabs(p):
            return p
        rel = os.path.relpath(p, base)
        return rel if not rel.startswith("..") else f"…/{os.path.basename(p.rstrip('/'))}"

    def value(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        for prefix in ("sqlite:///", "journal:"):
            if v.startswith(prefix):
                return prefix + path(v[len(prefix):])
        return path(v) if v.startswith("/") else v

    return {k: value(v) for k, v in settings.items()}
