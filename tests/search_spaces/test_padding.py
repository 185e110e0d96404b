"""Channel padding of a deployed FasterViT (search_spaces.padding): same logits, padded shapes where
expected, aligned models untouched, every part left unpadded recorded with its reason."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from timm.layers import use_fused_attn

from search_spaces import PRESETS, FasterViTConfig, build_model, channel_padding_plan, pad_channels
from search_spaces.fastervit import ConvBlock, FasterViT
from search_spaces.padding import PaddedLayerNorm, PaddedLayerNorm2d
from search_spaces.space import load_space

from .test_knobs import KNOBS, _randomise

TOL = 1e-5  # max |padded - unpadded| / max |unpadded| of the logits, fp32 on the CPU
#: layers whose sizes padding leaves as they are (recorded in ``kept``): the image's channels, the
#: logits, the attention output of an unaligned width (heads x real head_dim) and what runs on it
LEFT_AS_IS = re.compile(r"^stem\.(conv1|patch)\.in$|^head\.out$|\.proj\.in$|\.prop\.(in|out)$")


def _deployed(cfg: FasterViTConfig, fuse_bn: bool = True, seed: int = 0) -> FasterViT:
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    _randomise(model, seed)
    return model.switch_to_deploy(fuse_bn=fuse_bn)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def _padded_and_logits(model: FasterViT, x: torch.Tensor,
                       multiple: int = 8) -> tuple[FasterViT, torch.Tensor, torch.Tensor]:
    """(padded copy, unpadded logits, padded logits)."""
    padded = copy.deepcopy(model)
    pad_channels(padded, multiple)
    with torch.no_grad():
        return padded, model(x), padded(x)


def _unaligned(model: nn.Module, multiple: int = 8) -> set[str]:
    """``name.in`` / ``name.out`` of every conv and linear layer (the unused positional MLPs aside) whose
    input or output size is not a multiple; checks that each weight has the shape its layer declares."""
    out = set()
    for name, m in model.named_modules():
        if ".rel_pos" in name or "pos_embed" in name:
            continue
        if isinstance(m, nn.Linear):
            sizes = {"in": m.in_features, "out": m.out_features}
            assert m.weight.shape == (m.out_features, m.in_features), name
        elif isinstance(m, nn.modules.conv._ConvNd):
            sizes = {"in": m.in_channels, "out": m.out_channels}
            w = m.weight.shape
            assert (w[1] * m.groups, w[0]) == ((m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d)
                                               else (m.out_channels, m.in_channels)), name
        else:
            continue
        if m.bias is not None:
            assert m.bias.shape[0] == sizes["out"], name
        out |= {f"{name}.{k}" for k, v in sizes.items() if v % multiple}
    return out


def _check_norms(model: nn.Module, multiple: int = 8) -> None:
    """Every LayerNorm / BatchNorm runs on an aligned width (a padded LayerNorm on its padded one)."""
    for name, m in model.named_modules():
        if isinstance(m, (PaddedLayerNorm, PaddedLayerNorm2d)):
            assert m.size % multiple == 0 and m.size > m.normalized_shape[0], name
        elif isinstance(m, nn.LayerNorm) and not name.endswith("prop_norm"):
            assert m.normalized_shape[0] % multiple == 0, name
        elif isinstance(m, nn.BatchNorm2d):
            assert m.num_features % multiple == 0 and m.running_var.shape == (m.num_features,), name


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------
def test_fastervit_4_pads_stage_1_and_its_head_dims_and_keeps_its_logits():
    cfg = PRESETS["faster_vit_4_224"].at_resolution(64)  # 2x2 HAT windows in stage 3, propagation, layer scale
    model = _deployed(cfg)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    padded, ref, out = _padded_and_logits(model, x)
    assert _rel_err(ref, out) <= TOL
    rec = padded.channel_padding
    assert rec is not None and rec.multiple == 8
    assert rec.padded == [("stages.0 width", 196, 200), ("stages.2 head_dim", 49, 56), ("stages.3 head_dim", 49, 56)]
    assert rec.kept == [("stem input", "in_chans=3: the image's channels, as the caller passes them")]
    assert _unaligned(padded) == {"stem.conv1.in"}
    _check_norms(padded)
    s0, s2 = padded.stages[0], padded.stages[2]
    assert padded.stem.conv2.weight.shape == (200, 64, 3, 3)
    assert s0.blocks[0].conv1.weight.shape == (200, 200, 3, 3) and s0.blocks[2].conv2.bias.shape == (200,)
    assert isinstance(s0.downsample.norm, PaddedLayerNorm2d) and s0.downsample.conv.weight.shape == (392, 200, 3, 3)
    for attn in (s2.blocks[0].attn, s2.blocks[0].ct_attn, padded.stages[3].blocks[0].attn):
        assert attn.qkv.weight.shape == (3 * attn.num_heads * 56, attn.qkv.in_features)
        assert attn.head_dim == 56 and attn.real_head_dim == 49 and attn.scale == 49**-0.5
        assert attn.fused_attn == use_fused_attn()  # SDPA's fused kernels (head_dim % 8 == 0), not the explicit path
    assert not model.stages[2].blocks[0].attn.fused_attn
    # the extra channels carry exact zeros, into the downsampler's conv
    seen: list[torch.Tensor] = []
    s0.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    s0.downsample.norm.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        padded(x)
    assert [t.shape[1] for t in seen] == [200, 200] and all(torch.count_nonzero(t[:, 196:]) == 0 for t in seen)
    assert all(torch.count_nonzero(t[:, :196]) > 0 for t in seen)


def test_an_aligned_model_is_unchanged():
    cfg = PRESETS["faster_vit_0_224"].at_resolution(96)  # widths 64..512, head dims 32
    model = _deployed(cfg)
    x = torch.randn(1, 3, 96, 96)
    padded, ref, out = _padded_and_logits(model, x)
    assert torch.equal(ref, out)
    assert padded.channel_padding is not None and padded.channel_padding.padded == []
    before, after = model.state_dict(), padded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in model.modules()] == [type(m) for m in padded.modules()]


# ---------------------------------------------------------------------------------------------
# the default space, and every knob of the generator
# ---------------------------------------------------------------------------------------------
CASES = {
    "hat_propagation": lambda c: c.hat[2] and c.do_propagation,
    "hat": lambda c: c.hat[2] and not c.do_propagation,
    "global": lambda c: not c.hat[2],
}


def _sample(case: str, seed: int) -> FasterViTConfig:
    space, rng = load_space("default"), np.random.default_rng(seed)
    while True:
        try:
            _, cfg = space.sample_random(rng)
        except ValueError:
            continue
        if CASES[case](cfg):
            return cfg


@pytest.mark.parametrize("odd", [False, True], ids=["space", "odd_widths"])
@pytest.mark.parametrize("case, seed", [("hat_propagation", 0), ("hat", 1), ("global", 2)])
def test_random_configs_of_the_default_space(case, seed, odd):
    cfg = _sample(case, seed)
    if odd:  # FasterViT-4's stage widths halved: 49, 98, 196, 392, head dims 49; stem width 36
        cfg = cfg.replace(dim=49, in_dim=36, num_heads=(2, 2, 4, 8))
    cfg = cfg.at_resolution(112)
    model = _deployed(cfg, fuse_bn=seed != 1, seed=seed)
    padded, ref, out = _padded_and_logits(model, torch.randn(2, 3, 112, 112))
    assert _rel_err(ref, out) <= TOL, cfg.summary()
    rec = padded.channel_padding
    assert rec is not None
    assert all(p % 8 == 0 and r < p < r + 8 for _, r, p in rec.padded)
    unaligned = _unaligned(padded)
    assert all(LEFT_AS_IS.search(n) for n in unaligned), unaligned
    _check_norms(padded)
    heads = [g.width // h for g, h in zip(cfg.stages[2:], cfg.num_heads[2:])]
    assert {(f"stages.{i} head_dim", d) for i, d in enumerate(heads, 2) if d % 8} == {
        (part, real) for part, real, _ in rec.padded if part.endswith("head_dim")}
    if odd:
        assert ("stages.0 width", 49, 56) in rec.padded and ("stem in_dim", 36, 40) in rec.padded
        assert any(part == "stages.2 attention output" for part, _ in rec.kept)
        assert any(n.startswith("stages.2.") and n.endswith(".proj.in") for n in unaligned)
    else:
        assert unaligned == {"stem.conv1.in"}


@pytest.fixture
def odd(tiny_config):
    """tiny_config with unaligned widths 9, 18, 36, 72 (stem 5), head dims 18, 36, two stage-4 blocks."""
    return tiny_config.replace(dim=9, in_dim=5, depths=(1, 1, 2, 2))


@pytest.mark.parametrize("fuse_bn", [True, False], ids=["bn_folded", "bn_kept"])
@pytest.mark.parametrize("name", ["paper", *KNOBS, "layer_norm_last", "scales_and_mlp3"])
def test_every_knob_keeps_its_logits(odd, name, fuse_bn):
    extra = {"paper": {}, "layer_norm_last": dict(layer_norm_last=True),
             "scales_and_mlp3": dict(layer_scale=0.5, layer_scale_conv=0.5, mlp_ratio=3.0, do_propagation=True)}
    model = _deployed(odd.replace(**KNOBS.get(name, extra.get(name, {}))), fuse_bn=fuse_bn)
    padded, ref, out = _padded_and_logits(model, torch.randn(2, 3, 64, 64))
    assert _rel_err(ref, out) <= TOL
    assert padded.channel_padding is not None
    assert [p for p, _, _ in padded.channel_padding.padded][:4] == ["stem in_dim", "stages.0 width", "stages.1 width",
                                                                     "stages.2 width"]
    unaligned = _unaligned(padded)
    assert all(LEFT_AS_IS.search(n) for n in unaligned), unaligned
    _check_norms(padded)


@pytest.mark.parametrize("name", ["paper", *KNOBS])
def test_the_plan_on_the_meta_device_is_what_padding_does(odd, name):
    cfg = odd.replace(**KNOBS.get(name, {}))
    assert channel_padding_plan(cfg, 8) == pad_channels(build_model(cfg).eval().switch_to_deploy(), 8)


def test_the_plan_of_a_large_model_needs_no_memory():
    plan = channel_padding_plan(PRESETS["faster_vit_4_224"])  # 366 M parameters: never materialised
    assert plan.padded == [("stages.0 width", 196, 200), ("stages.2 head_dim", 49, 56), ("stages.3 head_dim", 49, 56)]


def test_padding_to_other_multiples(odd):
    model = _deployed(odd.replace(stem="hybrid", attention="twins", hat=(False,) * 4))
    for multiple in (1, 16):
        padded, ref, out = _padded_and_logits(model, torch.randn(1, 3, 64, 64), multiple)
        assert _rel_err(ref, out) <= TOL
        assert all(LEFT_AS_IS.search(n) for n in _unaligned(padded, multiple))
        assert bool(padded.channel_padding.padded) == (multiple > 1)
    assert padded.stages[3].blocks[0].attn.head_dim == 48  # 36 -> 48


def test_half_precision_deploy_pads_the_half_tables(odd):
    torch.manual_seed(0)
    model = build_model(odd).eval()
    _randomise(model)
    model.switch_to_deploy(dtype=torch.bfloat16)
    padded = copy.deepcopy(model)
    pad_channels(padded)
    embed = padded.stages[2].blocks[0].pos_embed.deployed
    assert embed.dtype == torch.bfloat16 and embed.shape[-1] == 40 and not embed[..., 36:].any()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = model(x), padded(x)
    assert out.dtype == ref.dtype and _rel_err(ref.float(), out.float()) <= 2e-2  # bf16: 8 mantissa bits


# ---------------------------------------------------------------------------------------------
# what is kept, and refusals
# ---------------------------------------------------------------------------------------------
def test_unpadded_parts_are_recorded_with_their_reason(odd):
    model = _deployed(odd.replace(attention="edgevit", hat=(False,) * 4))
    padded, _, _ = _padded_and_logits(model, torch.randn(1, 3, 64, 64))
    kept = dict(padded.channel_padding.kept)
    assert kept["stem input"].startswith("in_chans=3")
    assert kept["head output"] == "num_classes=10: the logits keep their shape"
    assert "36 channels" in kept["stages.2 attention output"]
    assert "transposed depth-wise conv" in kept["stages.2 EdgeViT propagation"]
    assert "stages.3 attention output" not in kept  # width 72: aligned
    json_ready = padded.channel_padding.to_dict()
    assert json_ready["kept"][0] == {"part": "stem input", "reason": kept["stem input"]}
    assert {"part": "stages.0 width", "real": 9, "padded": 16} in json_ready["padded"]


class _OtherBlock(ConvBlock):
    """A block type without a padding rule."""


def test_a_stage_with_a_block_without_rule_is_left_as_it_is(odd):
    model = build_model(odd).eval()
    old = model.stages[1].blocks[0]
    new = _OtherBlock(18)
    new.load_state_dict(old.state_dict())
    model.stages[1].blocks[0] = new
    _randomise(model)
    model.switch_to_deploy(fuse_bn=False)
    padded, ref, out = _padded_and_logits(model, torch.randn(1, 3, 64, 64))
    assert _rel_err(ref, out) <= TOL
    rec = padded.channel_padding
    assert ("stages.1", "width 18: no padding rule for _OtherBlock (the stage is left as is)") in rec.kept
    assert "stages.1 width" not in [p for p, _, _ in rec.padded] and ("stages.0 width", 9, 16) in rec.padded
    s1 = padded.stages[1]
    assert s1.blocks[0].conv1.weight.shape == (18, 18, 3, 3) and s1.downsample.conv.weight.shape == (40, 18, 3, 3)
    assert padded.stages[0].downsample.conv.weight.shape == (18, 16, 3, 3)


def test_refusals(odd):
    model = build_model(odd).eval()
    with pytest.raises(ValueError, match="call model.switch_to_deploy"):
        pad_channels(model)
    model.switch_to_deploy()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"multiple={bad!r} must be an integer >= 1"):
            pad_channels(model, bad)
    pad_channels(model)
    with pytest.raises(ValueError, match="already padded"):
        pad_channels(model)
    with pytest.raises(TypeError, match="needs a FasterViT"):
        pad_channels(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="switched to deploy"):
        model.train()
