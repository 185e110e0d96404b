"""Supernet training under DistributedDataParallel: two CPU processes (gloo) train as one process.

Each rank takes its half of the same global batch; the sandwich's subnets come from the shared
seed and BatchNorm statistics are summed over the ranks, so the gradients of a step (and the
weights after training) match one process on the whole batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from evaluators.data import BatchLoader, load_dataset
from evaluators.supernet import train_supernet
from evaluators.supernet_folder import SupernetFolder
from evaluators.supernet_step import SandwichStep, set_sync_batchnorm, subnet_plan
from evaluators.train import make_optimizer, scaled_lr
from search_spaces.elastic import ElasticFasterViT, extreme_configs
from search_spaces.space import load_space
from tests.spaces import tiny_space

BATCH = 8
TRAIN = dict(batch_size=BATCH, subset=64, val_subset=32, calib_images=16, device="cpu", progress=False,
             drop_path_rate=0.0)


def _step_parts(seed: int = 0):
    space = load_space(tiny_space())
    big, small = extreme_configs(space)
    torch.manual_seed(seed)
    model = ElasticFasterViT(space, num_classes=10)

    def plan(step):
        return subnet_plan(space, step, seed=0, n_random=2, resolution=(64, 64), largest=big, smallest=small,
                           drop_path_rate=0.0)

    return model, plan


def _batch():
    data = load_dataset("fashion-mnist")
    return BatchLoader(data.train, batch_size=BATCH, resolution=64, device="cpu", seed=0).batch(torch.arange(BATCH))


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, store: str, out: str, grads_file: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        # one sandwich step on this rank's half of the batch
        model, plan = _step_parts()
        set_sync_batchnorm(model, dist.group.WORLD)
        ddp = DDP(model, find_unused_parameters=True, broadcast_buffers=False)
        opt, _ = make_optimizer(model, lr=1e-3, weight_decay=0.05, device=torch.device("cpu"))
        step = SandwichStep(model, opt, plan, label_smoothing=0.1, grad_clip=None, distill=True, amp=False,
                            device=torch.device("cpu"), wrapped=ddp)
        x, y = _batch()
        half = BATCH // world
        step.backward(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half], 0)
        torch.save(_gradients(model), f"{grads_file}.{rank}")
        # a whole (tiny) training run, launched as torchrun would
        r = train_supernet(tiny_space(), data="fashion-mnist", out=out, epochs=0.5, **TRAIN)
        torch.save(dict(status=r.status, world=r.world_size), f"{grads_file}.run.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out, grads = tmp / "sn", tmp / "grads"
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_worker, args=(2, str(tmp / "store"), str(out), str(grads)), nprocs=2, join=True)
    return tmp, out, grads


def test_two_processes_give_the_gradients_of_one(two_ranks):
    _, _, grads = two_ranks
    model, plan = _step_parts()
    opt, _ = make_optimizer(model, lr=1e-3, weight_decay=0.05, device=torch.device("cpu"))
    SandwichStep(model, opt, plan, label_smoothing=0.1, grad_clip=None, distill=True, amp=False,
                 device=torch.device("cpu")).backward(*_batch(), 0)
    one = _gradients(model)
    ranks = [torch.load(f"{grads}.{r}", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() == one.keys() and len(one) > 50
    for name, g in one.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP all-reduced them
        assert torch.allclose(ranks[0][name], g, rtol=1e-4, atol=1e-6), (name, float((ranks[0][name] - g).abs().max()))


def test_a_two_process_run_trains_one_supernet_like_one_process(two_ranks, tmp_path):
    tmp, out, grads = two_ranks
    meta = SupernetFolder(out).read()
    assert meta["status"] == "done" and meta["sessions"][0]["world_size"] == 2
    for rank in range(2):
        assert torch.load(f"{grads}.run.{rank}", weights_only=True) == dict(status="done", world=2)
    assert not (Path(out) / "checkpoint.pt").exists()
    weights = SupernetFolder(out).load_weights()
    one = train_supernet(tiny_space(), data="fashion-mnist", out=tmp_path / "one", epochs=0.5, **TRAIN)
    assert one.status == "done" and one.world_size == 1
    single = SupernetFolder(tmp_path / "one").load_weights()
    # The gradients match (the test above); after four AdamW steps most weights still match to float
    # rounding, but a bias right before a BatchNorm has a gradient of exactly zero but for rounding,
    # and AdamW turns rounding into steps of up to +-lr: no weight can differ by more than two such
    # steps a step, and the running statistics after such biases follow them.
    peak = scaled_lr(1e-3, BATCH)
    diffs = {k: float((weights[k].float() - single[k].float()).abs().max()) for k in single}
    assert max(diffs.values()) <= 2 * 4 * peak, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    params = [k for k in single if "running_" not in k and "num_batches" not in k]
    off = [k for k in params if diffs[k] > 1e-5]
    assert len(off) <= 0.1 * len(params), off
