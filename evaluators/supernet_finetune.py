"""Fine-tuning one architecture from an initialisation: a supernet, a checkpoint file, or scratch.

As the course reproduction did (FasterViT-0 fine-tuned fully, FasterViT-1 head-only, on CIFAR-10
from the official ImageNet weights), ``finetune(cfg, data=..., init=...)`` trains a chosen point
on ``data`` starting from:

- ``supernet:DIR``: the subnet's weights from a trained supernet (``extract_weights``: BatchNorm
  statistics recalibrated for it);
- a checkpoint file (``.safetensors``, or a torch file with an official FasterViT state dict,
  mapped by ``checkpoint_filter_fn``);
- ``scratch``: a seeded fresh initialisation.

A head whose class count differs from the data's is replaced (``reset_classifier``);
``head_only`` trains the classifier alone (everything else frozen, BatchNorm statistics kept). The
loop uses the trainer's pieces (data on the device, bf16 autocast and channels-last on CUDA,
fused AdamW, warm-up + cosine, progress bar, NaN stop with the reason) in eager mode; the model
and a record (recipe, init, top-1 history) come back for ``nas export`` to write.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from search_spaces import FasterViT, FasterViTConfig, resolve_config
from search_spaces.config import as_resolution
from search_spaces.fastervit import checkpoint_filter_fn

from .checks import at_least, in_range
from .data import BatchLoader, DataSplits, load_dataset, normalization
from .profiler import resolve_device
from .proxies import init_model
from .train import evaluate, lr_at, make_optimizer, scaled_lr, set_lr

__all__ = ["finetune", "FinetuneResult", "initial_model", "INIT_KINDS"]

INIT_KINDS = ("supernet:DIR", "a checkpoint file", "scratch")


@dataclass
class FinetuneResult:
    """What a fine-tuning run gave; ``top1`` in percent (NaN when ``status == "nan"``)."""

    top1: float
    top1_history: list[tuple[int, float]]
    init_top1: float
    steps: int
    seconds: float
    images_per_s: float
    status: str
    reason: str = ""
    init: str = ""
    head_only: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _load_state(path: Path) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def initial_model(cfg: FasterViTConfig, init: str, *, seed: int = 0, data: Union[str, DataSplits, None] = None,
                  device: Union[str, torch.device, None] = None) -> FasterViT:
    """``cfg`` with the weights of ``init`` (``supernet:DIR``, a checkpoint file or ``scratch``).

    A checkpoint is loaded strictly into ``cfg`` with the checkpoint's own class count (read from
    its head), so the head can be replaced afterwards.
    """
    if not isinstance(init, str) or not init:
        raise ValueError(f"init={init!r} must be one of: {', '.join(INIT_KINDS)}")
    if init == "scratch":
        return init_model(cfg, seed)
    if init.startswith("supernet:"):
        from .supernet import extract_weights

        return extract_weights(cfg, init[len("supernet:"):], data=data, device=device)
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"init={init!r} is not supernet:DIR, scratch or an existing checkpoint file")
    state = checkpoint_filter_fn(_load_state(path))
    head = state.get("head.weight")
    classes = int(head.shape[0]) if head is not None else 0
    model = FasterViT(cfg.replace(num_classes=classes))
    try:
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit {cfg.summary()}: {str(e).splitlines()[0]}") from None
    return model


def finetune(
    cfg: Union[FasterViTConfig, str, Mapping[str, Any]],
    *,
    data: Union[str, DataSplits],
    init: str,
    epochs: float,
    head_only: bool = False,
    resolution: Optional[int] = None,
    batch_size: int = 128,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    warmup: float = 0.05,
    label_smoothing: float = 0.1,
    subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    amp: bool = True,
    channels_last: bool = True,
    progress: bool = True,
    data_dir: Union[str, Path, None] = None,
    download: bool = False,
) -> tuple[FasterViT, FinetuneResult]:
    """Fine-tune ``cfg`` on ``data`` from ``init``; returns the trained model (eval mode, on the CPU)
    and its record. ``lr`` is the peak AdamW LR at batch 256 (sqrt-scaled to ``batch_size``); the
    validation top-1 is measured before training (``init_top1``) and after every epoch."""
    in_range("epochs", epochs, low=0.0, low_open=True)
    at_least("batch_size", batch_size)
    in_range("lr", lr, low=0.0, low_open=True)
    in_range("warmup", warmup, low=0.0, high=1.0, high_open=True)
    t_start = time.perf_counter()
    dev = resolve_device(device)
    splits = data if isinstance(data, DataSplits) else load_dataset(data, data_dir=data_dir, download=download)
    cfg = resolve_config(cfg)
    if resolution is not None:
        cfg = cfg.at_resolution(resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = initial_model(cfg, init, seed=seed, data=None, device=dev)
        if model.num_classes != splits.num_classes:
            model.reset_classifier(splits.num_classes)
    if model.config.resolution != cfg.resolution:  # a supernet's subnet comes at its training resolution
        moved = FasterViT(cfg.replace(num_classes=splits.num_classes))
        moved.load_state_dict(model.state_dict(), strict=True)
        model = moved
    model = model.to(dev)
    use_amp = amp and dev.type == "cuda"
    cl = channels_last and dev.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    if head_only:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    train = splits.train.subset(subset, seed=0).to(dev)
    val = splits.val.subset(val_subset, seed=0).to(dev)
    mean, std = normalization(model)
    res = as_resolution(model.config.resolution)
    loader = BatchLoader(train, batch_size=batch_size, resolution=res, device=dev, shuffle=True, seed=seed,
                         mean=mean, std=std, channels=cfg.in_chans)
    val_loader = BatchLoader(val, batch_size=2 * batch_size, resolution=res, device=dev, shuffle=False,
                             drop_last=False, mean=mean, std=std, channels=cfg.in_chans)
    per_epoch = len(loader)
    total = max(1, round(epochs * per_epoch))
    warmup_steps = int(round(warmup * total))
    peak = scaled_lr(lr, batch_size)
    optimizer, lr_t = make_optimizer(model, lr=peak, weight_decay=weight_decay, device=dev)
    recipe = dict(data=splits.name, resolution=list(res), epochs=total / per_epoch, steps=total,
                  batch_size=batch_size, lr=lr, peak_lr=peak, weight_decay=weight_decay, warmup=warmup,
                  label_smoothing=label_smoothing, subset=len(train), val_subset=len(val), seed=seed, amp=use_amp,
                  head_only=head_only, optimizer="AdamW, warm-up + cosine to 0 (eager steps)")
    init_top1 = evaluate(model, val_loader, amp=use_amp)
    history: list[tuple[int, float]] = []
    status, reason, done = "ok", "", 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"finetune {cfg.summary()[:40]}", unit="step", dynamic_ncols=True)
    t_train = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            model.train()
            if head_only:
                model.eval()  # frozen backbone: BatchNorm statistics and stochastic depth as they are
            epoch_iter = iter(loader)
            while done < total:
                try:
                    x, y = next(epoch_iter)
                except StopIteration:
                    epoch_iter = iter(loader)
                    x, y = next(epoch_iter)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                set_lr(optimizer, lr_t, peak * lr_at(done, total=total, warmup_steps=warmup_steps))
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    status, reason = "nan", f"loss became {value} at step {done + 1} of {total} (lr {peak:g})"
                    break
                done += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if done % per_epoch == 0 or done == total:
                    history.append((done, evaluate(model, val_loader, amp=use_amp)))
                    if head_only:
                        model.eval()
    finally:
        if bar is not None:
            bar.close()
    train_s = time.perf_counter() - t_train
    for p in model.parameters():  # the returned model is an ordinary one
        p.requires_grad_(True)
    top1 = history[-1][1] if status == "ok" and history else float("nan")
    result = FinetuneResult(top1=top1, top1_history=history, init_top1=init_top1, steps=done,
                            seconds=time.perf_counter() - t_start,
                            images_per_s=done * batch_size / train_s if train_s > 0 else float("nan"),
                            status=status, reason=reason, init=init, head_only=head_only, recipe=recipe,
                            config=model.config.to_dict())
    return model.to(memory_format=torch.contiguous_format).cpu().eval(), result

