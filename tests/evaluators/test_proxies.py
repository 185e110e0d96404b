"""Zero-cost proxies: one shared suite over every registered proxy, then proxy-specific facts."""

from __future__ import annotations

import math

import pytest
import torch

from evaluators.data import load_dataset, sample_batch
from evaluators.proxies import (
    ENSEMBLE_MEMBERS, PROXIES, ProxyError, ProxyResult, compute_proxies, init_model, list_proxies, rank_ensemble,
    register_proxy,
)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def batch(fmnist):
    """8 real Fashion-MNIST training images at 64 px (the tiny config's resolution)."""
    return sample_batch(fmnist.train, batch_size=8, resolution=64, seed=0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ every proxy
@pytest.mark.parametrize("name", list_proxies())
def test_every_proxy_is_finite_deterministic_and_leaves_the_model_alone(name, tiny_config, batch):
    model = init_model(tiny_config, 0)
    model.eval()
    before = _state(model)
    fn = PROXIES[name].fn
    a = fn(model, batch, device="cpu", seed=0)
    b = fn(model, batch, device="cpu", seed=0)
    assert isinstance(a, float) and math.isfinite(a)
    assert a == b
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())
    # the same seed builds the same model, hence the same score
    assert fn(init_model(tiny_config, 0), batch, device="cpu", seed=0) == a


@pytest.mark.parametrize("name", ["params", "flops"])
def test_wider_network_scores_higher_on_size_proxies(name, tiny_config, batch):
    narrow = init_model(tiny_config, 0)
    wide = init_model(tiny_config.replace(dim=32, num_heads=(1, 1, 4, 4)), 0)
    fn = PROXIES[name].fn
    assert fn(wide, batch, device="cpu", seed=0) > fn(narrow, batch, device="cpu", seed=0)


def test_flops_proxy_equals_fvcore_trace(tiny_config, batch):
    from evaluators.cost import count_flops

    model = init_model(tiny_config, 0)
    assert PROXIES["flops"].fn(model, batch, device="cpu", seed=0) == float(count_flops(model, (64, 64)))


def test_registry_and_sign_convention_documented():
    import evaluators.proxies as mod

    assert {"params", "flops", "synflow", "snip", "grad_norm", "jacob_cov", "naswot", "ensemble"} <= set(list_proxies())
    assert "HIGHER = BETTER" in mod.__doc__ and '"bigger nets score higher"' in mod.__doc__
    with pytest.raises(ValueError, match="already registered"):
        register_proxy("params")(lambda model, batch, *, device, seed: 0.0)


# ------------------------------------------------------------------------------ specifics
def test_init_model_is_seeded_without_touching_the_global_rng(tiny_config):
    state = torch.get_rng_state()
    a, b, c = init_model(tiny_config, 5), init_model(tiny_config, 5), init_model(tiny_config, 6)
    assert torch.equal(torch.get_rng_state(), state)
    wa, wb, wc = (m.head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert init_model(tiny_config, 0, num_classes=3).head.out_features == 3


def test_synflow_float64_on_a_moderately_large_config(batch):
    from search_spaces import PRESETS

    cfg = PRESETS["faster_vit_0_224"].at_resolution(64)  # 31M parameters, depth 2-3-6-5
    model = init_model(cfg, 0, num_classes=10)
    v = PROXIES["synflow"].fn(model, batch, device="cpu", seed=0)
    assert math.isfinite(v) and v > 0
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


@pytest.mark.slow
def test_synflow_finite_on_fastervit_6_at_224():
    from search_spaces import PRESETS

    model = init_model(PRESETS["faster_vit_6_224"], 0)  # 1.36 B parameters; ~19 GB RAM at peak
    batch = (torch.zeros(2, 3, 224, 224), torch.zeros(2, dtype=torch.int64))
    v = PROXIES["synflow"].fn(model, batch, device="cpu", seed=0)
    assert math.isfinite(v) and v > 0


def test_naswot_uses_pre_activation_sign_and_rejects_duplicates(tiny_config, batch):
    model = init_model(tiny_config, 0)
    x, y = batch
    dup = (torch.cat([x[:4], x[:1]]), torch.cat([y[:4], y[:1]]))
    with pytest.raises(ProxyError, match="singular"):
        PROXIES["naswot"].fn(model, dup, device="cpu", seed=0)
    # the kernel grows with the number of compared units: a deeper net has a larger log-det
    deeper = init_model(tiny_config.replace(depths=(2, 2, 2, 1)), 0)
    assert PROXIES["naswot"].fn(deeper, batch, device="cpu", seed=0) > PROXIES["naswot"].fn(model, batch, device="cpu",
                                                                                            seed=0)


def test_jacob_cov_prefers_uncorrelated_jacobians(tiny_config, batch):
    model = init_model(tiny_config, 0)
    v = PROXIES["jacob_cov"].fn(model, batch, device="cpu", seed=0)
    # the maximum over correlation matrices is the identity: -n * (log(1 + k) + 1 / (1 + k))
    n, k = batch[0].shape[0], 1e-5
    assert v <= -n * (math.log(1 + k) + 1 / (1 + k)) + 1e-9


def test_ensemble_combines_its_members(tiny_config, batch):
    res = compute_proxies(tiny_config, list(ENSEMBLE_MEMBERS) + ["ensemble"], batch, device="cpu", seed=0)
    n = batch[0].shape[0]
    expected = res["synflow"].value + math.log(res["snip"].value) + res["naswot"].value / n
    assert res["ensemble"].ok and res["ensemble"].value == pytest.approx(expected, rel=1e-12)
    alone = compute_proxies(tiny_config, ["ensemble"], batch, device="cpu", seed=0)["ensemble"]
    assert alone.value == pytest.approx(expected, rel=1e-9)
    assert res["ensemble"].seconds >= sum(res[m].seconds for m in ENSEMBLE_MEMBERS)


def test_rank_ensemble():
    records = [dict(a=1.0, b=30.0), dict(a=2.0, b=10.0), dict(a=3.0, b=20.0), dict(a=None, b=5.0),
               dict(a=ProxyResult("a", 4.0, 0.1), b={"value": 40.0})]
    out = rank_ensemble(records, ["a", "b"])
    assert out[3] is None
    # ranks among the 4 complete records (0..1): a -> 0, 1/3, 2/3, 1 ; b -> 2/3, 0, 1/3, 1
    assert out[0] == pytest.approx((0 + 2 / 3) / 2) and out[1] == pytest.approx((1 / 3 + 0) / 2)
    assert out[2] == pytest.approx((2 / 3 + 1 / 3) / 2) and out[4] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rank_ensemble(records, [])


def test_failing_proxy_is_recorded_and_the_others_run(tiny_config, batch, monkeypatch):
    def broken(model, batch, *, device, seed):
        raise RuntimeError("boom")

    def not_finite(model, batch, *, device, seed):
        return float("nan")

    from evaluators.proxies import Proxy

    monkeypatch.setitem(PROXIES, "broken", Proxy("broken", broken, "always fails"))
    monkeypatch.setitem(PROXIES, "not_finite", Proxy("not_finite", not_finite, "NaN"))
    res = compute_proxies(tiny_config, ["params", "broken", "not_finite", "naswot"], batch, device="cpu", seed=0)
    assert res["broken"].value is None and res["broken"].error == "RuntimeError: boom"
    assert res["not_finite"].value is None and "non-finite" in res["not_finite"].error
    assert res["params"].ok and res["naswot"].ok and res["broken"].seconds >= 0
    assert res["broken"].to_dict()["error"] == "RuntimeError: boom"


def test_compute_proxies_from_config_equals_from_model(tiny_config, batch):
    names = ["params", "synflow", "grad_norm"]
    from_cfg = compute_proxies(tiny_config, names, batch, device="cpu", seed=7)
    from_model = compute_proxies(init_model(tiny_config, 7), names, batch, device="cpu", seed=7)
    assert all(from_cfg[n].value == from_model[n].value for n in names)
    with pytest.raises(ValueError, match="unknown proxy 'nope'"):
        compute_proxies(tiny_config, ["nope"], batch, device="cpu")
