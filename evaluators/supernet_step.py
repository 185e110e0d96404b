"""The pieces of a supernet training step: the sandwich rule, resumable batches, BN recalibration, DDP.

- ``SandwichStep``: one optimisation step of the sandwich rule with in-place distillation
  (Yu et al., "BigNAS", ECCV 2020; Wang et al., "AttentiveNAS", CVPR 2021): the largest subnet
  learns from the labels (with stochastic depth), the smallest and ``n`` random subnets from the
  largest one's soft predictions (detached, no stochastic depth); their gradients add up in the
  shared weights before one AdamW step. The subnets of step k depend only on (seed, k), so every
  rank of a distributed run draws the same ones and a resumed run draws what the cut run would
  have.
- ``ResumableBatches``: the loader's batches with a state (epoch, position, generator states)
  that a checkpoint can hold, and, under DDP, each rank's share of the same global batch.
- ``recalibrate_bn``: BatchNorm statistics of one subnet, re-estimated from training batches
  (reset, then a cumulative average over the batches in train mode without gradients), as OFA's
  ``set_running_statistics`` does: the statistics a supernet holds mix every subnet it trained.
- ``Distributed``: what a ``torchrun`` process needs (rank, world, device, the process group).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import FasterViTConfig
from search_spaces.elastic import ElasticBatchNorm2d, ElasticFasterViT, sample_subnet
from search_spaces.space import SearchSpace

from .data import BatchLoader

__all__ = ["SandwichStep", "GraphedSandwichStep", "make_sandwich_step", "STEP_MODES", "ResumableBatches",
           "recalibrate_bn", "Distributed", "distributed_setup",
           "set_sync_batchnorm", "soft_cross_entropy", "subnet_plan"]


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (in float32): the in-place distillation loss."""
    return -(target_probs * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def subnet_plan(space: SearchSpace, step: int, *, seed: int, n_random: int, resolution: tuple[int, int],
                largest: FasterViTConfig, smallest: FasterViTConfig, drop_path_rate: float) -> list[FasterViTConfig]:
    """The subnets of step ``step``: largest (with stochastic depth), smallest, ``n_random`` random
    ones (none with stochastic depth), from a generator seeded with (seed, step) only."""
    rng = np.random.default_rng([seed, step])
    randoms = [sample_subnet(space, rng, resolution).replace(drop_path_rate=0.0) for _ in range(n_random)]
    return [largest.replace(drop_path_rate=drop_path_rate), smallest.replace(drop_path_rate=0.0), *randoms]


class SandwichStep:
    """One sandwich-rule step on an ``ElasticFasterViT`` (``wrapped``: the model or its DDP wrapper)."""

    def __init__(self, model: ElasticFasterViT, optimizer: torch.optim.Optimizer, plan: Callable[[int], list],
                 *, label_smoothing: float, grad_clip: Optional[float], distill: bool, amp: bool,
                 device: torch.device, wrapped: Optional[nn.Module] = None):
        self.model = model
        self.wrapped = wrapped if wrapped is not None else model
        self.optimizer = optimizer
        self.plan = plan
        self.label_smoothing = label_smoothing
        self.grad_clip = grad_clip
        self.distill = distill
        self.amp = amp
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]

    def backward(self, x: torch.Tensor, y: torch.Tensor, step: int) -> list[tuple[FasterViTConfig, torch.Tensor]]:
        """Zero the gradients, then forward and backward every subnet of ``step``; returns (subnet,
        loss) pairs (losses detached, on the device). Under DDP only the last backward all-reduces."""
        self.optimizer.zero_grad(set_to_none=True)
        out, _ = self._subnets_backward(self.plan(step), x, y)
        return out

    def _subnets_backward(self, subnets: Sequence[FasterViTConfig], x: torch.Tensor, y: torch.Tensor,
                          soft: Optional[torch.Tensor] = None, *, autocast_cache: bool = True
                          ) -> tuple[list[tuple[FasterViTConfig, torch.Tensor]], Optional[torch.Tensor]]:
        """Forward and backward ``subnets`` in order. Without ``soft`` the first learns from the labels
        and, with distillation, its soft predictions teach the rest. Returns the (subnet, detached
        loss) pairs and the soft predictions."""
        out = []
        for k, cfg in enumerate(subnets):
            loss, logits = self._subnet_backward(cfg, x, y, soft, last=k == len(subnets) - 1,
                                                 autocast_cache=autocast_cache)
            if soft is None and self.distill:
                soft = logits.detach().float().softmax(dim=-1)
            out.append((cfg, loss.detach()))
        return out, soft

    def _subnet_backward(self, cfg: FasterViTConfig, x: torch.Tensor, y: torch.Tensor, soft: Optional[torch.Tensor],
                         *, last: bool, autocast_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward one subnet: from the labels when ``soft`` is None (the largest, or
        no distillation), else from the largest one's soft predictions; returns (loss, logits)."""
        self.model.set_active(cfg)
        no_sync = getattr(self.wrapped, "no_sync", None)  # DDP's: backward without the all-reduce
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                                cache_enabled=autocast_cache):
                logits = self.wrapped(x)
            if soft is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            else:
                loss = soft_cross_entropy(logits, soft)
            loss.backward()
        return loss, logits

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> list[tuple[FasterViTConfig, torch.Tensor]]:
        losses = self.backward(x, y, step)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=self.device.type == "cuda")
        self.optimizer.step()
        return losses


class GraphedSandwichStep(SandwichStep):
    """A ``SandwichStep`` whose fixed part runs from one CUDA graph (single process, CUDA only).

    The largest and the smallest subnet are the same at every step, and at a small resolution
    their eager steps are bound by kernel launches (measured on H100s, 64 px, batch 256: the
    largest subnet trains at 1,551-2,912 img/s eager, by the host, and ~5,100 from a CUDA graph;
    README, "Once-for-all supernet"). So their forward and
    backward (with the soft targets in between) are captured once and replayed; the random
    subnets, whose shapes change every step, then run eagerly, accumulating into the same
    gradient tensors, and clipping and AdamW follow as in ``SandwichStep``.

    As in PyTorch's whole-network capture recipe, ``WARMUP`` steps run eagerly on a side stream
    first (the model's geometry caches and the allocator settle); the gradients the graph
    writes are then the parameters' ``.grad`` for good (never set to None again), and those of
    parameters that neither fixed subnet uses are reset before each step. Stochastic depth draws
    from the graph-safe CUDA generator, so the values match an eager step in distribution, not
    bit for bit.
    """

    WARMUP = 3

    def __init__(self, model: ElasticFasterViT, optimizer: torch.optim.Optimizer, plan: Callable[[int], list],
                 **kwargs: Any):
        super().__init__(model, optimizer, plan, **kwargs)
        if self.device.type != "cuda":
            raise ValueError(f"a CUDA-graph sandwich step needs a CUDA device, not {self.device}")
        if self.wrapped is not self.model:
            raise ValueError("a CUDA-graph sandwich step runs in one process (not under DistributedDataParallel)")
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.fixed: tuple[FasterViTConfig, ...] = ()
        self.static_in: tuple[torch.Tensor, ...] = ()
        self.static_losses: tuple[torch.Tensor, ...] = ()
        self.soft: Optional[torch.Tensor] = None
        self.outside: list[nn.Parameter] = []
        self.grad_ptrs: dict[int, int] = {}
        self.seen = 0
        self.side = torch.cuda.Stream(self.device)

    def backward(self, x: torch.Tensor, y: torch.Tensor, step: int) -> list[tuple[FasterViTConfig, torch.Tensor]]:
        if self.graph is None and self.seen < self.WARMUP:
            self.seen += 1
            here = torch.cuda.current_stream(self.device)
            self.side.wait_stream(here)
            with torch.cuda.stream(self.side):
                out = super().backward(x, y, step)
            here.wait_stream(self.side)
            return out
        subnets = self.plan(step)
        fixed, randoms = tuple(subnets[:2]), subnets[2:]
        if self.graph is None:
            self._capture(x, y, fixed)
        elif fixed != self.fixed:
            raise RuntimeError(f"step {step}: the largest/smallest subnets changed after the CUDA graph was captured")
        for p in self.outside:
            p.grad = None
        self.static_in[0].copy_(x, non_blocking=True)
        self.static_in[1].copy_(y, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        out = [(cfg, loss.clone()) for cfg, loss in zip(fixed, self.static_losses)]
        out += self._subnets_backward(randoms, x, y, self.soft)[0]
        self._check_gradients_stay()
        return out

    def _capture(self, x: torch.Tensor, y: torch.Tensor, fixed: tuple[FasterViTConfig, ...]) -> None:
        """Capture the fixed subnets' forward and backward on copies of this batch."""
        self.static_in = (x.clone(), y.clone())
        torch.cuda.synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            pairs, self.soft = self._subnets_backward(fixed, *self.static_in, autocast_cache=False)
        self.static_losses = tuple(loss for _, loss in pairs)
        self.graph, self.fixed = graph, fixed
        self.outside = [p for p in self.params if p.grad is None]
        self.grad_ptrs = {id(p): p.grad.data_ptr() for p in self.params if p.grad is not None}

    def _check_gradients_stay(self) -> None:
        """The eager subnets must add into the graph's gradient tensors, never replace them."""
        if self.grad_ptrs and self.seen == self.WARMUP:  # checked once, on the first replayed step
            self.seen += 1
            moved = [id(p) for p in self.params if id(p) in self.grad_ptrs and
                     (p.grad is None or p.grad.data_ptr() != self.grad_ptrs[id(p)])]
            if moved:
                raise RuntimeError(f"{len(moved)} gradient tensor(s) were replaced outside the CUDA graph: "
                                   "run the supernet with step_mode='eager'")

    def release(self) -> None:
        """Free the graph and its memory pool (the gradients it wrote go with it)."""
        self.graph, self.static_in, self.static_losses, self.soft = None, (), (), None
        self.optimizer.zero_grad(set_to_none=True)
        self.seen = 0


def make_sandwich_step(mode: str, model: ElasticFasterViT, optimizer: torch.optim.Optimizer,
                       plan: Callable[[int], list], *, device: torch.device, distributed: bool,
                       **kwargs: Any) -> tuple[SandwichStep, str]:
    """The sandwich step of ``mode`` (``auto``, ``eager``, ``graph``) and why: ``auto`` takes the
    CUDA graph on one CUDA device and the eager step otherwise (CPU, or several processes)."""
    if mode not in STEP_MODES:
        raise ValueError(f"step_mode={mode!r} must be one of {', '.join(STEP_MODES)}")
    blocker = (f"a {device.type} device" if device.type != "cuda" else
               "several processes (DistributedDataParallel)" if distributed else None)
    if mode == "graph" and blocker:
        raise ValueError(f"step_mode='graph' needs one CUDA device in one process, not {blocker}; "
                         "use step_mode='eager' or 'auto'")
    if mode == "eager" or blocker:
        why = "eager (asked)" if mode == "eager" else f"eager: no CUDA graph on {blocker}"
        return SandwichStep(model, optimizer, plan, device=device, **kwargs), why
    why = "graph: largest and smallest subnets from one CUDA graph, random subnets eager"
    return GraphedSandwichStep(model, optimizer, plan, device=device, **kwargs), why


STEP_MODES = ("auto", "eager", "graph")


# ---------------------------------------------------------------------------------------------
# batches that a checkpoint can resume
# ---------------------------------------------------------------------------------------------
class ResumableBatches:
    """Endless batches of a ``BatchLoader`` (epoch after epoch) whose position can be saved.

    ``state()`` holds the epoch, the position in it, the loader's generator state at the epoch's
    start (the epoch's order is drawn again from it) and the augmentation generator's state, so a
    restored iterator gives the very batches the cut run would have; a streamed split's draw
    generator is saved where it stands. Under DDP (``world`` > 1) each rank gets its slice of the
    same global batch (``loader.batch_size`` = global batch).
    """

    def __init__(self, loader: BatchLoader, *, rank: int = 0, world: int = 1, channels_last: bool = False):
        if loader.batch_size % world:
            raise ValueError(f"batch_size={loader.batch_size} must be divisible by the {world} processes")
        self.loader, self.rank, self.world = loader, rank, world
        self.channels_last = channels_last
        self.epoch, self.position = 0, 0
        self._start_state = loader.generator.get_state()
        self._order = loader.order()

    def __len__(self) -> int:
        return len(self.loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position >= len(self.loader):
            self.epoch, self.position = self.epoch + 1, 0
            self._start_state = self.loader.generator.get_state()
            self._order = self.loader.order()
        b = self.loader.batch_size
        idx = self._order[self.position * b:(self.position + 1) * b]
        local = b // self.world
        part = slice(self.rank * local, (self.rank + 1) * local)
        if self.loader.stream_generator is not None:  # drawn afresh: every rank draws the global batch
            x, y = self.loader.batch(idx)             # from the same generator and keeps its slice
            x, y = x[part], y[part]
        else:
            x, y = self.loader.batch(idx[part])
        self.position += 1
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def state(self) -> dict[str, Any]:
        aug, stream = self.loader.aug_generator, self.loader.stream_generator
        return dict(epoch=self.epoch, position=self.position, start_state=self._start_state,
                    aug_state=aug.get_state() if aug is not None else None,
                    stream_state=stream.get_state() if stream is not None else None)

    def restore(self, state: dict[str, Any]) -> None:
        self.loader.generator.set_state(state["start_state"])
        self._start_state = state["start_state"]
        self._order = self.loader.order()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if state.get("aug_state") is not None and self.loader.aug_generator is not None:
            self.loader.aug_generator.set_state(state["aug_state"])
        if state.get("stream_state") is not None and self.loader.stream_generator is not None:
            self.loader.stream_generator.set_state(state["stream_state"])


# ---------------------------------------------------------------------------------------------
# BatchNorm recalibration
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], *, amp: bool = False) -> int:
    """Re-estimate every BatchNorm's running statistics for the model as it is now (e.g. one active
    subnet): reset them, forward ``batches`` in train mode without gradients, keep the cumulative
    average. Stochastic depth must be off (configure the subnet with ``drop_path_rate=0``); the
    model's mode and the norms' momenta are restored. Returns the number of batches used."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    syncs = [getattr(m, "sync_group", None) for m in norms]
    was_training = model.training
    n = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: the plain mean over the batches
            if isinstance(m, ElasticBatchNorm2d):
                m.sync_group = None  # one process calibrates on its own batches
        model.train()
        for x in batches:
            dev = x.device.type
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp and dev == "cuda"):
                model(x)
            n += 1
    finally:
        for m, mom, sync in zip(norms, momenta, syncs):
            m.momentum = mom
            if isinstance(m, ElasticBatchNorm2d):
                m.sync_group = sync
        model.train(was_training)
    if norms and n == 0:
        raise ValueError("recalibrate_bn: no batches were given")
    return n


def calibration_batches(loader: BatchLoader, n: int, *, channels_last: bool = False) -> Iterator[torch.Tensor]:
    """``n`` batches of ``loader`` from where its generators stand (restored afterwards, so every
    subnet is calibrated on the same images); epoch after epoch when one holds fewer batches."""
    gens = [g for g in (loader.generator, loader.aug_generator, loader.stream_generator) if g is not None]
    states = [g.get_state() for g in gens]
    try:
        i = 0
        while i < n:
            for x, _ in loader:
                if i >= n:
                    break
                i += 1
                yield x.contiguous(memory_format=torch.channels_last) if channels_last else x
    finally:
        for g, st in zip(gens, states):
            g.set_state(st)


# ---------------------------------------------------------------------------------------------
# distributed data parallel
# ---------------------------------------------------------------------------------------------
@dataclass
class Distributed:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: Any = None
    initialised_here: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Sum of a few numbers over the ranks (one small all-reduce); the values as is without DDP."""
        if not self.active:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def close(self) -> None:
        if self.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def distributed_setup(device: torch.device) -> Distributed:
    """The process group of a ``torchrun`` launch (initialised here when the environment names a
    world of several processes and none exists yet: NCCL on CUDA, gloo on the CPU)."""
    import torch.distributed as dist

    if not dist.is_available():
        return Distributed()
    if dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           dist.group.WORLD)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", 0)), dist.group.WORLD, True)


def set_sync_batchnorm(model: nn.Module, group: Any) -> None:
    """Batch statistics of every elastic BatchNorm summed over ``group`` in training (None: local)."""
    for m in model.modules():
        if isinstance(m, ElasticBatchNorm2d):
            m.sync_group = group
