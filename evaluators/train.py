"""The ``train`` proxy: a short, fixed training recipe whose validation top-1 ranks architectures.

Speed (issue #10): data resident on the device, on-device augmentation (``evaluators.augment``),
bf16 autocast, channels-last, fused capturable AdamW with the LR in a device tensor, and a step
mode: ``graph`` captures the whole step (forward, backward, clip, AdamW) in one CUDA graph,
``compile`` runs ``torch.compile``'d model code, ``auto`` picks by the documented rule in
``choose_step_mode`` and records the mode and why. FasterViT-0 at 128 px on an H200: 8,561 img/s
in graph mode at batch 256 with the same top-1 as the plain eager loop (2,650 img/s) after the same
two epochs; 14,952 img/s compiled at batch 1024 (after 81 s of compiling), where the short
two-epoch budget costs accuracy (bench/train_speed.py, results/benchmarks/train-speed*.json).

``train(cfg, recipe, ...)`` with a frozen, validated ``TrainRecipe`` (``train_proxy(cfg, **keywords)``
builds the recipe from keywords): the architecture at the training resolution
(``cfg.at_resolution(r)``, windows per side kept) with the dataset's class count, freshly
initialised from ``seed`` (``evaluators.proxies.init_model``), trained with AdamW (no weight decay
on biases and norm/scale vectors), linear warm-up then cosine decay to zero, label smoothing,
bf16 autocast on CUDA, optionally reporting an EMA of the weights. The default recipe is the
stable one of issue #29 (peak LR 3.5e-4 at batch 256, 20 % warm-up). The data is moved to the
device once as uint8; each batch is resized and normalised there (``evaluators.data.BatchLoader``).

Stops early, with a recorded reason, when the loss becomes NaN/inf (``status="nan"``) or when
``report(step, val_top1)`` returns True (``status="pruned"``: the hook for an Optuna pruner or
Ray ASHA). All randomness (init, data order, stochastic depth) comes from ``seed``; the global
RNG state of the caller is restored afterwards.

Caveat (measured in this project): a short recipe ranks architectures partly by how fast they
train, not only by how good they become; ``bench/groundtruth.py`` measures how stable such
a ranking is across seeds before anyone calls it a ground truth.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import FasterViT, FasterViTConfig, resolve_config

from .augment import Augment
from .checks import at_least, in_range
from .data import BatchLoader, DataSplits, load_dataset, normalization
from .profiler import resolve_device
from .proxies import init_model

__all__ = ["TrainRecipe", "TrainResult", "train", "train_proxy", "DEFAULT_LR", "DEFAULT_WARMUP", "evaluate", "lr_at",
           "scaled_lr", "choose_step_mode", "check_optimisation", "param_groups", "make_optimizer", "set_lr",
           "estimated_compile_seconds", "STATUSES", "STEP_MODES", "LR_REFERENCE_BATCH"]

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
    step_mode: str = "eager"
    compile_seconds: float = 0.0
    raw_top1_history: list[tuple[int, float]] = field(default_factory=list)  # the raw weights' when EMA is on

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN/inf become None; history as [step, top1] lists)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        d = asdict(self)
        d["top1_history"] = [[s, clean(a)] for s, a in self.top1_history]
        d["raw_top1_history"] = [[s, clean(a)] for s, a in self.raw_top1_history]
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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices and kernels, none on biases and norm/scale vectors."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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


# ---------------------------------------------------------------------------------------------
# learning-rate scaling and the compile rule
# ---------------------------------------------------------------------------------------------
#: ``lr`` is the peak learning rate at this batch size; other batch sizes scale it (``scaled_lr``).
LR_REFERENCE_BATCH = 256
LR_SCALINGS = ("sqrt", "linear", "none")
STEP_MODES = ("auto", "eager", "graph", "compile")

#: Constants of the compile rule, measured by ``bench/train_speed.py`` on an NVIDIA H200 (torch
#: 2.11, batch 1024, results/benchmarks/train-speed.json): compiling FasterViT-0 at 128 px (16
#: blocks) took 80.7 s and a 4-block net 26.0 s, so compile seconds ~ 7.8 + 4.56 * blocks; the
#: compiled step ran at 14,952 img/s vs 11,371 for the CUDA-graph step (x1.31). ``auto`` compiles
#: only when the steps left would save more time than compiling costs (``choose_step_mode``).
COMPILE_S_BASE = 7.8
COMPILE_S_PER_BLOCK = 4.56
COMPILE_SPEEDUP = 1.31
#: steps run (and timed) in CUDA-graph mode before ``auto`` decides whether to compile
PROBE_STEPS = 8


def scaled_lr(lr: float, batch_size: int, rule: str = "sqrt") -> float:
    """Peak LR for ``batch_size`` from ``lr`` given at ``LR_REFERENCE_BATCH``.

    ``sqrt`` (default) is the square-root rule for adaptive optimisers (Malladi et al., "On the
    SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022); ``linear`` is Goyal
    et al.'s rule for SGD; ``none`` uses ``lr`` as given.
    """
    if rule not in LR_SCALINGS:
        raise ValueError(f"lr_scaling={rule!r} is unknown; choose one of {', '.join(LR_SCALINGS)}")
    ratio = batch_size / LR_REFERENCE_BATCH
    return lr * (math.sqrt(ratio) if rule == "sqrt" else ratio if rule == "linear" else 1.0)


def estimated_compile_seconds(cfg: FasterViTConfig) -> float:
    """Seconds ``torch.compile`` of a training step is expected to take for ``cfg`` (rule constants)."""
    return COMPILE_S_BASE + COMPILE_S_PER_BLOCK * sum(cfg.depths)


def choose_step_mode(requested: str, device: torch.device, *, cfg: FasterViTConfig,
                     steps_left: Optional[int] = None, graph_step_s: Optional[float] = None) -> tuple[str, str]:
    """The training-step mode to use and why (the documented ``auto`` rule).

    ``eager`` on the CPU. On CUDA, ``auto`` starts with a CUDA graph of the whole step (capture
    costs about one step) and, once ``PROBE_STEPS`` steps have been timed, compiles only if
    ``steps_left * graph_step_s * (1 - 1/COMPILE_SPEEDUP) > estimated_compile_seconds(cfg)``: the
    time compiling would save on the rest of this run must exceed what it costs. A search trains
    many different architectures, so compile time is paid per trial and short runs stay eager.
    """
    if requested not in STEP_MODES:
        raise ValueError(f"compile={requested!r} is unknown; choose one of {', '.join(STEP_MODES)}")
    if device.type != "cuda":
        if requested in ("graph", "compile"):
            raise ValueError(f"compile={requested!r} needs a CUDA device (got {device}); use 'auto' or 'eager'")
        return "eager", f"{device.type}: eager (CUDA graphs and compiling need a CUDA device)"
    if requested != "auto":
        return requested, f"{requested} (requested)"
    if steps_left is None or graph_step_s is None:
        return "graph", "auto: CUDA graph while the first steps are timed"
    compile_s = estimated_compile_seconds(cfg)
    saving = steps_left * graph_step_s * (1.0 - 1.0 / COMPILE_SPEEDUP)
    verdict = "compile" if saving > compile_s else "graph"
    return verdict, (f"auto: {steps_left} steps left x {graph_step_s * 1e3:.1f} ms would save ~{saving:.0f} s "
                     f"compiled vs ~{compile_s:.0f} s to compile -> {verdict}")


# ---------------------------------------------------------------------------------------------
# training steps: eager, CUDA graph of the whole step, compiled
# ---------------------------------------------------------------------------------------------
class _Step:
    """One optimisation step ``step(x, y) -> loss`` (a device tensor, read back asynchronously)."""

    mode = "eager"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, label_smoothing: float,
                 grad_clip: Optional[float], amp: bool, device: torch.device, ema: Optional["_Ema"] = None):
        self.model = model
        self.ema = ema
        self.optimizer = optimizer
        self.label_smoothing = label_smoothing
        self.grad_clip = grad_clip
        self.amp = amp
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.compile_seconds = 0.0

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, cache: bool = True) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=cache):
            logits = self.model(x)
        loss = _loss(logits, y, self.label_smoothing)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=self.device.type == "cuda")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        # detached: a loss kept for its value must not keep this step's autograd nodes alive into the
        # next one (a graph capture then warns that AccumulateGrad nodes sit on the warm-up stream)
        return loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._forward_backward(x, y)

    def release(self) -> None:
        """Free what this step holds beyond the model and optimizer (graphs, pools)."""


class _GraphStep(_Step):
    """The whole step (forward, backward, clip, AdamW) captured once in a CUDA graph and replayed.

    ``WARMUP`` real steps run eagerly on a side stream first (PyTorch's whole-network capture
    recipe); the next batch is copied into static input buffers, the step is captured and then
    replayed for that batch and every later one. Needs a capturable optimizer with a tensor LR.
    """

    mode = "graph"
    WARMUP = 3

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        empty = torch.empty(0, device=self.device)
        self.static: tuple[torch.Tensor, torch.Tensor] = (empty, empty)
        self.static_loss: Optional[torch.Tensor] = None
        self.seen = 0
        self.side = torch.cuda.Stream(self.device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.seen < self.WARMUP:
            self.seen += 1
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side):
                loss = super().__call__(x, y)
            torch.cuda.current_stream(self.device).wait_stream(self.side)
            return loss
        if self.graph is None or self.static_loss is None:
            graph, (sx, sy), loss = self._capture(x, y)
        else:
            graph, (sx, sy), loss = self.graph, self.static, self.static_loss
        sx.copy_(x, non_blocking=True)
        sy.copy_(y, non_blocking=True)
        graph.replay()
        return loss

    def _capture(self, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Capture the step on copies of this batch; returns (graph, static inputs, static loss)."""
        static = (x.clone(), y.clone())
        torch.cuda.synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = self._forward_backward(*static, cache=False)
        self.graph, self.static, self.static_loss = graph, static, loss
        return graph, static, loss

    def release(self) -> None:
        empty = torch.empty(0, device=self.device)
        self.graph, self.static, self.static_loss = None, (empty, empty), None
        self.optimizer.zero_grad(set_to_none=True)


class _CompiledStep(_Step):
    """``torch.compile`` of the model (inductor, default mode: no autotuning, no CUDA graphs).

    Not captured in a CUDA graph: inductor's random-number offsets (stochastic depth) cannot be
    replayed from a graph captured outside it ("Offset increment outside graph capture", measured
    on an H200 with torch 2.11). The first two calls compile forward and backward; their time is
    ``compile_seconds``.
    """

    mode = "compile"

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        self.model = cast(nn.Module, torch.compile(model, dynamic=False))
        self.calls = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.calls >= 2:
            return super().__call__(x, y)
        self.calls += 1
        t = time.perf_counter()
        loss = super().__call__(x, y)
        torch.cuda.synchronize(self.device)
        self.compile_seconds += time.perf_counter() - t
        return loss


def _make_step(mode: str, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> _Step:
    cls = {"eager": _Step, "graph": _GraphStep, "compile": _CompiledStep}[mode]
    return cls(model, optimizer, **kwargs)


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float, device: torch.device
                   ) -> tuple[torch.optim.Optimizer, Optional[torch.Tensor]]:
    """AdamW (fused on CUDA). On CUDA the LR is a device tensor and the optimizer capturable, so
    the same optimizer serves eager, graphed and compiled steps; the schedule writes the tensor."""
    groups = param_groups(model, weight_decay)
    if device.type != "cuda":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999)), None
    lr_t = torch.tensor(lr, dtype=torch.float32, device=device)
    return torch.optim.AdamW(groups, lr=lr_t, betas=(0.9, 0.999), fused=True, capturable=True), lr_t


def set_lr(optimizer: torch.optim.Optimizer, lr_t: Optional[torch.Tensor], value: float) -> None:
    """Set the learning rate: the device tensor of a capturable optimizer, else every group's ``lr``."""
    if lr_t is not None:
        lr_t.fill_(value)
    else:
        for g in optimizer.param_groups:
            g["lr"] = value


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------
#: the default peak LR at ``LR_REFERENCE_BATCH``: 3.5e-4 (issue #29: 1e-3 made FasterViT-1..3 swing by
#: 20-30 points and FasterViT-2 collapse at 16 epochs on fmnist-odd; 3.5e-4 with 20 % warm-up did not)
DEFAULT_LR = 3.5e-4
DEFAULT_WARMUP = 0.2


@dataclass(frozen=True)
class TrainRecipe:
    """How a network is trained: with the data, the resolution and the seed, what its top-1 means.

    Frozen and validated on creation (each error names the field, value and rule); ``to_dict`` is
    its JSON identity (a study or a ground truth stores it and compares it on resume).

    Args:
        epochs, steps: budget, one or the other (default: 1 epoch); ``epochs`` may be fractional.
            An epoch is ``len(train subset) // batch_size`` steps (last partial batch dropped).
        batch_size: training batch size.
        lr: AdamW peak learning rate at batch ``LR_REFERENCE_BATCH`` (256); scaled to
            ``batch_size`` by ``lr_scaling`` (``scaled_lr``: sqrt, linear or none).
        lr_scaling: ``sqrt`` (default), ``linear`` or ``none``.
        weight_decay: AdamW decoupled weight decay (not on biases and norm/scale vectors).
        warmup: fraction of the steps spent in linear warm-up, in [0, 1).
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        drop_path_rate: override the config's stochastic-depth rate (None: keep it).
        ema_decay: evaluate (and save) an exponential moving average of the weights with this
            decay, warmed up as ``min(decay, (1 + step) / (10 + step))`` (None: the raw weights).
        augment: on-device random translation / flip of training batches (None: none).
        resolution: training resolution (None: the config's); the model is ``cfg.at_resolution(r)``.
        subset: training images used (a fixed seeded-0 subset, the same for every seed/arch).
        val_subset: validation images used (fixed subset; default all).
        amp: bf16 autocast (CUDA only; ignored on the CPU).
        channels_last: channels-last memory format for model and batches (CUDA only).
        compile: step mode: ``eager``, ``graph`` (the whole step in a CUDA graph), ``compile``
            (``torch.compile``), or ``auto`` (``choose_step_mode``'s rule).
        eval_every: steps between validations (default: once per epoch); the end always validates.
        eval_batch_size: validation batch size (default: 2 x batch_size).
    """

    epochs: Optional[float] = None
    steps: Optional[int] = None
    batch_size: int = 256
    lr: float = DEFAULT_LR
    lr_scaling: str = "sqrt"
    weight_decay: float = 0.05
    warmup: float = DEFAULT_WARMUP
    label_smoothing: float = 0.1
    grad_clip: Optional[float] = None
    drop_path_rate: Optional[float] = None
    ema_decay: Optional[float] = None
    augment: Optional[Augment] = None
    resolution: Optional[int] = None
    subset: Optional[int] = None
    val_subset: Optional[int] = None
    amp: bool = True
    channels_last: bool = True
    compile: str = "auto"
    eval_every: Optional[int] = None
    eval_batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        if self.epochs is not None and self.steps is not None:
            raise ValueError(f"give epochs or steps, not both (epochs={self.epochs}, steps={self.steps})")
        if self.epochs is not None:
            in_range("epochs", self.epochs, low=0.0, low_open=True)
        for name in ("steps", "eval_every", "eval_batch_size", "subset", "val_subset"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name))
        check_optimisation(self)
        if self.ema_decay is not None:
            in_range("ema_decay", self.ema_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        if self.resolution is not None:
            at_least("resolution", self.resolution, 16)
        for name in ("amp", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.compile not in STEP_MODES:
            raise ValueError(f"compile={self.compile!r} is unknown; choose one of {', '.join(STEP_MODES)}")
        if self.augment is not None and not isinstance(self.augment, Augment):
            raise ValueError(f"augment={self.augment!r} must be an evaluators.augment.Augment or None")

    def replace(self, **changes: Any) -> "TrainRecipe":
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``augment`` as its fields)."""
        d = asdict(self)
        d["augment"] = asdict(self.augment) if self.augment is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainRecipe":
        """The recipe ``to_dict`` wrote (unknown keys are refused by name)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}; known: {', '.join(sorted(known))}")
        d = dict(d)
        if d.get("augment") is not None:
            d["augment"] = Augment(**d["augment"])
        return cls(**d)


def check_optimisation(r: Any) -> None:
    """Validate what a ``TrainRecipe`` and a supernet's recipe share: batch, LR and its scaling, weight decay,
    warm-up, label smoothing, clipping and drop-path (each error names the field, value and rule)."""
    at_least("batch_size", r.batch_size)
    in_range("lr", r.lr, low=0.0, low_open=True)
    if r.lr_scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling={r.lr_scaling!r} is unknown; choose one of {', '.join(LR_SCALINGS)}")
    in_range("weight_decay", r.weight_decay, low=0.0)
    in_range("warmup", r.warmup, low=0.0, high=1.0, high_open=True)
    in_range("label_smoothing", r.label_smoothing, low=0.0, high=1.0, high_open=True)
    if r.grad_clip is not None:
        in_range("grad_clip", r.grad_clip, low=0.0, low_open=True)
    if r.drop_path_rate is not None:
        in_range("drop_path_rate", r.drop_path_rate, low=0.0, high=1.0, high_open=True)


class _Ema:
    """An exponential moving average of a model's weights and float buffers (a copy, in eval mode).

    ``update()`` is a few foreach kernels reading the decay from a device tensor, so it runs inside
    a captured CUDA-graph step; ``set_step`` writes the warmed-up decay before each step.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        live = list(model.parameters()) + list(model.buffers())
        mine = list(self.model.parameters()) + list(self.model.buffers())
        pairs = [(a, b) for a, b in zip(live, mine) if a.is_floating_point()]
        self.src = [a for a, _ in pairs]
        self.dst = [b for _, b in pairs]
        dev = self.src[0].device if self.src else torch.device("cpu")
        self.weight = torch.zeros((), dtype=torch.float32, device=dev)

    def set_step(self, step: int) -> None:
        """The weight of the new value at ``step`` (0-based): 1 - min(decay, (1 + step) / (10 + step))."""
        self.weight.fill_(1.0 - min(self.decay, (1.0 + step) / (10.0 + step)))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.dst, self.src, self.weight)  # type: ignore[call-overload]  # a 0-d tensor weight
        # is supported by the op (and kept inside a CUDA graph) but missing from torch's stubs


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything one training run owns (so an error or OOM releases it all together)."""

    cfg: FasterViTConfig
    recipe: TrainRecipe
    model: nn.Module
    loader: BatchLoader
    val_loader: BatchLoader
    total: int
    per_epoch: int
    every: int
    warmup_steps: int
    peak_lr: float
    device: torch.device
    amp: bool
    channels_last: bool
    record: dict[str, Any]
    ema: Optional[_Ema] = None
    head_only: bool = False

    @property
    def eval_model(self) -> nn.Module:
        """The network whose top-1 is reported (the EMA copy when the recipe has one)."""
        return self.ema.model if self.ema is not None else self.model


def _check_context(seed: Any, report: Any) -> None:
    """Validate the run context (each error names the argument, value and rule)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    if report is not None and not callable(report):
        raise ValueError(f"report={report!r} must be callable(step, val_top1) -> bool")


def _prepare_run(cfg: Union[FasterViTConfig, str, Mapping[str, Any]], recipe: TrainRecipe, splits: DataSplits,
                 seed: int, dev: torch.device, init: Optional[FasterViT] = None, head_only: bool = False) -> _Run:
    """Data on the device, the model at the training resolution, loaders, budget and the recorded recipe."""
    use_amp = recipe.amp and dev.type == "cuda"
    train = splits.train.subset(recipe.subset, seed=0).to(dev)
    val = splits.val.subset(recipe.val_subset, seed=0).to(dev)
    cfg = resolve_config(cfg)
    if recipe.resolution is not None:
        cfg = cfg.at_resolution(recipe.resolution)
    changes: dict[str, Any] = {"num_classes": splits.num_classes}
    if recipe.drop_path_rate is not None:
        changes["drop_path_rate"] = float(recipe.drop_path_rate)
    cfg = cfg.replace(**changes)
    model = init_model(cfg, seed, device=dev) if init is None else _initial(init, cfg, dev, head_only)
    channels_last = recipe.channels_last and dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = normalization(model)
    bs = recipe.batch_size
    loader = BatchLoader(train, batch_size=bs, resolution=cfg.resolution, device=dev, shuffle=True, seed=seed,
                         drop_last=True, mean=mean, std=std, channels=cfg.in_chans, augment=recipe.augment)
    val_loader = BatchLoader(val, batch_size=recipe.eval_batch_size or 2 * bs, resolution=cfg.resolution, device=dev,
                             shuffle=False, drop_last=False, mean=mean, std=std, channels=cfg.in_chans)
    per_epoch = len(loader)
    total = recipe.steps if recipe.steps is not None else max(1, round((recipe.epochs or 1.0) * per_epoch))
    warmup_steps = int(round(recipe.warmup * total))
    peak = scaled_lr(recipe.lr, bs, recipe.lr_scaling)
    every = recipe.eval_every or per_epoch
    record = dict(recipe.to_dict(), data=splits.name, resolution=list(cfg.resolution), steps=total,
                  epochs=total / per_epoch, subset=len(train), val_subset=len(val),
                  lr_reference_batch=LR_REFERENCE_BATCH, peak_lr=peak, warmup_steps=warmup_steps,
                  drop_path_rate=cfg.drop_path_rate, seed=seed, amp=use_amp, channels_last=channels_last,
                  eval_every=every,
                  optimizer="AdamW(betas=(0.9, 0.999), no decay on biases/norms), warm-up + cosine to 0")
    if init is not None:
        record.update(init="given", head_only=head_only)
    ema = _Ema(model, recipe.ema_decay) if recipe.ema_decay is not None else None
    return _Run(cfg, recipe, model, loader, val_loader, total, per_epoch, every, warmup_steps, peak, dev, use_amp,
                channels_last, record, ema, head_only)


def _initial(model: FasterViT, cfg: FasterViTConfig, dev: torch.device, head_only: bool) -> FasterViT:
    """The given initial model, checked against ``cfg`` (the run's architecture and classes), on ``dev``;
    with ``head_only`` every parameter but the classifier's is frozen."""
    if not isinstance(model, FasterViT):
        raise ValueError(f"init={type(model).__name__} must be a search_spaces.FasterViT")
    if model.config.replace(drop_path_rate=cfg.drop_path_rate) != cfg:
        raise ValueError(f"init is {model.config.summary()} with {model.config.num_classes} classes; the run trains "
                         f"{cfg.summary()} with {cfg.num_classes} (reset its classifier or move it with at_resolution)")
    for name, p in model.named_parameters():
        p.requires_grad_(not head_only or name.startswith("head."))
    return model.to(dev)


class _Batches:
    """Endless batches of the training loader, epoch after epoch (channels-last when asked)."""

    def __init__(self, run: _Run):
        self.loader = run.loader
        self.channels_last = run.channels_last
        self.it = iter(self.loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x, y = next(self.it)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


@dataclass
class _Progress:
    """What the loop has seen so far (losses, history, status) and the progress bar."""

    total: int
    lr: float
    bar: Any = None
    history: list[tuple[int, float]] = field(default_factory=list)
    raw_history: list[tuple[int, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    first_loss: float = float("nan")
    status: str = "ok"
    reason: str = ""
    done: int = 0
    eval_seconds: float = 0.0

    def observe(self, seen: Optional[tuple[int, float]]) -> bool:
        """Record a loss read back from the device; True when it is not finite (the run stops)."""
        if seen is None:
            return False
        s, v = seen
        if s == 0:
            self.first_loss = v
        if not math.isfinite(v):
            self.status, self.reason = "nan", f"loss became {v} at step {s + 1} of {self.total} (lr {self.lr:g})"
            return True
        self.losses.append(v)
        return False

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.losses and (self.done % 20 == 0 or self.done == self.total):
                self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}", refresh=False)


@dataclass
class _ModeLog:
    """Which step mode ran, why, and what compiling cost."""

    mode: str
    reason: str
    compile_seconds: float = 0.0
    switched_at: Optional[int] = None


def _maybe_switch(run: _Run, step: _Step, requested: str, log: _ModeLog, prog: _Progress, t_probe: float,
                  make: Callable[[str], _Step]) -> _Step:
    """After the probe steps, apply the ``auto`` rule; returns the step to continue with."""
    graph_step_s = (time.perf_counter() - t_probe) / max(1, PROBE_STEPS - _GraphStep.WARMUP - 1)
    mode, reason = choose_step_mode(requested, run.device, cfg=run.cfg, steps_left=run.total - prog.done,
                                    graph_step_s=graph_step_s)
    log.reason = reason
    if mode == step.mode:
        return step
    step.release()
    log.mode, log.switched_at = mode, prog.done
    return make(mode)


def _validate(run: _Run, prog: _Progress, report: Optional[Callable[[int, float], bool]]) -> bool:
    """Validate now, record it, ask ``report``; True when the run must stop (pruned)."""
    t_eval = time.perf_counter()
    acc = evaluate(run.eval_model, run.val_loader, amp=run.amp)
    if run.ema is not None:
        prog.raw_history.append((prog.done, evaluate(run.model, run.val_loader, amp=run.amp)))
    prog.eval_seconds += time.perf_counter() - t_eval
    prog.history.append((prog.done, acc))
    if prog.bar is not None:
        prog.bar.set_postfix(loss=f"{prog.losses[-1]:.3f}" if prog.losses else "-", val=f"{acc:.2f}")
    if report is not None and report(prog.done, acc):
        prog.status, prog.reason = "pruned", f"report() asked to stop at step {prog.done} (val top-1 {acc:.2f}%)"
        return True
    return False


def _loop(run: _Run, prog: _Progress, report: Optional[Callable[[int, float], bool]]) -> tuple[float, _ModeLog]:
    """The training loop; returns (train seconds without validation, mode log)."""
    recipe = run.recipe
    optimizer, lr_t = make_optimizer(run.model, lr=run.peak_lr, weight_decay=recipe.weight_decay, device=run.device)

    def make(mode: str) -> _Step:
        return _make_step(mode, run.model, optimizer, label_smoothing=recipe.label_smoothing,
                          grad_clip=recipe.grad_clip, amp=run.amp, device=run.device, ema=run.ema)

    mode, reason = choose_step_mode(recipe.compile, run.device, cfg=run.cfg)
    log = _ModeLog(mode, reason)
    step = make(mode)
    watch = _LossWatch(run.device)
    batches = _Batches(run)
    run.model.train(not run.head_only)  # head-only: the frozen backbone keeps its BatchNorm statistics
    t_loop = time.perf_counter()
    t_probe = t_loop
    try:
        for i in range(run.total):
            set_lr(optimizer, lr_t, run.peak_lr * lr_at(i, total=run.total, warmup_steps=run.warmup_steps))
            if run.ema is not None:
                run.ema.set_step(i)
            x, y = batches.next()
            loss = step(x, y)
            prog.done = i + 1
            if prog.observe(watch.push(i, loss)):
                break
            prog.tick()
            if recipe.compile == "auto" and run.device.type == "cuda":
                if prog.done == _GraphStep.WARMUP + 1:
                    torch.cuda.synchronize(run.device)
                    t_probe = time.perf_counter()
                elif prog.done == PROBE_STEPS:
                    torch.cuda.synchronize(run.device)
                    step = _maybe_switch(run, step, recipe.compile, log, prog, t_probe, make)
            if prog.done % run.every == 0 and prog.done < run.total:
                if prog.observe(watch.flush()) or _validate(run, prog, report):
                    break
        if prog.status == "ok":
            prog.observe(watch.flush())
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
    finally:
        log.compile_seconds = step.compile_seconds
        step.release()
    return time.perf_counter() - t_loop - prog.eval_seconds, log


def train(
    cfg: Union[FasterViTConfig, str, Mapping[str, Any]],
    recipe: TrainRecipe,
    *,
    data: Union[str, DataSplits] = "fashion-mnist",
    data_dir: Union[str, Path, None] = None,
    download: bool = False,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    report: Optional[Callable[[int, float], bool]] = None,
    progress: bool = True,
    desc: Optional[str] = None,
    save_weights: Union[str, Path, None] = None,
    init: Optional[FasterViT] = None,
    head_only: bool = False,
) -> TrainResult:
    """Train ``cfg`` from scratch (or from ``init``) with ``recipe`` and return its validation top-1.

    The architecture runs at the recipe's resolution (``cfg.at_resolution(r)``, windows per side
    kept) with the dataset's class count, freshly initialised from ``seed``.

    Example:
        >>> from search_spaces import FasterViTConfig
        >>> cfg = FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
        ...                       window_size=(2, 2, 2, 2))
        >>> recipe = TrainRecipe(steps=5, batch_size=16, val_subset=64)
        >>> r = train(cfg, recipe, device="cpu", progress=False)  # doctest: +SKIP
        >>> r.status, len(r.top1_history)                         # doctest: +SKIP
        ('ok', 1)

    Args:
        cfg: config, preset name, dict or JSON path.
        recipe: the ``TrainRecipe``.
        data: dataset name (``evaluators.data.load_dataset``) or already loaded ``DataSplits``.
        data_dir, download: passed to ``load_dataset`` when ``data`` is a name.
        seed: init, data order, augmentation and stochastic depth.
        device: ``cuda``/``cpu``/... (default: CUDA when available).
        report: ``report(step, val_top1) -> bool`` after every intermediate validation; True stops
            the run with ``status="pruned"``.
        progress: show a progress bar (tqdm).
        desc: progress-bar label.
        save_weights: write the trained weights there (safetensors; the EMA weights when the
            recipe has an EMA) when the run ends without NaN.
        init: start from this model (fine-tuning) instead of a seeded initialisation; it must be
            ``cfg`` at the recipe's resolution with the data's classes, and is trained in place.
        head_only: train the classifier alone (``init`` required): every other parameter is frozen
            and the backbone stays in eval mode (BatchNorm statistics and stochastic depth as given).
    """
    if head_only and init is None:
        raise ValueError("head_only=True fine-tunes the head of a given model: pass init")
    if not isinstance(recipe, TrainRecipe):
        raise ValueError(f"recipe={recipe!r} must be an evaluators.train.TrainRecipe")
    _check_context(seed, report)
    t_start = time.perf_counter()
    dev = resolve_device(device)  # the one default-device picker (evaluators.profiler)
    splits = data if isinstance(data, DataSplits) else load_dataset(data, data_dir=data_dir, download=download)
    run = _prepare_run(cfg, recipe, splits, seed, dev, init, head_only)
    prog = _Progress(total=run.total, lr=run.peak_lr)
    if progress:
        from tqdm.auto import tqdm

        prog.bar = tqdm(total=run.total, desc=desc or run.cfg.summary()[:60], unit="step", leave=False,
                        dynamic_ncols=True)
    cuda_gens = [run.device.index] if run.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_gens):
            torch.default_generator.manual_seed(seed)  # stochastic depth draws from the default generators
            if run.device.type == "cuda":
                with torch.cuda.device(run.device):
                    torch.cuda.manual_seed(seed)
            train_seconds, log = _loop(run, prog, report)
            if prog.status == "ok" and (not prog.history or prog.history[-1][0] != prog.done):
                prog.history.append((prog.done, evaluate(run.eval_model, run.val_loader, amp=run.amp)))
                if run.ema is not None:
                    prog.raw_history.append((prog.done, evaluate(run.model, run.val_loader, amp=run.amp)))
    finally:
        if prog.bar is not None:
            prog.bar.close()
    return _result(run, prog, log, train_seconds, t_start, save_weights)


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
    lr: float = DEFAULT_LR,
    lr_scaling: str = "sqrt",
    weight_decay: float = 0.05,
    warmup: float = DEFAULT_WARMUP,
    label_smoothing: float = 0.1,
    grad_clip: Optional[float] = None,
    drop_path_rate: Optional[float] = None,
    ema_decay: Optional[float] = None,
    augment: Optional[Augment] = None,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    amp: bool = True,
    channels_last: bool = True,
    compile: str = "auto",
    report: Optional[Callable[[int, float], bool]] = None,
    eval_every: Optional[int] = None,
    eval_batch_size: Optional[int] = None,
    progress: bool = True,
    desc: Optional[str] = None,
    save_weights: Union[str, Path, None] = None,
) -> TrainResult:
    """Train ``cfg`` from scratch with a fixed recipe and return its validation top-1 (the ``train`` proxy).

    The keywords of ``TrainRecipe`` and of ``train`` in one call: builds the recipe (validated)
    and calls ``train``.

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
        lr: AdamW peak learning rate at batch ``LR_REFERENCE_BATCH`` (256); scaled to
            ``batch_size`` by ``lr_scaling`` (``scaled_lr``: sqrt, linear or none).
        weight_decay: AdamW decoupled weight decay (not on biases and norm/scale vectors).
        warmup: fraction of the steps spent in linear warm-up, in [0, 1).
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        drop_path_rate: override the config's stochastic-depth rate (None: keep it).
        ema_decay: report an exponential moving average of the weights (``TrainRecipe``).
        augment: on-device random translation / flip of training batches (None: none).
        seed: init, data order, augmentation and stochastic depth.
        device: ``cuda``/``cpu``/... (default: CUDA when available).
        amp: bf16 autocast (CUDA only; ignored on the CPU).
        channels_last: channels-last memory format for model and batches (CUDA only).
        compile: step mode: ``eager``, ``graph`` (the whole step in a CUDA graph), ``compile``
            (``torch.compile``), or ``auto`` (``choose_step_mode``'s rule; the result
            records the mode, why, and the compile seconds).
        report: ``report(step, val_top1) -> bool`` after every intermediate validation; True stops
            the run with ``status="pruned"``.
        eval_every: steps between validations (default: once per epoch); the end always validates.
        eval_batch_size: validation batch size (default: 2 x batch_size).
        progress: show a progress bar (tqdm).
        desc: progress-bar label.
        save_weights: write the trained weights there (safetensors) when the run ends without NaN.
    """
    recipe = TrainRecipe(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, lr_scaling=lr_scaling,
                         weight_decay=weight_decay, warmup=warmup, label_smoothing=label_smoothing, grad_clip=grad_clip,
                         drop_path_rate=drop_path_rate, ema_decay=ema_decay, augment=augment, resolution=resolution,
                         subset=subset, val_subset=val_subset, amp=amp, channels_last=channels_last, compile=compile,
                         eval_every=eval_every, eval_batch_size=eval_batch_size)
    return train(cfg, recipe, data=data, data_dir=data_dir, download=download, seed=seed, device=device, report=report,
                 progress=progress, desc=desc, save_weights=save_weights)


def _result(run: _Run, prog: _Progress, log: _ModeLog, train_seconds: float, t_start: float,
            save_weights: Union[str, Path, None]) -> TrainResult:
    """The ``TrainResult`` of a finished loop (weights saved when asked and the run did not go NaN)."""
    if prog.status == "nan":
        top1 = final_loss = float("nan")
    else:
        if save_weights is not None:  # the trained network, for export (same parameter shapes at any resolution)
            from search_spaces.io import save_weights as _save

            Path(save_weights).parent.mkdir(parents=True, exist_ok=True)
            _save(cast(FasterViT, run.eval_model), save_weights)
        top1 = prog.history[-1][1]
        tail = prog.losses[-10:]
        final_loss = sum(tail) / len(tail) if tail else float("nan")
    dev = run.device
    recipe = dict(run.record, step_mode=log.mode, step_mode_reason=log.reason, mode_switched_at=log.switched_at)
    return TrainResult(
        top1=top1, top1_history=prog.history, steps=prog.done, epochs=prog.done / run.per_epoch,
        seconds=time.perf_counter() - t_start,
        images_per_s=prog.done * run.loader.batch_size / train_seconds if train_seconds > 0 else float("nan"),
        final_loss=final_loss, status=prog.status, reason=prog.reason, train_seconds=train_seconds,
        first_loss=prog.first_loss, device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        recipe=recipe, config=run.cfg.to_dict(), step_mode=log.mode, compile_seconds=log.compile_seconds,
        raw_top1_history=prog.raw_history)
