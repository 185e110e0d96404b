"""The elastic FasterViT: any config of a space on shared weights, equal to its extracted model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search_spaces import FasterViTConfig, build_model
from search_spaces.elastic import (ElasticFasterViT, SupernetError, config_params, extreme_configs,
                                   sample_subnet)
from search_spaces.space import load_space
from tests.spaces import tiny_space

#: every elastic knob of the issue on the tiny base: widths, depths, heads, MLP ratio, window,
#: ct_size, CT-init kernel, HAT, propagation, layer scale, and the ablation toggles
WIDE_KNOBS = {
    "in_dim": {"choices": [8, 16]},
    "depths[0]": {"choices": [1, 2]},
    "depths[3]": {"choices": [1, 2]},
    "num_heads[2]": {"choices": [1, 2, 4]},
    "num_heads[3]": {"choices": [1, 2, 4]},
    "mlp_ratio": {"choices": [2.0, 3.0, 4.0]},
    "window_size[2]": {"choices": [2, 4]},  # 4 = one global window at 64 px (no carrier tokens)
    "hat[2]": {"choices": [True, False]},
    "ct_init_kernel": {"choices": [3, 5]},
    "do_propagation": {"choices": [False, True]},
    "layer_scale": {"choices": [None, 1.0e-5]},
    "layer_scale_conv": {"choices": [None, 1.0e-5]},
    "attn_bias": {"choices": [True, False]},
    "pos_bias_1d": {"choices": [True, False]},
    "ct_attention": {"choices": [True, False], "when": {"hat[2]": True, "window_size[2]": 2}},
    "ct_init": {"choices": [True, False], "when": {"hat[2]": True, "window_size[2]": 2}},
}


@pytest.fixture(scope="module")
def space():
    return load_space(tiny_space(**WIDE_KNOBS))


@pytest.fixture(scope="module")
def extremes(space):
    return extreme_configs(space)


@pytest.fixture(scope="module")
def net(space):
    torch.manual_seed(0)
    model = ElasticFasterViT(space, num_classes=10)
    with torch.no_grad():  # statistics and scales away from their init, so a wrong slice shows
        for name, b in model.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if "gamma" in name or "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def _configs(space, n: int, seed: int = 0) -> list[FasterViTConfig]:
    rng = np.random.default_rng(seed)
    return [sample_subnet(space, rng) for _ in range(n)]


def test_elastic_forward_equals_the_extracted_model_on_random_configs(space, net, extremes):
    x = torch.randn(2, 3, 64, 64)
    configs = [*extremes, *_configs(space, 16)]
    assert len({c.arch_id for c in configs}) >= 14  # the draws really differ
    seen = set()
    for cfg in configs:
        active = net.set_active(cfg)
        with torch.no_grad():
            y = net(x)
            model = net.extract(cfg).eval()
            y_plain = model(x)
        assert isinstance(model, torch.nn.Module) and model.config == active
        assert torch.allclose(y, y_plain, atol=1e-5, rtol=0), (cfg.summary(), float((y - y_plain).abs().max()))
        build_model(active).load_state_dict(model.state_dict(), strict=True)
        seen.update(f"{k}={getattr(active, k)}" for k in ("do_propagation", "ct_attention", "pos_bias_1d",
                                                           "ct_init_kernel", "layer_scale"))
        seen.add(f"hat={active.stages[2].hat}")
    # the draws exercised both sides of the on/off knobs
    for k in ("do_propagation", "pos_bias_1d"):
        assert {f"{k}=True", f"{k}=False"} <= seen
    assert {"hat=True", "hat=False", "ct_init_kernel=3", "ct_init_kernel=5"} <= seen


def test_the_largest_config_extracts_the_full_weights(net, extremes):
    big, _ = extremes
    model = net.extract(big)
    full = dict(net.named_parameters())
    state = model.state_dict()
    assert big.stages[2].hat and big.do_propagation and big.layer_scale is not None and big.ct_init_kernel == 5
    for name, _ in model.named_parameters():  # every parameter of the largest is a whole supernet tensor
        assert torch.equal(state[name], full[name].detach()), name
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in net.parameters())


def test_smaller_configs_take_the_leading_slices_of_q_k_v_and_the_kernel_centre(net, extremes):
    big, _ = extremes
    small = big.replace(dim=8, num_heads=(1, 1, 1, 2), mlp_ratio=2.0, ct_init_kernel=3)
    full, part = net.extract(big).state_dict(), net.extract(small).state_dict()
    key = "stages.2.blocks.0.attn.qkv.weight"
    c_big, c_small = 4 * big.dim, 4 * small.dim
    q_k_v = full[key].view(3, c_big, c_big)[:, :c_small, :c_small].reshape(3 * c_small, c_small)
    assert torch.equal(part[key], q_k_v)  # each of q, k, v keeps its own first channels
    conv = "stages.2.ct_init.pos_conv.weight"
    assert torch.equal(part[conv], full[conv][:c_small, :, 1:4, 1:4])  # 3x3 = centre of the 5x5
    fc1 = "stages.2.blocks.0.mlp.fc1.weight"
    assert torch.equal(part[fc1], full[fc1][: 2 * c_small, :c_small])
    bias = "stages.2.blocks.0.attn.rel_pos.mlp.fc2.weight"  # one position-bias output per head
    assert torch.equal(part[bias], full[bias][:1])


def test_extracted_weights_load_into_the_config_at_its_own_resolution(space, net):
    cfg = _configs(space, 1, seed=3)[0]
    model = net.extract(cfg)
    at_128 = cfg.at_resolution(128)
    build_model(at_128).load_state_dict(model.state_dict(), strict=True)  # weights do not depend on the size


def test_set_active_moves_a_config_to_the_training_resolution(space):
    net = ElasticFasterViT(space, resolution=96, num_classes=10)
    cfg = space.apply({})
    active = net.set_active(cfg)
    assert active.resolution == (96, 96) and active.window_size == cfg.at_resolution(96).window_size
    assert net(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_forward_before_set_active_is_an_error(space):
    with pytest.raises(RuntimeError, match="set_active"):
        ElasticFasterViT(space)(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("knob,values,words", [
    ("attention", ["hat", "twins"], "Twins and EdgeViT"),
    ("stem", ["conv", "hybrid"], "hybrid stem"),
    ("qkv_bias", [True, False], "q/k/v bias"),
    ("layer_norm_last", [False, True], "BatchNorm in one choice"),
    ("resolution", [64, 96], "one training resolution"),
    ("window_overlap", [0, 1], "halo attention"),
    ("ct_gate", [False, True], "gate"),
])
def test_knobs_that_cannot_share_weights_are_refused_by_name(knob, values, words):
    sp = tiny_space(**{knob: {"choices": values}})
    with pytest.raises(SupernetError) as e:
        ElasticFasterViT(sp)
    msg = str(e.value)
    assert f"knob {knob}" in msg and str(values[1]) in msg and words in msg


def test_two_layer_scale_values_are_refused():
    sp = tiny_space(layer_scale={"choices": [None, 1e-5, 1e-6]})
    with pytest.raises(SupernetError, match=r"knob layer_scale \(values \[1e-06, 1e-05\]\).*initial value"):
        ElasticFasterViT(sp)


def test_an_unsupported_fixed_value_is_refused():
    sp = tiny_space(base={"attention": "twins", "hat": [False] * 4})
    with pytest.raises(SupernetError, match="attention='twins' is not supported.*implements attention='hat'"):
        ElasticFasterViT(sp)


def test_a_config_beyond_the_supernet_is_refused_with_the_reason(space, net):
    cfg = space.apply({})
    with pytest.raises(SupernetError, match=r"dim=32 > the supernet's 24"):
        net.set_active(cfg.replace(dim=32))
    with pytest.raises(SupernetError, match=r"depths\[2\]=3 > the supernet's 2"):
        net.set_active(cfg.replace(depths=(1, 1, 3, 1)))
    with pytest.raises(SupernetError, match="qkv_bias=False"):
        net.set_active(cfg.replace(qkv_bias=False))


def test_extremes_are_the_largest_and_smallest_valid_configs(space, extremes):
    big, small = extremes
    assert (big.dim, big.in_dim, big.depths, big.mlp_ratio) == (24, 16, (2, 1, 2, 2), 4.0)
    assert (small.dim, small.in_dim, small.depths, small.mlp_ratio) == (8, 8, (1, 1, 1, 1), 2.0)
    rng = np.random.default_rng(1)
    sizes = [config_params(sample_subnet(space, rng)) for _ in range(10)]
    assert config_params(small) <= min(sizes) and config_params(big) >= max(sizes)


def test_extremes_skip_values_invalid_at_the_resolution():
    # ct_size 3 does not fit a window of 2: the largest takes the largest ct_size that does
    sp = tiny_space(ct_size={"choices": [1, 2, 3]})
    big, small = extreme_configs(sp)
    assert big.ct_size == 2 and small.ct_size == 1
    with pytest.raises(SupernetError, match="no largest config"):
        extreme_configs(tiny_space(ct_size={"choices": [3]}))
