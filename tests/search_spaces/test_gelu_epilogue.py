"""GELU in the GEMM epilogue (search_spaces.gelu_epilogue): every MLP fused, same logits on the CPU (exact
GELU there), with channel padding before or after, under torch.compile, and the refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn as nn

from search_spaces import PRESETS, FasterViTConfig, build_model, fuse_gelu_epilogue, pad_channels
from search_spaces.fastervit import FasterViT, GeluEpilogue, Mlp
from search_spaces.gelu_epilogue import GeluEpilogueMlp

from .test_knobs import KNOBS, _randomise
from .test_padding import CASES, _deployed, _rel_err, _sample, odd  # noqa: F401  (odd: a fixture)

TOL = 1e-5  # max |fused - unfused| / max |unfused| of the logits, fp32 on the CPU
CONV_KEPT = "GELU after a 3x3 convolution (cuDNN): no GEMM epilogue carries it"
#: knobs that change the MLPs themselves (hidden width), beside every knob of test_knobs
MLP_KNOBS: dict[str, dict[str, Any]] = {"mlp_ratio_3": dict(mlp_ratio=3.0, layer_scale=0.5, do_propagation=True),
             "mlp_ratio_2.5": dict(mlp_ratio=2.5)}
ALL_KNOBS: dict[str, Any] = {**KNOBS, **MLP_KNOBS}


def _mlps(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, Mlp)]


def _record(model: FasterViT) -> GeluEpilogue:
    assert model.gelu_epilogue is not None
    return model.gelu_epilogue


def _fused_and_logits(model: FasterViT, x: torch.Tensor, pad: str = "") -> tuple[FasterViT, torch.Tensor, torch.Tensor]:
    """(fused copy, logits of ``model``, logits of the copy); ``pad``: 'before' / 'after' the fusion, or ''."""
    fused = copy.deepcopy(model)
    if pad == "before":
        pad_channels(fused)
    fuse_gelu_epilogue(fused)
    if pad == "after":
        pad_channels(fused)
    with torch.no_grad():
        return fused, model(x), fused(x)


def _check_all_fused(unfused: FasterViT, fused: FasterViT) -> None:
    """Every Mlp of ``unfused`` is a GeluEpilogueMlp in ``fused`` and recorded; the conv stages' GELUs are kept."""
    rec = _record(fused)
    assert rec.fused == _mlps(unfused) and rec.fused
    assert all(isinstance(fused.get_submodule(n), GeluEpilogueMlp) for n in rec.fused)
    assert not [n for n, m in fused.named_modules() if type(m) is Mlp]
    assert rec.kept == [(f"stages.{i} conv blocks", CONV_KEPT) for i in (0, 1)]


# ---------------------------------------------------------------------------------------------
# presets, the default space, every knob
# ---------------------------------------------------------------------------------------------
def test_fastervit_0_keeps_its_logits():
    model = _deployed(PRESETS["faster_vit_0_224"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    fused, ref, out = _fused_and_logits(model, x)
    assert _rel_err(ref, out) <= TOL
    _check_all_fused(model, fused)
    rec = _record(fused)
    # stage 3: 6 HAT blocks, each with its carrier-token MLP; stage 4: 5 blocks
    assert len(rec.fused) == 17 and sum(".ct_mlp" in n for n in rec.fused) == 6
    assert rec.to_dict()["kept"][0] == {"part": "stages.0 conv blocks", "reason": CONV_KEPT}


@pytest.mark.parametrize("case, seed", [("hat_propagation", 0), ("hat", 1), ("global", 2)])
def test_random_configs_of_the_default_space(case, seed):
    cfg = _sample(case, seed).at_resolution(112)
    model = _deployed(cfg, fuse_bn=seed != 1, seed=seed)
    fused, ref, out = _fused_and_logits(model, torch.randn(2, 3, 112, 112), pad="after" if seed else "before")
    assert _rel_err(ref, out) <= TOL, cfg.summary()
    _check_all_fused(model, fused)


@pytest.mark.parametrize("pad", ["", "before", "after"], ids=["no_padding", "padded_before", "padded_after"])
@pytest.mark.parametrize("name", ["paper", *KNOBS, *MLP_KNOBS])
def test_every_knob_keeps_its_logits(odd, name, pad):  # noqa: F811  (odd: the fixture)
    cfg = odd.replace(**ALL_KNOBS.get(name, {}))
    model = _deployed(cfg, fuse_bn=name != "paper")
    fused, ref, out = _fused_and_logits(model, torch.randn(2, 3, 64, 64), pad)
    assert _rel_err(ref, out) <= TOL
    _check_all_fused(model, fused)
    if pad:  # the fused MLPs run on the padded layers (odd widths: 9..72, hidden 4x)
        assert fused.channel_padding is not None and fused.channel_padding.padded
        for n in _record(fused).fused:
            mlp: Any = fused.get_submodule(n)
            assert mlp.fc1.in_features % 8 == 0 and mlp.fc1.weight.shape == (mlp.fc1.out_features, mlp.fc1.in_features)


def test_half_precision_under_autocast(odd):  # noqa: F811
    torch.manual_seed(0)
    model = build_model(odd).eval()
    _randomise(model)
    model.switch_to_deploy(dtype=torch.bfloat16)
    x = torch.randn(2, 3, 64, 64)
    fused = copy.deepcopy(model)
    fuse_gelu_epilogue(fused)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = model(x), fused(x)
    assert out.dtype == ref.dtype == torch.bfloat16 and _rel_err(ref.float(), out.float()) <= 2e-2  # 8 mantissa bits


# ---------------------------------------------------------------------------------------------
# torch.compile keeps the op
# ---------------------------------------------------------------------------------------------
def _aten_ops(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> list[str]:
    """The ATen ops of ``model``'s compiled inference graph, after Inductor's decompositions (no codegen)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    seen: list[str] = []

    def record(gm: torch.fx.GraphModule, _inputs: list[torch.Tensor]) -> torch.fx.GraphModule:
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=record, decompositions=select_decomp_table())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.compile(model, backend=backend, fullgraph=True)(x)
    torch._dynamo.reset()
    return seen


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast_bf16"])
def test_the_compiled_graph_keeps_the_fused_op(tiny_config, autocast):
    model = _deployed(tiny_config)
    x = torch.randn(2, 3, 64, 64)
    plain = _aten_ops(model, x, autocast)
    fused = copy.deepcopy(model)
    fuse_gelu_epilogue(fused)
    ops = _aten_ops(fused, x, autocast)
    mlps = len(_record(fused).fused)
    assert ops.count("aten._addmm_activation.default") == mlps and "aten._addmm_activation.default" not in plain
    # the MLPs' GELUs are gone; the conv blocks' (one per conv stage here) stay: each an erf after decomposition
    assert plain.count("aten.erf.default") == mlps + 2 and ops.count("aten.erf.default") == 2


def test_inductor_calls_the_fused_op_and_matches(tiny_config):
    from torch._inductor.utils import run_and_get_code

    model = _deployed(tiny_config)
    fuse_gelu_epilogue(model)
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    with torch.no_grad():
        ref = model(x)
        out, code = run_and_get_code(torch.compile(model), x)
    torch._dynamo.reset()
    assert "\n".join(code).count("torch.ops.aten._addmm_activation.default(") == len(_record(model).fused)
    assert _rel_err(ref, out) <= TOL


# ---------------------------------------------------------------------------------------------
# state dict, what is kept, refusals
# ---------------------------------------------------------------------------------------------
def test_the_state_dict_is_the_unfused_one(tiny_config):
    torch.manual_seed(0)
    trained = build_model(tiny_config).eval()
    _randomise(trained)
    weights = copy.deepcopy(trained.state_dict())  # what is saved: the weights before deploy
    model = trained.switch_to_deploy()
    x = torch.randn(1, 3, 64, 64)
    fused, ref, out = _fused_and_logits(model, x)
    before, after = model.state_dict(), fused.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # loading: build, load the weights, deploy, fuse (the deployed tables are not in a state dict)
    again = build_model(tiny_config).eval()
    again.load_state_dict(weights)
    fuse_gelu_epilogue(again.switch_to_deploy())
    with torch.no_grad():
        assert torch.equal(again(x), out)


class _OtherMlp(Mlp):
    """An MLP type the fusion has no rule for."""


def test_mlps_without_a_rule_are_kept_with_their_reason(tiny_config):
    model = _deployed(tiny_config)
    blocks: Any = model.stages[2].blocks
    relu = blocks[0].mlp
    relu.act = nn.ReLU()
    other = _OtherMlp(blocks[1].mlp.fc1.in_features, blocks[1].mlp.fc1.out_features)
    other.load_state_dict(blocks[1].mlp.state_dict())
    blocks[1].mlp = other
    x = torch.randn(1, 3, 64, 64)
    fused, ref, out = _fused_and_logits(model, x)
    assert _rel_err(ref, out) <= TOL
    kept = dict(_record(fused).kept)
    assert kept["stages.2.blocks.0.mlp"] == "its activation is ReLU(), not exact nn.GELU()"
    assert kept["stages.2.blocks.1.mlp"] == "_OtherMlp is not the generator's Mlp"
    assert "stages.2.blocks.0.ct_mlp" in _record(fused).fused


def test_refusals(tiny_config):
    model = build_model(tiny_config).eval()
    with pytest.raises(ValueError, match="call model.switch_to_deploy"):
        fuse_gelu_epilogue(model)
    model.switch_to_deploy()
    fuse_gelu_epilogue(model)
    with pytest.raises(ValueError, match="already in the GEMM epilogue"):
        fuse_gelu_epilogue(model)
    with pytest.raises(TypeError, match="needs a FasterViT"):
        fuse_gelu_epilogue(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="switched to deploy"):
        model.train()


def test_config_is_untouched(tiny_config):
    model = _deployed(tiny_config)
    fuse_gelu_epilogue(model)
    assert model.config == tiny_config and isinstance(model.config, FasterViTConfig)
