"""The ``train`` proxy: a short, fixed training recipe whose validation top-1 ranks architectures.

One function, ``train_proxy(cfg, ...)``: the architecture at the training resolution
(``cfg.at_resolution(r)``, windows per side kept) with the dataset's class count, freshly
initialised from ``seed`` (``evaluators.proxies.init_model``), trained with AdamW (no weight decay
on biases and norm/scale vectors), linear warm-up then cosine decay to zero, label smoothing,
bf16 autocast on CUDA. The data is moved to the device once as uint8; each batch is resized and
normalised there (``evaluators.data.BatchLoader``).

Stops early, with a recorded reason, when the loss becomes NaN/inf (``status="nan"``) or when
``report(step, val_top1)`` returns True (``status="pruned"``: the hook for an Optuna pruner or
Ray ASHA). All randomness (init, data order, stochastic depth) comes from ``seed``; the global
RNG state of the caller is restored afterwards.

Caveat (measured in this project): a short recipe ranks architectures partly by how fast they
train, not only by how good they become; ``bench/proxy_groundtruth.py`` measures how stable such
a ranking is across seeds before anyone calls it a ground truth.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import FasterViTConfig, resolve_config

from .data import BatchLoader, DataSplits, load_dataset, normalization
from .proxies import init_model

__all__ = ["TrainResult", "train_proxy", "evaluate", "lr_at", "STATUSES"]

STATUSES = ("ok", "pruned", "nan")


@dataclass
class TrainResult:
    """What one training run gave. ``top1`` is in percent; NaN when ``status == "nan"``."""

    top1: float
    top1_history: list[tuple[int, float]]
    steps: int
    epochs: float
    seconds: float
    images_per_s: float
    final_loss: float
    status: str
    reason: str = ""
    train_seconds: float = 0.0
    first_loss: float = float("nan")
    device: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN/inf become None; history as [step, top1] lists)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        d = asdict(self)
        d["top1_history"] = [[s, clean(a)] for s, a in self.top1_history]
        return {k: clean(v) for k, v in d.items()}


def _loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Training loss (float32 cross-entropy with label smoothing)."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def lr_at(step: int, *, total: int, warmup_steps: int) -> float:
    """LR multiplier at ``step`` (0-based): linear warm-up to 1, then cosine to 0 at ``total``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, *, amp: bool = True) -> float:
    """Top-1 accuracy (percent) of ``model`` over every batch of ``loader`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    dev = loader.device
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    seen = 0
    try:
        for x, y in loader:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
                logits = model(x)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += y.numel()
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the validation loader gave no images")
    return 100.0 * float(correct) / seen


class _LossWatch:
    """Reads losses back to the host without stalling the GPU queue.

    On CUDA each step's loss is copied into pinned memory asynchronously and read one step later
    (so at most one step runs ahead of the check); on the CPU it is read at once.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: Optional[tuple[int, int]] = None
        if self.cuda:
            self.host = [torch.zeros((), dtype=torch.float32, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event() for _ in range(2)]

    def push(self, step: int, loss: torch.Tensor) -> Optional[tuple[int, float]]:
        if not self.cuda:
            return step, float(loss.detach())
        slot = step % 2
        self.host[slot].copy_(loss.detach(), non_blocking=True)
        self.events[slot].record()
        seen = self.flush()
        self.pending = (step, slot)
        return seen

    def flush(self) -> Optional[tuple[int, float]]:
        if not self.cuda or self.pending is None:
            return None
        step, slot = self.pending
        self.events[slot].synchronize()
        self.pending = None
        return step, float(self.host[slot])


def _check_number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False,
                  high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name}={value!r} must be in {lo}{low}, {high}{hi}")
    return float(value)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def train_proxy(
    cfg: Union[FasterViTConfig, str, Mapping[str, Any]],
    *,
    data: Union[str, DataSplits] = "fashion-mnist",
    data_dir: Union[str, Path, None] = None,
    download: bool = False,
    resolution: Optional[int] = None,
    epochs: Optional[float] = None,
    steps: Optional[int] = None,
    batch_size: int = 256,
    subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup: float = 0.05,
    label_smoothing: float = 0.1,
    grad_clip: Optional[float] = None,
    drop_path_rate: Optional[float] = None,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    amp: bool = True,
    report: Optional[Callable[[int, float], bool]] = None,
    eval_every: Optional[int] = None,
    eval_batch_size: Optional[int] = None,
    progress: bool = True,
    desc: Optional[str] = None,
    save_weights: Union[str, Path, None] = None,
) -> TrainResult:
    """Train ``cfg`` briefly from scratch and return its validation top-1 (the ``train`` proxy).

    Example:
        >>> from search_spaces import FasterViTConfig
        >>> cfg = FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
        ...                       window_size=(2, 2, 2, 2))
        >>> r = train_proxy(cfg, steps=5, batch_size=16, val_subset=64, device="cpu", progress=False)  # doctest: +SKIP
        >>> r.status, len(r.top1_history)                                                             # doctest: +SKIP
        ('ok', 1)

    Args:
        cfg: config, preset name, dict or JSON path.
        data: dataset name (``evaluators.data.load_dataset``) or already loaded ``DataSplits``.
        data_dir, download: passed to ``load_dataset`` when ``data`` is a name.
        resolution: training resolution (default: the config's); the model is
            ``cfg.at_resolution(resolution)`` with ``num_classes`` from the dataset.
        epochs, steps: budget, one or the other (default: 1 epoch); ``epochs`` may be fractional.
            An epoch is ``len(train subset) // batch_size`` steps (last partial batch dropped).
        batch_size: training batch size.
        subset: training images used (a fixed seeded-0 subset, the same for every seed/arch).
        val_subset: validation images used (fixed subset; default all).
        lr, weight_decay: AdamW peak learning rate and decoupled weight decay.
        warmup: fraction of the steps spent in linear warm-up, in [0, 1).
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        drop_path_rate: override the config's stochastic-depth rate (None: keep it).
        seed: init, data order and stochastic depth.
        device: ``cuda``/``cpu``/... (default: CUDA when available).
        amp: bf16 autocast (CUDA only; ignored on the CPU).
        report: ``report(step, val_top1) -> bool`` after every intermediate validation; True stops
            the run with ``status="pruned"``.
        eval_every: steps between validations (default: once per epoch); the end always validates.
        eval_batch_size: validation batch size (default: 2 x batch_size).
        progress: show a progress bar (tqdm).
        desc: progress-bar label.
        save_weights: write the trained weights there (safetensors) when the run ends without NaN.
    """
    # ---------------------------------------------------------------- arguments
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs or steps, not both (epochs={epochs}, steps={steps})")
    if epochs is not None:
        _check_number("epochs", epochs, low=0.0, low_open=True)
    if steps is not None:
        _check_int("steps", steps)
    _check_int("batch_size", batch_size)
    _check_number("lr", lr, low=0.0, low_open=True)
    _check_number("weight_decay", weight_decay, low=0.0)
    _check_number("warmup", warmup, low=0.0, high=1.0, high_open=True)
    _check_number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
    if grad_clip is not None:
        _check_number("grad_clip", grad_clip, low=0.0, low_open=True)
    if drop_path_rate is not None:
        _check_number("drop_path_rate", drop_path_rate, low=0.0, high=1.0, high_open=True)
    if eval_every is not None:
        _check_int("eval_every", eval_every)
    if eval_batch_size is not None:
        _check_int("eval_batch_size", eval_batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    if resolution is not None:
        _check_int("resolution", resolution, 16)
    if report is not None and not callable(report):
        raise ValueError(f"report={report!r} must be callable(step, val_top1) -> bool")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    use_amp = bool(amp) and dev.type == "cuda"

    t_start = time.perf_counter()
    # ---------------------------------------------------------------- data and model
    splits = data if isinstance(data, DataSplits) else load_dataset(data, data_dir=data_dir, download=download)
    train = splits.train.subset(subset, seed=0).to(dev)
    val = splits.val.subset(val_subset, seed=0).to(dev)
    cfg = resolve_config(cfg)
    if resolution is not None:
        cfg = cfg.at_resolution(resolution)
    changes: dict[str, Any] = {"num_classes": splits.num_classes}
    if drop_path_rate is not None:
        changes["drop_path_rate"] = float(drop_path_rate)
    cfg = cfg.replace(**changes)
    model = init_model(cfg, seed, device=dev)
    mean, std = normalization(model)
    loader = BatchLoader(train, batch_size=batch_size, resolution=cfg.resolution, device=dev, shuffle=True,
                         seed=seed, drop_last=True, mean=mean, std=std, channels=cfg.in_chans)
    val_loader = BatchLoader(val, batch_size=eval_batch_size or 2 * batch_size, resolution=cfg.resolution, device=dev,
                             shuffle=False, drop_last=False, mean=mean, std=std, channels=cfg.in_chans)
    per_epoch = len(loader)
    total = steps if steps is not None else max(1, round((epochs if epochs is not None else 1.0) * per_epoch))
    every = eval_every if eval_every is not None else per_epoch
    warmup_steps = int(round(warmup * total))
    recipe = dict(data=splits.name, resolution=list(cfg.resolution), steps=total, epochs=total / per_epoch,
                  batch_size=batch_size, subset=len(train), val_subset=len(val), lr=lr, weight_decay=weight_decay,
                  warmup=warmup, warmup_steps=warmup_steps, label_smoothing=label_smoothing, grad_clip=grad_clip,
                  drop_path_rate=cfg.drop_path_rate, seed=seed, amp=use_amp, eval_every=every,
                  optimizer="AdamW(betas=(0.9, 0.999), no decay on biases/norms), warm-up + cosine to 0")

    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999),
                                  **({"fused": True} if dev.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total=total, warmup_steps=warmup_steps))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc or cfg.summary()[:60], unit="step", leave=False, dynamic_ncols=True)

    history: list[tuple[int, float]] = []
    losses: list[float] = []
    first_loss = float("nan")
    status, reason = "ok", ""
    done = 0
    eval_seconds = 0.0
    watch = _LossWatch(dev)

    def observe(seen: Optional[tuple[int, float]]) -> bool:
        """Record a loss read back from the device; True when it is not finite."""
        nonlocal first_loss, status, reason
        if seen is None:
            return False
        s, v = seen
        if s == 0:
            first_loss = v
        if not math.isfinite(v):
            status, reason = "nan", f"loss became {v} at step {s + 1} of {total} (lr {lr:g})"
            return True
        losses.append(v)
        return False

    cuda_gens = [dev.index] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_gens):
        torch.default_generator.manual_seed(seed)  # stochastic depth draws from the default generators
        if dev.type == "cuda":
            with torch.cuda.device(dev):
                torch.cuda.manual_seed(seed)
        model.train()
        batches = iter(loader)
        t_loop = time.perf_counter()
        try:
            for step in range(total):
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    x, y = next(batches)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(x)
                loss = _loss(logits, y, label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                scheduler.step()
                done = step + 1
                if observe(watch.push(step, loss)):
                    break
                if bar is not None:
                    bar.update(1)
                    if losses and (done % 20 == 0 or done == total):
                        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                if done % every == 0 and done < total:
                    if observe(watch.flush()):
                        break
                    t_eval = time.perf_counter()
                    acc = evaluate(model, val_loader, amp=use_amp)
                    eval_seconds += time.perf_counter() - t_eval
                    history.append((done, acc))
                    if bar is not None:
                        bar.set_postfix(loss=f"{losses[-1]:.3f}" if losses else "-", val=f"{acc:.2f}")
                    if report is not None and report(done, acc):
                        status, reason = "pruned", f"report() asked to stop at step {done} (val top-1 {acc:.2f}%)"
                        break
            if status == "ok":
                observe(watch.flush())
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_seconds = time.perf_counter() - t_loop - eval_seconds
            if status == "ok" and (not history or history[-1][0] != done):
                history.append((done, evaluate(model, val_loader, amp=use_amp)))
        finally:
            if bar is not None:
                bar.close()

    if status == "nan":
        top1 = float("nan")
        final_loss = float("nan")
    else:
        if save_weights is not None:  # the trained network, for export (same parameter shapes at any resolution)
            from search_spaces.io import save_weights as _save

            Path(save_weights).parent.mkdir(parents=True, exist_ok=True)
            _save(model, save_weights)
        top1 = history[-1][1]
        tail = losses[-10:]
        final_loss = sum(tail) / len(tail) if tail else float("nan")
    return TrainResult(
        top1=top1, top1_history=history, steps=done, epochs=done / per_epoch, seconds=time.perf_counter() - t_start,
        images_per_s=done * batch_size / train_seconds if train_seconds > 0 else float("nan"),
        final_loss=final_loss, status=status, reason=reason, train_seconds=train_seconds, first_loss=first_loss,
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", recipe=recipe, config=cfg.to_dict())
