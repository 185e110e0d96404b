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
``confirmation``    how a study's front is confirmed by training (``nas confirm``): the estimator to measure
                    with, new seeds per point, whether the search value is one more sample of it
=================== =====================================================================================

Three kinds live here: ``ZeroCostEstimator`` (a registered zero-cost proxy scored on one batch of an
untrained network, ``evaluators.proxies``), ``TrainingEstimator`` (the validation top-1 of a short
training run, ``evaluators.train``, optionally validated at successive-halving rungs) and
``SupernetEstimator`` (``--proxy supernet:DIR``: the top-1 of the subnet with the weights of a
trained weight-sharing supernet, ``evaluators.supernet``, after BatchNorm recalibration; its
identity is the supernet it inherits from, and it has no rungs). ``nas.estimators`` builds one from a
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
from search_spaces.elastic import SupernetError
from search_spaces.space import SearchSpace

from .augment import Augment
from .checks import check_int, check_number
from .data import DataSplits, load_dataset, sample_batch
from .proxies import compute_proxies, get_proxy
from .supernet import InheritedAccuracy, load_supernet, space_identity
from .supernet_folder import SupernetFolder
from .train import TrainRecipe, train

__all__ = ["AccuracyEstimator", "Confirmation", "Estimate", "Report", "Rung", "ZeroCostEstimator", "TrainingEstimator",
           "SupernetEstimator", "Halving", "rungs", "rung_steps", "eval_every", "jsonable"]

Report = Callable[[int, float], bool]  # (step, value so far) -> True to stop the estimate there


@dataclass(frozen=True)
class Rung:
    """A point where a training estimate reports: its budget in epochs and the optimizer step it falls on."""

    epochs: float
    step: int


@dataclass(frozen=True)
class Confirmation:
    """How ``nas confirm`` checks a front: measure each point again with ``estimator`` under ``seeds`` new seeds.

    ``paired_with_search``: the search value is one more sample of the same number (a training
    estimator re-trained with another seed), so (re-trained - search) measures the seed noise; else
    (a supernet's inherited accuracy) only the new samples compare with each other. ``kind`` labels
    the entries (``retrain``, ``standalone``).
    """

    estimator: "AccuracyEstimator"
    seeds: int
    paired_with_search: bool
    kind: str


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
    confirmable: ClassVar[bool] = False  # ``confirmation()`` gives a way to confirm a front by training

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

    def check_space(self, space: SearchSpace) -> None:  # noqa: B027 (a hook: most estimators score any space)
        """Refuse (ValueError) a search space this estimator cannot score, before any trial runs."""

    def confirmation(self) -> Optional[Confirmation]:
        """How a front found with this estimator is confirmed by training (None: it cannot be)."""
        return None


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
    confirmable = True

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

    def confirmation(self) -> Confirmation:
        """Re-train at the full budget (no rungs) with another seed: the search value is the pair's other sample."""
        full = self if self.halving is None else TrainingEstimator(self.recipe, data=self.data, data_dir=self.data_dir)
        return Confirmation(full, seeds=1, paired_with_search=True, kind="retrain")

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


# ------------------------------------------------------------------------------------------ supernet
class SupernetEstimator(AccuracyEstimator):
    """Inherited-weight top-1 (%) of the subnet of a trained supernet (``nas supernet train --out DIR``).

    Each estimate makes the config the supernet's active subnet, re-estimates its BatchNorm
    statistics on a fixed set of training images and evaluates it on the validation split: no
    training, a second or two per architecture on a GPU. The number is about the supernet's data at
    its training resolution; the config is scored there (``at_resolution``, windows per side
    kept). Weights are not written per trial (a search scores thousands): ``nas export`` extracts
    the chosen point's weights from the supernet (``evaluators.supernet.extract_weights``).
    """

    kind = "supernet"
    confirmable = True

    def __init__(self, directory: Union[str, Path], *, data: Optional[str] = None,
                 data_dir: Union[str, Path, None] = None, calib_images: Optional[int] = None,
                 val_subset: Optional[int] = None):
        super().__init__()
        folder = SupernetFolder(directory)
        if not folder.exists():
            raise ValueError(f"--proxy supernet:{directory}: {folder.path} holds no trained supernet "
                             f"(no {folder.meta_path.name}; train one with `nas supernet train --out {directory}`)")
        meta = folder.read()
        if meta.get("status") != "done":
            raise ValueError(f"--proxy supernet:{directory}: the supernet is not trained to the end (status "
                             f"{meta.get('status')!r}, step {meta.get('steps_done')} of {meta.get('total_steps')}); "
                             f"finish it with the same `nas supernet train` command")
        self.path = folder.path.resolve()
        self.meta = meta
        self.data = data or str(meta["data"])
        self.data_dir = data_dir
        self.calib_images = check_int("calib_images", calib_images, minimum=1, optional=True)
        self.val_subset = check_int("val_subset", val_subset, minimum=1, optional=True)
        self._acc: Optional[InheritedAccuracy] = None

    @property
    def epochs(self) -> float:
        return float(self.meta["recipe"]["epochs"])

    @property
    def identity(self) -> dict[str, Any]:
        m = self.meta  # what was trained, not where the folder lies: a moved or copied supernet stays the same
        return dict(kind=self.kind, space=m["space"]["name"], trained_on=m["data"],
                    data=self.data, resolution=m["resolution"], recipe=m["recipe"], completed=m.get("completed"),
                    steps=m.get("steps_done"), calib_images=self.calib_images, val_subset=self.val_subset)

    @property
    def label(self) -> str:
        return f"top-1 % (supernet, {self.epochs:g} epochs, {self.data})"

    @property
    def cost(self) -> str:
        calib = self.calib_images or (self.meta.get("evaluation") or {}).get("calib_images", "the recorded number of")
        val = f"{self.val_subset:,}" if self.val_subset else "all"
        return (f"BatchNorm recalibration on {calib} {self.data} training images and validation on {val} "
                f"{self.data} images, with the weights of the supernet in {self.path} (no training)")

    def describe(self) -> str:
        return f"the supernet in {self.path} ({self.meta['space']['name']} space, {self.epochs:g} epochs)"

    def confirmation(self) -> Confirmation:
        """Train each point stand-alone, with the supernet's own recipe, data, budget and resolution, twice."""
        r = self.meta["recipe"]
        res = self.meta["resolution"]
        augment = Augment(crop=r.get("augment_crop", 0.0), flip=bool(r.get("augment_flip", False)))
        recipe = TrainRecipe(epochs=float(r["epochs"]), batch_size=int(r["batch_size"]), lr=float(r["lr"]),
                             lr_scaling=r["lr_scaling"], weight_decay=float(r["weight_decay"]),
                             warmup=float(r["warmup"]), label_smoothing=float(r["label_smoothing"]),
                             grad_clip=r.get("grad_clip"), drop_path_rate=r.get("drop_path_rate"),
                             augment=augment if augment.active else None, resolution=int(res[0]),
                             subset=r.get("subset"), val_subset=self.val_subset)
        return Confirmation(TrainingEstimator(recipe, data=str(self.meta["data"]), data_dir=self.data_dir), seeds=2,
                            paired_with_search=False, kind="standalone")

    def check_space(self, space: SearchSpace) -> None:
        if space_identity(space)["definition"] != self.meta["space"]["definition"]:
            raise ValueError(f"--space {space.name!r} is not the space the supernet in {self.path} was trained on "
                             f"({self.meta['space']['name']!r}, {self.meta['space'].get('source')}): search that "
                             f"space (narrow it with --constraint) or train a supernet of this one")

    def prepare(self, *, device: str, seed: int) -> None:
        if self._acc is not None:
            return
        sn = load_supernet(self.path, device=device)
        self._acc = InheritedAccuracy.for_supernet(sn, self.data, calib_images=self.calib_images,
                                                   val_subset=self.val_subset, device=device, data_dir=self.data_dir)
        self._num_classes = sn.model.num_classes

    def estimate(self, cfg: FasterViTConfig, *, seed: int, report: Optional[Report] = None,
                 save_weights: Union[str, Path, None] = None) -> Estimate:
        started = time.perf_counter()
        if self._acc is None:
            raise RuntimeError("SupernetEstimator.prepare() was not called")
        try:
            top1, seconds = self._acc(cfg.replace(num_classes=self.num_classes))
        except SupernetError as e:
            return _failed(f"the supernet cannot run this config: {e}", started)
        details = {"supernet": dict(top1=top1, seconds=seconds, path=str(self.path), epochs=self.epochs,
                                    data=self.data, resolution=self.meta["resolution"])}
        return Estimate(top1, details, time.perf_counter() - started)


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
