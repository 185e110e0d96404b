"""The supernet's step modes: which step ``auto`` picks and why, the refusals, and (on a CUDA GPU)
that the CUDA-graph sandwich step trains the weights an eager one does."""

from __future__ import annotations

import pytest
import torch

from evaluators.supernet import train_supernet
from evaluators.supernet_step import GraphedSandwichStep, SandwichStep, make_sandwich_step, subnet_plan
from evaluators.train import make_optimizer
from search_spaces.elastic import ElasticFasterViT, extreme_configs
from search_spaces.space import load_space
from tests.spaces import tiny_space

STEP = dict(label_smoothing=0.1, grad_clip=1.0, distill=True, amp=False)


def _model_and_plan(device: torch.device, drop_path_rate: float = 0.0):
    space = load_space(tiny_space())
    torch.manual_seed(0)
    model = ElasticFasterViT(space, num_classes=10).to(device)
    big, small = extreme_configs(space)

    def plan(step):
        return subnet_plan(space, step, seed=0, n_random=2, resolution=(64, 64), largest=big, smallest=small,
                           drop_path_rate=drop_path_rate)

    opt, _ = make_optimizer(model, lr=1e-3, weight_decay=0.05, device=device)
    return model, opt, plan


def test_auto_is_eager_on_the_cpu_and_says_why():
    model, opt, plan = _model_and_plan(torch.device("cpu"))
    step, why = make_sandwich_step("auto", model, opt, plan, device=torch.device("cpu"), distributed=False, **STEP)
    assert type(step) is SandwichStep and "eager" in why and "cpu" in why
    step, why = make_sandwich_step("eager", model, opt, plan, device=torch.device("cpu"), distributed=False, **STEP)
    assert type(step) is SandwichStep and why == "eager (asked)"


@pytest.mark.parametrize("distributed", [False, True])
def test_graph_mode_where_it_cannot_run_is_one_clear_error(distributed):
    model, opt, plan = _model_and_plan(torch.device("cpu"))
    device = torch.device("cuda" if distributed else "cpu")
    with pytest.raises(ValueError, match="step_mode='graph' needs one CUDA device in one process"):
        make_sandwich_step("graph", model, opt, plan, device=device, distributed=distributed, **STEP)
    with pytest.raises(ValueError, match="a CUDA-graph sandwich step needs a CUDA device"):
        GraphedSandwichStep(model, opt, plan, device=torch.device("cpu"), **STEP)


def test_an_unknown_step_mode_is_refused_before_any_data_is_read(tmp_path):
    with pytest.raises(ValueError, match="step_mode='fast' must be one of auto, eager, graph"):
        train_supernet(tiny_space(), data="no-such-data", out=tmp_path / "sn", epochs=1.0, step_mode="fast")


def test_a_cpu_run_records_its_step_mode(tmp_path):
    r = train_supernet(tiny_space(), data="fashion-mnist", out=tmp_path / "sn", epochs=1.0, max_steps=1,
                       batch_size=8, subset=64, val_subset=32, calib_images=16, device="cpu", progress=False)
    assert r.step_mode.startswith("eager: no CUDA graph on a cpu device")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (run on the GPU machine)")
def test_the_graphed_step_trains_the_weights_the_eager_step_does():
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(16, 3, 64, 64, device=dev, generator=gen)
    y = torch.randint(0, 10, (16,), device=dev, generator=gen)
    trained = {}
    for cls in (SandwichStep, GraphedSandwichStep):
        model, _, plan = _model_and_plan(dev)
        # plain SGD: AdamW would blow the rounding noise of zero-gradient weights (a conv bias before
        # BatchNorm) up to lr-sized steps in either mode, hiding what the comparison is about
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        step = cls(model, opt, plan, device=dev, **STEP)
        losses = [float(v) for k in range(GraphedSandwichStep.WARMUP + 4) for _, v in step(x, y, k)]
        trained[cls.__name__] = (losses, {n: p.detach().clone() for n, p in model.named_parameters()})
    (eager_losses, eager_w), (graph_losses, graph_w) = trained["SandwichStep"], trained["GraphedSandwichStep"]
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-4)
    for name, w in eager_w.items():
        torch.testing.assert_close(graph_w[name], w, rtol=1e-3, atol=1e-4, msg=name)
