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
run is the trainer's (``evaluators.train.train`` with ``init``/``head_only``: data on the device,
bf16, channels-last, fused AdamW, CUDA-graph steps on the GPU, progress bar, NaN stop with the
reason); the model and a record (recipe, init, top-1 history) come back for ``nas export`` to write.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from search_spaces import FasterViT, FasterViTConfig, resolve_config
from search_spaces.config import as_resolution
from search_spaces.fastervit import checkpoint_filter_fn

from .data import BatchLoader, DataSplits, load_dataset, normalization
from .profiler import resolve_device
from .proxies import init_model
from .train import TrainRecipe, evaluate, train

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
    recipe = TrainRecipe(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                         label_smoothing=label_smoothing, subset=subset, val_subset=val_subset, amp=amp,
                         channels_last=channels_last, resolution=resolution)
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
    target = cfg.replace(num_classes=splits.num_classes, drop_path_rate=model.config.drop_path_rate)
    if model.config != target:  # a supernet's subnet comes at its training resolution
        moved = FasterViT(target)
        moved.load_state_dict(model.state_dict(), strict=True)
        model = moved
    init_top1 = _init_top1(model, recipe, splits, dev)
    r = train(model.config, recipe, data=splits, seed=seed, device=dev, progress=progress, init=model,
              head_only=head_only, desc=f"finetune {cfg.summary()[:40]}")
    for p in model.parameters():  # the returned model is an ordinary one
        p.requires_grad_(True)
    record = dict(r.recipe, head_only=head_only, init=init)
    result = FinetuneResult(top1=r.top1, top1_history=r.top1_history, init_top1=init_top1, steps=r.steps,
                            seconds=time.perf_counter() - t_start, images_per_s=r.images_per_s, status=r.status,
                            reason=r.reason, init=init, head_only=head_only, recipe=record,
                            config=model.config.to_dict())
    return model.to(memory_format=torch.contiguous_format).cpu().eval(), result


def _init_top1(model: FasterViT, recipe: TrainRecipe, splits: DataSplits, dev: torch.device) -> float:
    """Validation top-1 of ``model`` before fine-tuning (on the recipe's validation subset)."""
    res = as_resolution(model.config.resolution)
    mean, std = normalization(model)
    val = splits.val.subset(recipe.val_subset, seed=0).to(dev)
    loader = BatchLoader(val, batch_size=recipe.eval_batch_size or 2 * recipe.batch_size, resolution=res, device=dev,
                         shuffle=False, drop_last=False, mean=mean, std=std, channels=model.config.in_chans)
    return evaluate(model.to(dev), loader, amp=recipe.amp and dev.type == "cuda")
