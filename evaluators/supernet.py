"""A once-for-all FasterViT supernet: train it (``nas supernet train``), read accuracies off it, export.

``train_supernet(space, data=..., out=DIR, epochs=E)`` trains one ``ElasticFasterViT`` of the
space with the sandwich rule and in-place distillation (``evaluators.supernet_step``) on the fast
trainer's pieces: data resident on the device (``BatchLoader``), bf16 autocast and channels-last
on CUDA, fused AdamW (``make_optimizer``), linear warm-up and cosine decay (``lr_at``). The step is
eager: the subnets change shape every forward, so CUDA graphs and ``torch.compile`` do not apply.

Nothing is lost when a run stops: the output folder (``evaluators.supernet_folder``) holds an
atomic checkpoint (model, optimizer, step, RNG and batch-iterator states), written every
``checkpoint_every`` seconds, on SIGTERM, when ``time_budget`` runs out (a long training is cut
into runs of a few minutes: run the same command again) and at the end; the resumed run continues
bit-identically on the CPU. A NaN loss stops the run with the reason recorded (the last good
checkpoint stays). Under ``torchrun`` the run is data-parallel (DDP; every rank draws the same
subnets from the shared seed; BatchNorm statistics are summed over the ranks, so N processes
train as one process on the global batch).

Reading it: ``load_supernet(DIR)``, ``InheritedAccuracy`` / ``supernet_top1(cfg, supernet)``
(top-1 with inherited weights after BatchNorm recalibration on training images, and the seconds
it took) and ``extract_weights(cfg, DIR)`` (a plain ``FasterViT`` with the subnet's weights and
recalibrated statistics, for export).
"""

from __future__ import annotations

import inspect
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
import torch.nn as nn

from search_spaces import FasterViT, FasterViTConfig, resolve_config
from search_spaces.config import as_resolution
from search_spaces.elastic import Capacity, ElasticFasterViT, SupernetError, extreme_configs
from search_spaces.space import SearchSpace, load_space

from .augment import Augment
from .checks import at_least, in_range
from .data import BatchLoader, DataSplits, load_dataset, normalization
from .profiler import resolve_device
from .supernet_folder import SupernetFolder
from .supernet_step import (
    STEP_MODES,
    Distributed,
    ResumableBatches,
    SandwichStep,
    calibration_batches,
    distributed_setup,
    make_sandwich_step,
    recalibrate_bn,
    set_sync_batchnorm,
    subnet_plan,
)
from .train import check_optimisation, evaluate, lr_at, make_optimizer, scaled_lr, set_lr, train_proxy

__all__ = ["SupernetRecipe", "SupernetResult", "Supernet", "InheritedAccuracy", "train_supernet", "load_supernet",
           "supernet_top1", "extract_weights", "SupernetError", "DEFAULT_CALIB_IMAGES", "PAUSED_EXIT_CODE"]

#: The trainer's defaults (``train_proxy``'s), so the supernet follows the project's recipe.
_PROXY = {name: p.default for name, p in inspect.signature(train_proxy).parameters.items()}
#: Training images each subnet's BatchNorm statistics are re-estimated from before evaluation.
DEFAULT_CALIB_IMAGES = 2048
#: Exit status of ``nas supernet train`` when it stopped to be resumed (time budget, SIGTERM).
PAUSED_EXIT_CODE = 75


@dataclass(frozen=True)
class SupernetRecipe:
    """How the supernet is trained (recorded in its folder; a resume must use the same).

    ``lr`` is the peak AdamW learning rate at batch 256, scaled to ``batch_size`` by
    ``lr_scaling`` (``evaluators.train.scaled_lr``); ``warmup`` the fraction of steps of linear
    warm-up before the cosine decay. ``sandwich_n`` random subnets train with the largest and
    smallest at every step; ``distill`` makes all but the largest learn from its predictions
    (else from the labels). ``drop_path_rate`` (stochastic depth of the largest only; None: the
    largest config's own). ``subset``: training images used (a fixed seeded subset; None: all).
    """

    epochs: float
    batch_size: int = _PROXY["batch_size"]
    lr: float = _PROXY["lr"]
    lr_scaling: str = _PROXY["lr_scaling"]
    weight_decay: float = _PROXY["weight_decay"]
    warmup: float = _PROXY["warmup"]
    label_smoothing: float = _PROXY["label_smoothing"]
    grad_clip: Optional[float] = _PROXY["grad_clip"]
    drop_path_rate: Optional[float] = None
    sandwich_n: int = 2
    distill: bool = True
    subset: Optional[int] = None
    augment_crop: float = 0.0
    augment_flip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        in_range("epochs", self.epochs, low=0.0, low_open=True)
        check_optimisation(self)
        at_least("sandwich_n", self.sandwich_n, 0)
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill={self.distill!r} must be true or false")
        if self.subset is not None:
            at_least("subset", self.subset)
        self.augment()  # validates crop and flip
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")

    def augment(self) -> Optional[Augment]:
        """The on-device augmentation of the training batches (None when it does nothing)."""
        a = Augment(crop=self.augment_crop, flip=self.augment_flip)
        return a if a.active else None

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON (part of the run's identity)."""
        return asdict(self)

    @classmethod
    def from_kwargs(cls, epochs: float, **kwargs: Any) -> "SupernetRecipe":
        """The recipe of budget ``epochs`` with ``kwargs`` set; unknown settings are refused by name."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown supernet recipe setting(s) {unknown}; known: {sorted(names - {'epochs'})}")
        return cls(epochs=epochs, **kwargs)


@dataclass
class SupernetResult:
    """What one ``train_supernet`` call did (the folder's ``supernet.json`` has the whole run)."""

    status: str  # done | paused | nan
    reason: str
    out: str
    steps_done: int
    total_steps: int
    epochs_done: float
    session_steps: int = 0
    session_seconds: float = 0.0
    train_seconds: float = 0.0
    images_per_s: float = float("nan")
    subnet_images_per_s: float = float("nan")
    steady_images_per_s: float = float("nan")  # after this call's first SETTLE_STEPS (warm-up, graph capture)
    step_mode: str = ""
    final_top1: dict[str, float] = field(default_factory=dict)
    device: str = ""
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def space_identity(space: SearchSpace) -> dict[str, Any]:
    """The space as a supernet folder records it: name, source and full definition."""
    return dict(name=space.name, source=space.source, definition=space.to_dict())


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
class _StopSignal:
    """SIGTERM asks the loop to checkpoint and stop at the next step boundary (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class _Run:
    """Everything one training invocation owns."""

    space: SearchSpace
    recipe: SupernetRecipe
    folder: SupernetFolder
    dist: Distributed
    device: torch.device
    amp: bool
    channels_last: bool
    model: ElasticFasterViT
    optimizer: torch.optim.Optimizer
    lr_t: Optional[torch.Tensor]
    step_fn: SandwichStep
    batches: ResumableBatches
    val: Any
    calib_loader: BatchLoader
    total: int
    per_epoch: int
    warmup_steps: int
    peak_lr: float
    largest: FasterViTConfig
    smallest: FasterViTConfig
    meta: dict[str, Any]
    calib_batches: int
    step_mode: str = ""


def train_supernet(
    space: Union[str, Path, Mapping[str, Any], SearchSpace],
    *,
    data: Union[str, DataSplits],
    out: Union[str, Path],
    epochs: float,
    resolution: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
    time_budget: Optional[float] = None,
    max_steps: Optional[int] = None,
    checkpoint_every: float = 300.0,
    val_subset: Optional[int] = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    data_dir: Union[str, Path, None] = None,
    download: bool = False,
    amp: bool = True,
    channels_last: bool = True,
    progress: bool = True,
    step_mode: str = "auto",
    **recipe: Any,
) -> SupernetResult:
    """Train (or resume) the supernet of ``space`` on ``data`` into the folder ``out``.

    Args:
        space: search space (built-in name, YAML file, dict or ``SearchSpace``); every knob must
            share weights (``search_spaces.elastic``), else ``SupernetError`` before training.
        data: dataset name (``evaluators.data.load_dataset``) or loaded ``DataSplits``.
        out: the run's folder: new or empty, or holding this very run (then it resumes); a folder
            with another space's (or data's, resolution's, recipe's) supernet is refused.
        epochs: the budget E (fractional allowed); one epoch is ``len(train) // batch_size`` steps.
        resolution: training resolution R (default: the space's); configs are moved there with
            ``at_resolution`` (windows per side kept).
        device: ``cuda``/``cpu`` (default CUDA when available; under ``torchrun`` each rank its
            ``LOCAL_RANK`` GPU).
        time_budget: seconds this call may take (setup included); it checkpoints and returns
            ``status="paused"`` before the budget would run out (at least one step is made).
        max_steps: pause after this many steps in this call (another way to cut a long run).
        checkpoint_every: seconds between checkpoints (also written on SIGTERM and at the end).
        val_subset: validation images for the final top-1 of the largest and smallest subnets.
        calib_images: training images each evaluated subnet's BatchNorm statistics come from.
        amp, channels_last: bf16 autocast and channels-last memory (CUDA only).
        step_mode: ``auto`` (the largest and smallest subnets from one CUDA graph on a single
            CUDA device, eager otherwise), ``graph`` (that, or an error) or ``eager``; how the
            same step is run, so not part of the run's identity (each session records its own).
        recipe: ``SupernetRecipe`` fields (``batch_size``, ``lr``, ``sandwich_n``, ...).

    Returns the ``SupernetResult`` of this call (``status`` done, paused or nan, with a reason).
    """
    t_start = time.perf_counter()
    rec = SupernetRecipe.from_kwargs(epochs, **recipe)
    if time_budget is not None:
        in_range("time_budget", time_budget, low=0.0, low_open=True)
    if max_steps is not None:
        at_least("max_steps", max_steps)
    in_range("checkpoint_every", checkpoint_every, low=0.0, low_open=True)
    at_least("calib_images", calib_images)
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode={step_mode!r} must be one of {', '.join(STEP_MODES)}")
    if val_subset is not None:
        at_least("val_subset", val_subset)
    sp = load_space(space)
    Capacity.of_space(sp)  # a knob that cannot share weights: one clear error before anything else
    dev = resolve_device(device)
    dist = distributed_setup(dev)
    try:
        if dist.active and dev.type == "cuda":
            dev = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(dev)
        folder = SupernetFolder(out)
        folder.check_new_or_same(dict(space=space_identity(sp)))  # before the data is loaded
        splits = data if isinstance(data, DataSplits) else load_dataset(data, data_dir=data_dir, download=download)
        res = as_resolution(resolution if resolution is not None else sp.apply({}).resolution, "resolution", 16)
        identity = dict(space=space_identity(sp), data=splits.name, resolution=list(res),
                        num_classes=splits.num_classes, recipe=rec.to_dict())
        prior = folder.check_new_or_same(identity)
        if prior is not None and prior.get("status") == "done":
            return _result_of(prior, folder, dev, dist, session_steps=0, seconds=time.perf_counter() - t_start)
        if prior is not None and prior.get("status") == "nan":
            raise ValueError(f"the supernet run in {folder.path} stopped on a NaN loss ({prior.get('reason')}); "
                             f"train into a new --out (e.g. with a lower --lr)")
        run = _prepare(sp, rec, splits, res, folder, prior, identity, dist, dev, amp, channels_last, val_subset,
                       calib_images, step_mode)
        return _train(run, _Clock(t_start, time_budget, max_steps), checkpoint_every, progress)
    finally:
        dist.close()


def _prepare(sp: SearchSpace, rec: SupernetRecipe, splits: DataSplits, res: tuple[int, int], folder: SupernetFolder,
             prior: Optional[dict[str, Any]], identity: dict[str, Any], dist: Distributed, dev: torch.device,
             amp: bool, channels_last: bool, val_subset: Optional[int], calib_images: int,
             step_mode: str = "auto") -> _Run:
    """Model, optimizer, data, subnets and the folder's record, restored from its checkpoint."""
    n_cls = splits.num_classes
    if prior is not None:
        largest = FasterViTConfig.from_dict(prior["largest"])
        smallest = FasterViTConfig.from_dict(prior["smallest"])
    else:
        largest, smallest = (c.replace(num_classes=n_cls) for c in extreme_configs(sp, res))
    use_amp = amp and dev.type == "cuda"
    cl = channels_last and dev.type == "cuda"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rec.seed)
        model = ElasticFasterViT(sp, resolution=res, num_classes=n_cls)
    model = model.to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    train = splits.train.subset(rec.subset, seed=0).to(dev)
    val = splits.val.subset(val_subset, seed=0).to(dev)
    mean, std = normalization()
    loader = BatchLoader(train, batch_size=rec.batch_size, resolution=res, device=dev, shuffle=True, seed=rec.seed,
                         drop_last=True, mean=mean, std=std, channels=largest.in_chans, augment=rec.augment())
    calib_bs = min(rec.batch_size, len(train))
    calib_loader = BatchLoader(train, batch_size=calib_bs, resolution=res, device=dev, shuffle=True,
                               seed=rec.seed + 1, drop_last=True, mean=mean, std=std, channels=largest.in_chans)
    val_loader = BatchLoader(val, batch_size=2 * rec.batch_size, resolution=res, device=dev, shuffle=False,
                             drop_last=False, mean=mean, std=std, channels=largest.in_chans)
    batches = ResumableBatches(loader, rank=dist.rank, world=dist.world, channels_last=cl)
    per_epoch = len(loader)
    total = max(1, round(rec.epochs * per_epoch))
    peak = scaled_lr(rec.lr, rec.batch_size, rec.lr_scaling)
    optimizer, lr_t = make_optimizer(model, lr=peak, weight_decay=rec.weight_decay, device=dev)
    wrapped: nn.Module = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        set_sync_batchnorm(model, dist.group)
        wrapped = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True,
                      broadcast_buffers=False)
    dpr = rec.drop_path_rate if rec.drop_path_rate is not None else largest.drop_path_rate

    def plan(step: int) -> list[FasterViTConfig]:
        return subnet_plan(sp, step, seed=rec.seed, n_random=rec.sandwich_n, resolution=res, largest=largest,
                           smallest=smallest, drop_path_rate=dpr)

    step_fn, mode_why = make_sandwich_step(step_mode, model, optimizer, plan, device=dev, distributed=dist.active,
                                           label_smoothing=rec.label_smoothing, grad_clip=rec.grad_clip,
                                           distill=rec.distill, amp=use_amp, wrapped=wrapped)
    meta = dict(prior) if prior is not None else dict(
        identity, created=_now(), largest=largest.to_dict(), smallest=smallest.to_dict(),
        capacity=model.capacity.to_dict(), total_steps=total, steps_per_epoch=per_epoch, steps_done=0,
        train_seconds=0.0, history=[], sessions=[], final_top1={}, train_images=len(train), val_images=len(val),
        supernet_params=sum(p.numel() for p in model.parameters()))
    meta["evaluation"] = dict(calib_images=calib_images, calib_batch_size=calib_bs)  # what final_top1 uses
    calib_batches = max(1, -(-calib_images // calib_bs))
    return _Run(sp, rec, folder, dist, dev, use_amp, cl, model, optimizer, lr_t, step_fn, batches, val_loader,
                calib_loader, total, per_epoch, int(round(rec.warmup * total)), peak, largest, smallest, meta,
                calib_batches, mode_why)


def _rng_state(dev: torch.device) -> dict[str, Any]:
    return dict(cpu=torch.get_rng_state(), cuda=torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None)


def _checkpoint(run: _Run, done: int) -> float:
    """Write the checkpoint and the record (rank 0); returns the seconds it took."""
    t = time.perf_counter()
    if run.dist.main:
        run.folder.save_checkpoint(dict(model=run.model.state_dict(), optimizer=run.optimizer.state_dict(), step=done,
                                        rng=_rng_state(run.device), batches=run.batches.state()))
        run.folder.write(run.meta)
    return time.perf_counter() - t


def _restore(run: _Run) -> int:
    """Load the folder's checkpoint into the run (every rank); returns the steps already done."""
    state = run.folder.load_checkpoint(map_location="cpu")
    if state is None and int(run.meta.get("steps_done") or 0) > 0:
        raise ValueError(f"{run.folder.path} records {run.meta['steps_done']} steps done but holds no checkpoint "
                         f"(removed?); a resume would start again from step 0: train into a new folder")
    if state is None:
        torch.manual_seed(run.recipe.seed)
        if run.device.type == "cuda":
            torch.cuda.manual_seed(run.recipe.seed)
        return 0
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.batches.restore(state["batches"])
    torch.set_rng_state(state["rng"]["cpu"])
    if run.device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], run.device)
    return int(state["step"])


#: steps of a call before its steady rate is timed (eager warm-up, CUDA-graph capture)
SETTLE_STEPS = 10


@dataclass
class _Clock:
    """Timing of this invocation: step seconds, checkpoint seconds and the budget rule."""

    t_start: float
    budget: Optional[float]
    max_steps: Optional[int] = None
    train_seconds: float = 0.0
    steps: int = 0
    checkpoint_seconds: float = 0.0
    settle_seconds: Optional[float] = None  # train seconds of the first SETTLE_STEPS steps
    last_checkpoint: float = field(default_factory=time.perf_counter)

    def step_seconds(self) -> float:
        return self.train_seconds / self.steps if self.steps else 0.0

    def must_pause(self) -> bool:
        """True when this call's step limit is reached, or one more step would overrun the budget."""
        return (self.max_steps is not None and self.steps >= self.max_steps) or self.time_short()

    def time_short(self, reserve: float = 0.0) -> bool:
        """True when one more step, a checkpoint and ``reserve`` seconds would overrun the time
        budget (never before the first step: every call makes progress)."""
        if self.budget is None or self.steps == 0:
            return False
        left = self.budget - (time.perf_counter() - self.t_start)
        return left < 2 * self.step_seconds() + self.checkpoint_seconds + reserve


def _train(run: _Run, clock: _Clock, checkpoint_every: float, progress: bool) -> SupernetResult:
    t_start = clock.t_start
    session: dict[str, Any] = dict(started=_now(), device=_device_name(run.device), world_size=run.dist.world,
                                   step_mode=run.step_mode, steps=[0, 0], status="running", reason="")
    bar = None
    status, reason = "running", ""
    cuda_gens = [run.device.index] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_gens), _StopSignal() as stop:
        done = _restore(run)
        session["steps"] = [done, done]
        run.meta.setdefault("sessions", []).append(session)
        run.meta.update(status="running", reason="")
        if run.dist.main:
            run.folder.write(run.meta)
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=run.total, initial=done, desc=f"supernet {run.space.name}", unit="step",
                           dynamic_ncols=True)
        try:
            status, reason, done = _loop(run, done, clock, stop, bar, checkpoint_every)
            if status == "running" and clock.time_short(_eval_seconds(run, clock)):
                status, reason = "paused", (f"time budget of {clock.budget:g} s reached before the final evaluation "
                                            f"(all {run.total} steps done); run the same command again to finish")
            elif status == "running":  # every step done: evaluate and write the weights
                status, reason = _finish(run)
        finally:
            if bar is not None:
                bar.close()
        session.update(ended=_now(), status=status, reason=reason, steps=[session["steps"][0], done],
                       seconds=time.perf_counter() - t_start, train_seconds=clock.train_seconds)
        run.meta.update(status=status, reason=reason, updated=_now())
        if status == "paused":
            _checkpoint(run, done)
        elif run.dist.main:
            run.folder.write(run.meta)
            if status == "done":  # the weights are written; optimizer states are not needed any more
                run.folder.remove_checkpoint()
    return _result_of(run.meta, run.folder, run.device, run.dist, session_steps=clock.steps,
                      seconds=time.perf_counter() - t_start, clock=clock, batch=run.recipe.batch_size,
                      subnets=2 + run.recipe.sandwich_n, step_mode=run.step_mode)


def _loop(run: _Run, done: int, clock: _Clock, stop: _StopSignal, bar: Any,
          checkpoint_every: float) -> tuple[str, str, int]:
    """The training steps; returns (status, reason, steps done). Status "running": all done."""
    run.model.train()
    every = max(1, run.total // 200)
    while done < run.total:
        t = time.perf_counter()
        set_lr(run.optimizer, run.lr_t, run.peak_lr * lr_at(done, total=run.total, warmup_steps=run.warmup_steps))
        x, y = run.batches.next()
        losses = run.step_fn(x, y, done)
        values = [float(v) for _, v in losses]  # one host sync per step (after all its subnets)
        bad = next(((cfg, v) for cfg, v in losses if not math.isfinite(float(v))), None)
        clock.train_seconds += time.perf_counter() - t
        clock.steps += 1
        if clock.steps == SETTLE_STEPS:
            clock.settle_seconds = clock.train_seconds
        pause = stop.requested or clock.must_pause()
        flags = run.dist.all_sum([1.0 if bad else 0.0, 1.0 if pause else 0.0], run.device)
        if flags[0] > 0:
            which = f"subnet {bad[0].summary()}" if bad else "a subnet on another rank"
            lr = run.peak_lr * lr_at(done, total=run.total, warmup_steps=run.warmup_steps)
            return "nan", (f"loss of {which} became {bad[1] if bad else 'nan'} at step {done + 1} of {run.total} "
                           f"(lr {lr:.3g})"), done
        done += 1
        run.meta.update(steps_done=done, train_seconds=run.meta.get("train_seconds", 0.0) + time.perf_counter() - t)
        if done % every == 0 or done == run.total:
            run.meta["history"].append(dict(step=done, loss_largest=values[0],
                                            loss_others=sum(values[1:]) / max(1, len(values) - 1)))
        if bar is not None:
            bar.update(1)
            if done % 10 == 0 or done == run.total:
                bar.set_postfix(loss=f"{values[0]:.3f}", refresh=False)
        if done < run.total and flags[1] > 0:
            why = ("stopped by SIGTERM" if stop.requested else f"{clock.max_steps} steps made (max_steps)"
                   if clock.max_steps is not None and clock.steps >= clock.max_steps else
                   f"time budget of {clock.budget:g} s reached")
            return "paused", f"{why} at step {done} of {run.total}; run the same command again to continue", done
        if done < run.total and time.perf_counter() - clock.last_checkpoint > checkpoint_every:
            clock.checkpoint_seconds = _checkpoint(run, done)
            clock.last_checkpoint = time.perf_counter()
    return "running", "", done


def _eval_seconds(run: _Run, clock: _Clock) -> float:
    """Expected seconds of the final evaluation (two subnets: calibration + validation forwards),
    from this session's training speed (a forward ~ 1/3 of a training pass)."""
    if not clock.steps:
        return 0.0
    per_image = clock.train_seconds / (clock.steps * run.recipe.batch_size * (2 + run.recipe.sandwich_n) * 3)
    images = run.calib_batches * run.calib_loader.batch_size + len(run.val.data)
    return 2 * images * per_image


def _finish(run: _Run) -> tuple[str, str]:
    """Evaluate the largest and smallest subnets and write the weights (rank 0)."""
    if run.dist.main:
        run.folder.save_weights(run.model.state_dict())  # as trained (evaluating recalibrates the norms)
        acc = InheritedAccuracy(run.model, val_loader=run.val, calib_loader=run.calib_loader,
                                calib_batches=run.calib_batches, amp=run.amp, channels_last=run.channels_last)
        run.meta["final_top1"] = {name: acc(cfg)[0] for name, cfg in (("largest", run.largest),
                                                                      ("smallest", run.smallest))}
        run.meta["completed"] = _now()
    if run.dist.active:
        import torch.distributed as dist

        dist.barrier(group=run.dist.group)
    return "done", ""


def _result_of(meta: Mapping[str, Any], folder: SupernetFolder, dev: torch.device, dist: Distributed, *,
               session_steps: int, seconds: float, clock: Optional[_Clock] = None, batch: int = 0,
               subnets: int = 0, step_mode: str = "") -> SupernetResult:
    done, total = int(meta.get("steps_done", 0)), int(meta.get("total_steps", 0))
    per_epoch = max(1, int(meta.get("steps_per_epoch", 1)))
    ts = clock.train_seconds if clock is not None else 0.0
    ips = session_steps * batch / ts if ts > 0 else float("nan")
    steady = float("nan")
    if clock is not None and clock.settle_seconds is not None and session_steps > SETTLE_STEPS:
        steady = (session_steps - SETTLE_STEPS) * batch / max(1e-9, ts - clock.settle_seconds)
    return SupernetResult(status=str(meta.get("status")), reason=str(meta.get("reason", "")), out=str(folder.path),
                          steps_done=done, total_steps=total, epochs_done=done / per_epoch, session_steps=session_steps,
                          session_seconds=seconds, train_seconds=ts, images_per_s=ips,
                          subnet_images_per_s=ips * subnets if math.isfinite(ips) else ips,
                          steady_images_per_s=steady, step_mode=step_mode,
                          final_top1=dict(meta.get("final_top1") or {}), device=_device_name(dev),
                          world_size=dist.world)


# ---------------------------------------------------------------------------------------------
# reading a trained supernet
# ---------------------------------------------------------------------------------------------
@dataclass
class Supernet:
    """A trained supernet read from its folder: the model (weights loaded) and its record."""

    model: ElasticFasterViT
    meta: dict[str, Any]
    path: Path

    @property
    def data(self) -> str:
        return str(self.meta["data"])

    @property
    def epochs(self) -> float:
        return float(self.meta["recipe"]["epochs"])

    @property
    def resolution(self) -> tuple[int, int]:
        return as_resolution(self.model.resolution)

    @property
    def label(self) -> str:
        """The objective's label: "top-1 % (supernet, E epochs, DATA)"."""
        return f"top-1 % (supernet, {self.epochs:g} epochs, {self.data})"

    @property
    def largest(self) -> FasterViTConfig:
        return FasterViTConfig.from_dict(self.meta["largest"])

    @property
    def smallest(self) -> FasterViTConfig:
        return FasterViTConfig.from_dict(self.meta["smallest"])


def load_supernet(path: Union[str, Path], *, device: Union[str, torch.device, None] = None,
                  allow_unfinished: bool = False) -> Supernet:
    """The supernet trained into ``path`` (``nas supernet train --out``), on ``device``.

    An unfinished run (paused or stopped on NaN) is refused unless ``allow_unfinished`` (then its
    last checkpoint's weights are used).
    """
    folder = SupernetFolder(path)
    meta = folder.read()
    status = meta.get("status")
    if status != "done" and not allow_unfinished:
        raise ValueError(f"the supernet in {folder.path} is not trained to the end (status {status!r}, step "
                         f"{meta.get('steps_done')} of {meta.get('total_steps')}: {meta.get('reason') or 'running'}); "
                         f"finish it with the same `nas supernet train` command")
    space = SearchSpace.from_dict(meta["space"]["definition"], source=meta["space"].get("source"))
    model = ElasticFasterViT(space, resolution=tuple(meta["resolution"]), num_classes=int(meta["num_classes"]))
    source = folder.weights_path if folder.weights_path.is_file() else folder.checkpoint_path
    try:
        if folder.weights_path.is_file():
            state = folder.load_weights()
        else:
            ckpt = folder.load_checkpoint()
            if ckpt is None:
                raise FileNotFoundError(f"{folder.path} holds no weights yet (no {folder.weights_path.name}, "
                                        f"no checkpoint)")
            state = ckpt["model"]
        model.load_state_dict(state, strict=True)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # a damaged file (safetensors/unpickling) or weights of another supernet
        raise ValueError(f"cannot load the supernet weights {source}: {type(e).__name__}: {str(e)[:300]} "
                         f"(damaged, or not this supernet.json's); train it again into a new folder") from None
    dev = resolve_device(device)
    return Supernet(model.to(dev).eval(), meta, folder.path)


def _resolve_supernet(supernet: Union[Supernet, str, Path], device: Union[str, torch.device, None]) -> Supernet:
    return supernet if isinstance(supernet, Supernet) else load_supernet(supernet, device=device)


class InheritedAccuracy:
    """Validation top-1 of subnets with the supernet's weights, each after BatchNorm recalibration.

    ``acc(cfg) -> (top1 %, seconds)``: the subnet's BatchNorm statistics are re-estimated from
    ``calib_batches`` training batches (the same images for every subnet), then it is evaluated
    on the validation loader; ``seconds`` covers both (the per-architecture cost). Build it once
    and call it for many configs (the data stays on the device).
    """

    def __init__(self, model: ElasticFasterViT, *, val_loader: BatchLoader, calib_loader: BatchLoader,
                 calib_batches: int, amp: bool = True, channels_last: bool = False):
        self.model = model
        self.val_loader = val_loader
        self.calib_loader = calib_loader
        self.calib_batches = calib_batches
        self.amp = amp
        self.channels_last = channels_last

    @classmethod
    def for_supernet(cls, supernet: Union[Supernet, str, Path], data: Union[str, DataSplits, None] = None, *,
                     calib_images: Optional[int] = None, batch_size: Optional[int] = None,
                     val_subset: Optional[int] = None, device: Union[str, torch.device, None] = None,
                     amp: bool = True, channels_last: bool = True, data_dir: Union[str, Path, None] = None,
                     download: bool = False) -> "InheritedAccuracy":
        """An evaluator for a trained supernet on its own data (or ``data``, which must have the
        same classes). ``calib_images`` and ``batch_size`` (of the calibration batches) default to
        what the training run evaluated with, so the numbers match its ``final_top1``."""
        sn = _resolve_supernet(supernet, device)
        recorded = sn.meta.get("evaluation") or {}
        calib_images = calib_images or int(recorded.get("calib_images", DEFAULT_CALIB_IMAGES))
        batch_size = batch_size or int(recorded.get("calib_batch_size", sn.meta["recipe"]["batch_size"]))
        dev = next(sn.model.parameters()).device
        splits = data if isinstance(data, DataSplits) else load_dataset(data or sn.data, data_dir=data_dir,
                                                                          download=download)
        if splits.num_classes != sn.model.num_classes:
            raise ValueError(f"data {splits.name!r} has {splits.num_classes} classes; the supernet in {sn.path} was "
                             f"trained on {sn.data!r} with {sn.model.num_classes}")
        at_least("calib_images", calib_images)
        at_least("batch_size", batch_size)
        seed = int(sn.meta.get("recipe", {}).get("seed", 0))
        subset = sn.meta.get("recipe", {}).get("subset")
        train = splits.train.subset(subset, seed=0).to(dev)
        val = splits.val.subset(val_subset, seed=0).to(dev)
        res = sn.model.resolution
        mean, std = normalization()
        ch = sn.model.capacity.in_chans
        calib_bs = min(batch_size, len(train))
        calib = BatchLoader(train, batch_size=calib_bs, resolution=res, device=dev, shuffle=True, seed=seed + 1,
                            drop_last=True, mean=mean, std=std, channels=ch)
        val_loader = BatchLoader(val, batch_size=2 * batch_size, resolution=res, device=dev, shuffle=False,
                                 drop_last=False, mean=mean, std=std, channels=ch)
        cl = channels_last and dev.type == "cuda"
        if cl:
            sn.model.to(memory_format=torch.channels_last)
        return cls(sn.model, val_loader=val_loader, calib_loader=calib,
                   calib_batches=max(1, -(-calib_images // calib_bs)), amp=amp and dev.type == "cuda", channels_last=cl)

    def calibrate(self, cfg: Union[FasterViTConfig, str, Mapping[str, Any]]) -> FasterViTConfig:
        """Make ``cfg`` the active subnet (no stochastic depth) with its own BatchNorm statistics."""
        cfg = self.model.set_active(resolve_config(cfg).replace(drop_path_rate=0.0))
        recalibrate_bn(self.model, calibration_batches(self.calib_loader, self.calib_batches,
                                                       channels_last=self.channels_last), amp=self.amp)
        return cfg

    def __call__(self, cfg: Union[FasterViTConfig, str, Mapping[str, Any]]) -> tuple[float, float]:
        dev = self.val_loader.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        was_training = self.model.training
        try:
            self.calibrate(cfg)
            top1 = evaluate(self.model, self._val(), amp=self.amp)
        finally:
            self.model.train(was_training)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return top1, time.perf_counter() - t

    def _val(self) -> Any:
        if not self.channels_last:
            return self.val_loader
        loader = self.val_loader

        class _ChannelsLast:
            device = loader.device

            def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                for x, y in loader:
                    yield x.contiguous(memory_format=torch.channels_last), y

        return _ChannelsLast()


def supernet_top1(cfg: Union[FasterViTConfig, str, Mapping[str, Any]], supernet: Union[Supernet, str, Path],
                  data: Union[str, DataSplits, None] = None, **kwargs: Any) -> tuple[float, float]:
    """Inherited-weight top-1 (%) of ``cfg`` after BatchNorm recalibration, and the seconds it took
    (recalibration + evaluation; loading the data is not counted). For many configs build one
    ``InheritedAccuracy.for_supernet`` instead."""
    return InheritedAccuracy.for_supernet(supernet, data, **kwargs)(cfg)


def extract_weights(cfg: Union[FasterViTConfig, str, Mapping[str, Any]], supernet: Union[Supernet, str, Path], *,
                    data: Union[str, DataSplits, None] = None, calib_images: Optional[int] = None,
                    device: Union[str, torch.device, None] = None,
                    at_training_resolution: bool = False) -> FasterViT:
    """A plain ``FasterViT`` of ``cfg`` with the supernet's weights and BatchNorm statistics
    recalibrated for it (on the supernet's training data unless ``data``), on the CPU in eval mode.

    The weights do not depend on the input size (the positional MLPs read continuous
    coordinates), so the model is built at ``cfg``'s own resolution unless
    ``at_training_resolution``; its BatchNorm statistics come from the training resolution.
    """
    acc = InheritedAccuracy.for_supernet(supernet, data, calib_images=calib_images, device=device,
                                         channels_last=False)
    cfg = resolve_config(cfg)
    active = acc.calibrate(cfg)
    trained = acc.model.extract(active)
    if at_training_resolution:
        return trained.cpu().eval()
    model = FasterViT(cfg.replace(num_classes=active.num_classes))
    model.load_state_dict(trained.state_dict(), strict=True)
    return model.eval()
