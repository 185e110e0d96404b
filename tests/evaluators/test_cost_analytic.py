"""The analytic FLOP/param count equals fvcore's trace on varied configs (so searches can use it)."""

from __future__ import annotations

import pytest

from evaluators.cost import analytic_flops, count_flops, count_params, static_cost
from search_spaces import PRESETS, FasterViTConfig, build_model


def _variants():
    tiny = FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                           window_size=(2, 2, 2, 2), ct_size=1, num_classes=10)
    return [
        tiny,
        tiny.replace(do_propagation=True, ct_init_kernel=5, layer_norm_last=True, hat=(False, False, True, True)),
        tiny.replace(resolution=(72, 40), mlp_ratio=2.5, num_classes=0),
        tiny.replace(hat=(False,) * 4, window_size=(2, 2, 4, 2)),
        PRESETS["faster_vit_0_224"].replace(resolution=(160, 128), ct_size=3, window_size=(7, 7, 7, 4)),
    ]


def _knob_variants():
    """Every ablation / alternative / proposal knob, on padded and non-square maps too."""
    tiny = _variants()[0].replace(depths=(1, 1, 2, 3))
    no_hat = (False,) * 4
    return [
        tiny.replace(attn_bias=False, pos_bias_1d=False),
        tiny.replace(ct_attention=False, do_propagation=True),
        tiny.replace(ct_init=False, ct_init_kernel=5),
        tiny.replace(ct_gate=True, hat=(False, False, True, True), window_size=(2, 2, 2, 2)),
        tiny.replace(stem="hybrid", resolution=(70, 50)),
        tiny.replace(window_overlap=1, ct_gate=True),
        tiny.replace(resolution=80, window_size=(2, 2, 3, 3), window_overlap=2, ct_size=1),
        tiny.replace(attention="twins", hat=no_hat),
        tiny.replace(attention="twins", hat=no_hat, resolution=(72, 40), window_size=(2, 2, 2, 2)),
        tiny.replace(attention="edgevit", hat=no_hat),
        tiny.replace(attention="edgevit", hat=no_hat, resolution=80, window_size=(2, 2, 2, 3), mlp_ratio=2.5),
    ]


@pytest.mark.parametrize("cfg", _knob_variants(), ids=lambda c: c.summary())
def test_analytic_equals_fvcore_for_every_knob(cfg):
    assert analytic_flops(cfg) == count_flops(build_model(cfg), cfg.resolution)


@pytest.mark.parametrize("cfg", _variants(), ids=lambda c: c.summary())
def test_analytic_equals_fvcore(cfg):
    model = build_model(cfg)
    assert analytic_flops(cfg) == count_flops(model, cfg.resolution)
    rec = static_cost(cfg)
    assert rec.params == count_params(model) and rec.flops == analytic_flops(cfg)


def test_static_cost_methods_and_errors():
    cfg = _variants()[0]
    assert static_cost(cfg, method="fvcore") == static_cost(cfg)
    with pytest.raises(ValueError, match="method='thop'"):
        static_cost(cfg, method="thop")
    assert static_cost(cfg).gflops == pytest.approx(static_cost(cfg).flops / 1e9)
