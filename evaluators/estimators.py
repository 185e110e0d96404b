"""Accuracy estimators: how good a network is, and what that number means.

A search's accuracy objective is one ``AccuracyEstimator`` object, plugged in like an Optuna
sampler: a small typed constructor says what it measures, and every reader asks the object
instead of testing a name.

=================== =====================================================================================
``identity``        a JSON-ready dict of what the number means (kind, data, resolution, recipe...): the
                    architecture cache requires the same identity, a study stores it, a resume compares it
``label``           what a person reads on axes and tables: ``top-1 % (train, 4 epochs, fmnist-odd)``
``cost``            what one estimate costs, in words (shown when a search starts)
``supports_rungs``  ``estimate`` validates on the way and calls ``report(step, value) -> stop``, at the
                    ``rungs`` given (successive halving) and after every epoch (ASHA):
                    ``intermediate_reports``
``retrains``        each estimate trains a fresh network, so another seed gives another sample
                    (``nas confirm`` measures the seed noise this way)
``prepare``         load what every estimate needs (data, a batch) once; a missing dataset fails here
``estimate``        one architecture -> ``Estimate`` (value, JSON details, failure, stopped, weights)
=================== =====================================================================================

Two kinds live here: ``ZeroCostEstimator`` (a registered zero-cost proxy scored on one batch of an
untrained network, ``evaluators.proxies``) and ``TrainingEstimator`` (the validation top-1 of a short
training run, ``evaluators.train``, optionally validated at successive-halving rungs). A third,
the weight-sharing supernet (``--proxy supernet:DIR``), is one more subclass with its own identity
(the supernet it inherits from), label, cost, and no rungs. ``nas.estimators`` builds one from a
search's settings by name; the rung decisions themselves need the study and live in ``nas.fidelity``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

from search_spaces import FasterViTConfig

from .checks import check_int, check_number
from .data import DataSplits, load_dataset, sample_batch
from .proxies import compute_proxies, get_proxy
from .train import TrainRecipe, train

__all__ = ["AccuracyEstimator", "Estimate", "Report", "Rung", "ZeroCostEstimator", "TrainingEstimator", "Halving",
           "rungs", "rung_steps", "eval_every", "jsonable"]

Report = Callable[[int, float], bool]  # (step, value so far) -> True to stop the estimate there


@dataclass(frozen=True)
class Rung:
    """A point where a training estimate reports: its budget in epochs and the optimizer step it falls on."""

    epochs: float
    step: int


@dataclass(frozen=True)
class Estimate:
    """One architecture's estimate. ``value`` is NaN when ``failure`` says why there is none."""

    value: float
    details: dict[str, Any]  # JSON-ready: what was measured (a trial records it)
    seconds: float
    failure: Optional[str] = None  # a NaN loss, a proxy error, a resolution the architecture cannot take
    stopped: bool = False  # report() asked to stop: ``value`` is the last one reported
    epochs: Optional[float] = None  # epochs trained (estimators that train)
    weights: Optional[str] = None  # the trained weights' file, when asked for and written

    @property
    def status(self) -> str:
        """``ok``, ``stopped`` or ``failed``."""
        return "failed" if self.failure else "stopped" if self.stopped else "ok"


class AccuracyEstimator(abc.ABC):
    """How good a network is (higher is better) and what that number means (module docstring)."""

    kind: ClassVar[str]
    supports_rungs: ClassVar[bool] = False
    retrains: ClassVar[bool] = False

    def __init__(self) -> None:
        self._num_classes: Optional[int] = None

    # what the number means -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-ready: everything the value depends on besides the architecture, the seed and the device."""

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The objective's label on axes, tables and the study's metric names."""

    @property
    @abc.abstractmethod
    def cost(self) -> str:
        """What one estimate costs, for people."""

    @property
    def rungs(self) -> list[Rung]:
        """Where ``estimate`` reports for successive halving (after ``prepare``; empty without rungs)."""
        return []

    @property
    def intermediate_reports(self) -> int:
        """How many times ``estimate`` calls ``report`` before its final value (0: it cannot be stopped early)."""
        return 0

    # measuring -------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, *, device: str, seed: int) -> None:
        """Load what every estimate needs, once; problems (a missing dataset, bad rungs) raise here."""

    @property
    def num_classes(self) -> int:
        """Classes of the estimator's task (after ``prepare``)."""
        if self._num_classes is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() was not called")
        return self._num_classes

    @abc.abstractmethod
    def estimate(self, cfg: FasterViTConfig, *, seed: int, report: Optional[Report] = None,
                 save_weights: Union[str, Path, None] = None) -> Estimate:
        """Estimate ``cfg`` (its head is set to ``num_classes``); a failure is an ``Estimate`` saying why."""

    def describe(self) -> str:
        """``label``, for messages."""
        return self.label


def _task_config(cfg: FasterViTConfig, resolution: Optional[int], num_classes: int) -> Union[FasterViTConfig, str]:
    """``cfg`` at the estimator's resolution (None: its own) with the task's classes, or why it cannot be."""
    try:
        return (cfg if resolution is None else cfg.at_resolution(resolution)).replace(num_classes=num_classes)
    except ValueError as e:
        return f"proxy resolution {resolution}: {e}"


def _failed(reason: str, started: float, details: Optional[dict[str, Any]] = None) -> Estimate:
    return Estimate(math.nan, details or {}, time.perf_counter() - started, failure=reason)


# ------------------------------------------------------------------------------------------ zero-cost
class ZeroCostEstimator(AccuracyEstimator):
    """A registered zero-cost proxy (``evaluators.proxies``) of the untrained network on one fixed batch."""

    kind = "zero-cost"

    def __init__(self, proxy: str, *, data: str, resolution: int, batch_size: int,
                 data_dir: Union[str, Path, None] = None):
        super().__init__()
        get_proxy(proxy)  # "unknown proxy 'nope'; known: ..."
        self.proxy = proxy
        self.data = data
        self.data_dir = data_dir
        self.resolution = check_int("proxy resolution", resolution, minimum=16, maximum=4096)
        self.batch_size = check_int("proxy batch size", batch_size, minimum=2)
        self._batch: Any = None
        self._device = "cpu"

    @property
    def identity(self) -> dict[str, Any]:
        return dict(kind=self.kind, proxy=self.proxy, data=self.data, resolution=self.resolution,
                    batch_size=self.batch_size)

    @property
    def label(self) -> str:
        return f"{self.proxy} score"

    @property
    def cost(self) -> str:
        return f"one batch of {self.batch_size} {self.data} images at {self.resolution} px, untrained network"

    def describe(self) -> str:
        return f"the zero-cost proxy {self.proxy!r}"

    def prepare(self, *, device: str, seed: int) -> None:
        if self._batch is not None:
            return
        ds = load_dataset(self.data, data_dir=self.data_dir)
        self._num_classes = ds.num_classes
        self._device = device
        self._batch = sample_batch(ds.train, batch_size=self.batch_size, resolution=self.resolution, seed=seed,
                                   device=device)

    def estimate(self, cfg: FasterViTConfig, *, seed: int, report: Optional[Report] = None,
                 save_weights: Union[str, Path, None] = None) -> Estimate:
        started = time.perf_counter()
        small = _task_config(cfg, self.resolution, self.num_classes)
        if isinstance(small, str):
            return _failed(small, started)
        results = compute_proxies(small, [self.proxy], self._batch, device=self._device, seed=seed)
        details = {name: jsonable(res) for name, res in results.items()}
        r = results[self.proxy]
        if r.error:
            return _failed(f"proxy {self.proxy}: {r.error}", started, details)
        if r.value is None or not math.isfinite(r.value):
            return _failed(f"proxy {self.proxy} gave a non-finite value ({r.value})", started, details)
        return Estimate(float(r.value), details, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------ training
_EPS = 1e-9


def rungs(min_budget: Optional[float], eta: Any, budget: float) -> list[float]:
    """Successive-halving rung budgets in epochs: ``B, E*B, E^2*B, ...`` below ``budget``, then ``budget`` itself.

    ``min_budget`` None: ``budget / eta**2`` (three rungs). Raises ValueError for ``eta`` not an
    integer >= 2, ``min_budget`` not > 0, or ``min_budget >= budget`` (nothing to halve).
    """
    check_int("--eta", eta, minimum=2)
    check_number("--train-epochs", budget, minimum=0, low_open=True)
    b = check_number("--min-budget", budget / eta ** 2 if min_budget is None else min_budget, minimum=0,
                     low_open=True)
    if b >= budget * (1 - _EPS):
        raise ValueError(f"--min-budget {b:g} must be smaller than the train budget ({budget:g} epochs, "
                         f"--train-epochs): successive halving needs at least one rung below it")
    out = []
    r = b
    while r < budget * (1 - _EPS):
        out.append(r)
        r *= eta
    return out + [float(budget)]


@dataclass(frozen=True)
class Halving:
    """Successive halving of a training budget: rungs at ``min_budget * eta**k`` epochs (``rungs``).

    The estimator only validates at the rungs and asks its ``report`` whether to go on; who goes on
    (the top ``1/eta`` of the peers at a rung) is decided by the search (``nas.fidelity``).
    """

    eta: int = 3
    min_budget: Optional[float] = None  # epochs of the first rung (None: budget / eta**2)

    def rungs(self, budget: float) -> list[float]:
        return rungs(self.min_budget, self.eta, budget)


def rung_steps(rung_epochs: Sequence[float], steps_per_epoch: int) -> list[int]:
    """Optimizer steps at each rung (``round(epochs * steps_per_epoch)``, at least 1), strictly increasing.

    Raises ValueError when two rungs fall on the same step (too few steps per epoch for the budgets).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"the training subset gives {steps_per_epoch} steps per epoch: give more images")
    steps = [max(1, round(e * steps_per_epoch)) for e in rung_epochs]
    for a, b, ea, eb in zip(steps, steps[1:], rung_epochs, rung_epochs[1:]):
        if b <= a:
            raise ValueError(f"rungs at {ea:g} and {eb:g} epochs are the same optimizer step ({a}) with "
                             f"{steps_per_epoch} step(s) per epoch: raise --min-budget or the training subset")
    return steps


def eval_every(steps: Sequence[int]) -> int:
    """The validation interval (steps) that validates at every rung: the gcd of the rung steps."""
    return math.gcd(*steps) if len(steps) > 1 else steps[0]


@dataclass
class _Trained:
    """What ``TrainingEstimator.prepare`` keeps: the splits (loaded once) and the rungs in steps."""

    splits: DataSplits
    device: str
    rungs: list[Rung] = field(default_factory=list)


class TrainingEstimator(AccuracyEstimator):
    """Validation top-1 (%) after a short training run from scratch (``evaluators.train.train`` with ``recipe``).

    The ``recipe`` (``TrainRecipe``: budget, batch, optimiser, resolution, subsets...) and ``data``
    say what the number means. ``halving``: validate at its rungs and ask ``report`` whether to go
    on (successive halving; the recipe's budget must be in epochs); without it the run validates
    once per epoch and reports each (what Ray's ASHA stops on).
    """

    kind = "train"
    supports_rungs = True
    retrains = True

    def __init__(self, recipe: TrainRecipe, *, data: str, data_dir: Union[str, Path, None] = None,
                 halving: Optional[Halving] = None):
        super().__init__()
        if not isinstance(recipe, TrainRecipe):
            raise ValueError(f"recipe={recipe!r} must be an evaluators.train.TrainRecipe")
        if halving is not None and recipe.epochs is None:
            raise ValueError("successive halving needs the recipe's budget in epochs (TrainRecipe(epochs=...))")
        self.recipe = recipe
        self.data = data
        self.data_dir = data_dir
        self.halving = halving
        self.rung_epochs = halving.rungs(recipe.epochs) if halving is not None and recipe.epochs else []
        self._run: Optional[_Trained] = None

    @property
    def epochs(self) -> float:
        """The budget in epochs (1 when the recipe gives neither epochs nor steps, as ``train`` does)."""
        return self.recipe.epochs if self.recipe.epochs is not None else 1.0

    @property
    def identity(self) -> dict[str, Any]:
        return dict(kind=self.kind, data=self.data, recipe=self.recipe.to_dict(), rungs=self.rung_epochs)

    @property
    def label(self) -> str:
        budget = f"{self.recipe.steps} steps" if self.recipe.steps is not None else f"{self.epochs:g} epochs"
        return f"top-1 % (train, {budget}, {self.data})"

    @property
    def cost(self) -> str:
        r = self.recipe
        budget = f"{r.steps} step(s)" if r.steps is not None else f"{self.epochs:g} epoch(s)"
        images = f"{r.subset:,}" if r.subset else "all"
        at = f" at {r.resolution} px" if r.resolution else ""
        rungs = ", ".join(f"{e:g}" for e in self.rung_epochs[:-1])
        halving = f", successive halving at {rungs} epochs" if self.rung_epochs else ""
        return f"training {budget} on {images} {self.data} images (batch {r.batch_size}){at}{halving}"

    @property
    def rungs(self) -> list[Rung]:
        return list(self._prepared().rungs)

    @property
    def intermediate_reports(self) -> int:
        return max(0, math.ceil(self.epochs) - 1) if self.recipe.steps is None else 0

    def _prepared(self) -> _Trained:
        if self._run is None:
            raise RuntimeError("TrainingEstimator.prepare() was not called")
        return self._run

    def prepare(self, *, device: str, seed: int) -> None:
        if self._run is not None:
            return
        splits = load_dataset(self.data, data_dir=self.data_dir)
        n_train = len(splits.train) if self.recipe.subset is None else min(self.recipe.subset, len(splits.train))
        rungs: list[Rung] = []
        if self.rung_epochs:
            steps = rung_steps(self.rung_epochs, n_train // self.recipe.batch_size)  # refused before any trial
            rungs = [Rung(e, s) for e, s in zip(self.rung_epochs, steps)]
        self._num_classes = splits.num_classes
        self._run = _Trained(splits, device, rungs)

    def estimate(self, cfg: FasterViTConfig, *, seed: int, report: Optional[Report] = None,
                 save_weights: Union[str, Path, None] = None) -> Estimate:
        started = time.perf_counter()
        run = self._prepared()
        small = _task_config(cfg, self.recipe.resolution, self.num_classes)
        if isinstance(small, str):
            return _failed(small, started)
        steps = [r.step for r in run.rungs]
        recipe = self.recipe.replace(eval_every=eval_every(steps)) if steps else self.recipe
        res = train(small, recipe, data=run.splits, seed=seed, device=run.device, report=report, progress=False,
                    save_weights=save_weights)
        details = {"train": res.to_dict()}
        seconds = time.perf_counter() - started
        if res.status == "nan":
            return Estimate(math.nan, details, seconds, failure=f"train proxy: {res.reason}", epochs=res.epochs)
        stopped = res.status == "pruned"
        weights = None
        if save_weights is not None and Path(save_weights).is_file():
            if stopped:  # a run stopped at a rung is not a model anyone exports
                Path(save_weights).unlink()
            else:
                # trained at the recipe's resolution; parameter shapes do not depend on it, so the
                # weights load into the full-resolution config (nas export marks them "trained")
                weights = str(Path(save_weights).resolve())
        return Estimate(float(res.top1), details, seconds, stopped=stopped, epochs=res.epochs, weights=weights)


# ------------------------------------------------------------------------------------------ helpers
def jsonable(obj: Any) -> Any:
    """``obj`` as JSON-ready values: dataclasses as dicts, tuples as lists, non-finite floats as strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
