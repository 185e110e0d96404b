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


# ------------------------------------------------------------------------------ ViT-suited proxies
NEW_PROXIES = ("az_expressivity", "az_progressivity", "az_trainability", "az_nas", "zico", "meco", "meco_opt", "dss")


@pytest.fixture
def padded_config():
    """Stage 3 is 5x5 in 2x2 windows (padded to 6x6, with carrier tokens), stage 4 is 3x3 (padded)."""
    from search_spaces import FasterViTConfig

    return FasterViTConfig(resolution=80, dim=16, in_dim=8, depths=(1, 1, 2, 2), num_heads=(1, 1, 2, 2),
                           window_size=(2, 2, 2, 2), ct_size=1, num_classes=10, drop_path_rate=0.0)


def test_new_proxies_are_registered_with_citations():
    assert set(NEW_PROXIES) <= set(list_proxies())
    cites = dict(az_expressivity="CVPR 2024", az_progressivity="CVPR 2024", az_trainability="CVPR 2024",
                 az_nas="CVPR 2024", zico="ICLR 2023", meco="NeurIPS 2023", meco_opt="NeurIPS 2023", dss="CVPR 2022")
    for name, cite in cites.items():
        doc = PROXIES[name].fn.__doc__
        assert cite in doc and "FasterViT:" in doc, name


def test_block_features_put_window_tokens_back_in_image_order(padded_config):
    from evaluators.proxy_scores import _tokens_to_map, block_features

    model = init_model(padded_config, 0)
    x = torch.randn(2, 3, 80, 80)
    feats, logits = block_features(model, x)
    assert len(feats) == 1 + sum(padded_config.depths) and logits.shape == (2, 10)
    shapes = [tuple(f.map().shape) for f in feats]
    assert shapes[0] == (2, 20, 20, 16) and shapes[-1] == (2, 3, 3, 128) and shapes[3] == (2, 5, 5, 64)
    # the inverse of TransformerStage's partition: pad, cut windows, flatten -> back to the map
    geom = padded_config.stages[2]
    ws, (hp, wp) = geom.window, geom.padded
    img = torch.randn(2, 64, 5, 5)
    p = torch.nn.functional.pad(img, (0, wp - 5, 0, hp - 5))
    tokens = p.view(2, 64, hp // ws, ws, wp // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, 64)
    assert torch.equal(_tokens_to_map(geom)(tokens), img.permute(0, 2, 3, 1))


def test_new_proxies_finite_on_padded_windows_and_record_non_fastervit(padded_config):
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 80, 80, generator=gen), torch.randint(0, 10, (4,), generator=gen))
    res = compute_proxies(padded_config, list(NEW_PROXIES), batch, device="cpu", seed=0)
    assert all(r.ok for r in res.values()), {n: r.error for n, r in res.items()}
    conv_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    conv_net(batch[0])
    res = compute_proxies(conv_net, ["az_expressivity", "meco", "zico"], batch, device="cpu")
    assert "reads FasterViT block outputs" in res["az_expressivity"].error and "FasterViT" in res["meco"].error
    assert res["zico"].ok  # ZiCo and DSS need no block structure


def test_spectral_entropy_rewards_isotropic_features():
    from evaluators.proxy_scores import spectral_entropy

    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4000, 8, generator=g)
    rank1 = torch.randn(4000, 1, generator=g) * torch.arange(1.0, 9.0)
    assert spectral_entropy(iso) == pytest.approx(math.log(8), abs=0.01)
    assert spectral_entropy(rank1) == pytest.approx(0.0, abs=1e-6)
    assert spectral_entropy(torch.ones(10, 4)) == 0.0


def test_jacobian_score_peaks_at_unit_spectral_norm():
    from evaluators.proxy_scores import ProxyError, jacobian_score

    g = torch.Generator().manual_seed(0)
    v = (torch.randint(0, 2, (64, 8, 8, 4), generator=g) * 2 - 1).float()
    ident = jacobian_score(v, v)  # identity Jacobian: sigma ~ 1 (up to probe noise)
    assert -0.05 < ident <= 0.0
    assert jacobian_score(3 * v, v) < ident and jacobian_score(v / 3, v) < ident
    # stride 2: the input probe is folded 2x2 into channels, pairing positions
    big = v.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # (64, 16, 16, 4)
    # E[g_in v^T] stacks four identities: sigma = sqrt(4) = 2
    assert jacobian_score(big, v) == pytest.approx(-2 - 1 / 2 + 2, abs=0.08)
    with pytest.raises(ProxyError, match="cannot pair"):
        jacobian_score(torch.zeros(1, 16, 16, 4), torch.zeros(1, 5, 8, 4))


def test_az_nas_components_are_consistent(tiny_config, batch):
    from evaluators.proxy_scores import az_nas_components, block_features, spectral_entropy

    model = init_model(tiny_config, 0)
    comps = az_nas_components(model.train(), batch[0], seed=0)
    with torch.no_grad():
        feats, _ = block_features(model, batch[0])
    ent = [spectral_entropy(f.map().reshape(-1, f.map().shape[-1])) for f in feats]
    assert comps["expressivity"] == pytest.approx(sum(ent))
    assert comps["progressivity"] == pytest.approx(min(b - a for a, b in zip(ent, ent[1:])))
    assert comps["trainability"] <= 0.0
    other_seed = az_nas_components(model, batch[0], seed=1)["trainability"]
    assert other_seed != comps["trainability"]  # the probes come from the seed
    # more blocks -> more entropies summed
    deeper = init_model(tiny_config.replace(depths=(2, 2, 2, 1)), 0)
    assert PROXIES["az_expressivity"].fn(deeper, batch, device="cpu", seed=0) > comps["expressivity"]


def test_az_nas_per_model_combines_its_members(tiny_config, batch):
    from evaluators.proxies import AZ_NAS_MEMBERS

    res = compute_proxies(tiny_config, list(AZ_NAS_MEMBERS) + ["az_nas"], batch, device="cpu", seed=0)
    v = {n: res[n].value for n in AZ_NAS_MEMBERS}
    expected = v["az_expressivity"] + v["az_progressivity"] + v["az_trainability"] + math.log(v["flops"])
    assert res["az_nas"].value == pytest.approx(expected, rel=1e-12)
    alone = compute_proxies(tiny_config, ["az_nas"], batch, device="cpu", seed=0)["az_nas"]
    assert alone.value == pytest.approx(expected, rel=1e-9)
    # E and P come with the trainability pass: the combination costs that pass (+ FLOPs) only
    assert res["az_nas"].seconds >= res["az_trainability"].seconds + res["flops"].seconds
    charged = res["az_trainability"].seconds + res["flops"].seconds
    assert res["az_nas"].seconds < charged + res["az_expressivity"].seconds
    with pytest.raises(ValueError, match="cost_members"):
        register_proxy("x_bad", members=("a",), cost_members=("b",))


def test_az_nas_rank_is_a_sum_of_log_ranks():
    from evaluators.proxies import az_nas_rank

    recs = [dict(a=1.0, b=3.0), dict(a=2.0, b=2.0), dict(a=3.0, b=4.0), dict(a=None, b=1.0)]
    out = az_nas_rank(recs, ["a", "b"])
    n = 3  # the record with a missing value is not ranked
    assert out[3] is None
    assert out[0] == pytest.approx(math.log(1 / n) + math.log(2 / n))
    assert out[1] == pytest.approx(math.log(2 / n) + math.log(1 / n))
    assert out[2] == pytest.approx(0.0)  # best on every term
    with pytest.raises(ValueError):
        az_nas_rank(recs, [])


def test_proxy_table_and_population_scores(tiny_config, batch):
    from evaluators.proxies import (
        AZ_NAS_MEMBERS, az_nas_rank, compute_proxy_table, population_scores, proxy_timings,
    )

    cfgs = [tiny_config, tiny_config.replace(dim=32, num_heads=(1, 1, 4, 4))]
    seen = []
    table = compute_proxy_table(cfgs, list(AZ_NAS_MEMBERS), batch, device="cpu", seed=0,
                                progress=lambda i, n, rec: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)] and all(r[m].ok and r[m].seconds > 0 for r in table for m in AZ_NAS_MEMBERS
                                            if m != "flops")
    pop = population_scores(table)
    assert pop["az_nas_rank"] == az_nas_rank(table) and all(v is not None and v <= 0 for v in pop["az_nas_rank"])
    assert population_scores([{n: table[0][n] for n in ("flops",)}]) == {}
    times = proxy_timings(table + [{"az_trainability": dict(value=None, seconds=9.0, error="boom")}])
    assert times["az_trainability"]["n"] == 2 and times["az_trainability"]["max"] < 9.0
    assert times["az_expressivity"]["mean"] == pytest.approx(
        (table[0]["az_expressivity"].seconds + table[1]["az_expressivity"].seconds) / 2)


def test_zico_layer_snr_prefers_consistent_gradients():
    from evaluators.proxy_scores import ProxyError, layer_snr

    rows = torch.tensor([[1.0, 2.0, 5.0], [3.0, 2.0, -5.0]])
    # per weight: mean|g| / std(g) = 2/1, (std 0: left out), 5/5
    assert layer_snr(rows) == pytest.approx(math.log(2.0 + 1.0))
    consistent = torch.tensor([[1.0, 1.0], [1.1, 0.9]])
    noisy = torch.tensor([[1.0, 1.0], [-1.0, 3.0]])
    assert layer_snr(consistent) > layer_snr(noisy)
    assert layer_snr(torch.ones(2, 3)) is None
    one = (torch.zeros(1, 3, 64, 64), torch.zeros(1, dtype=torch.int64))
    from search_spaces import FasterViTConfig  # noqa: F401  (tiny model below)
    with pytest.raises(ProxyError, match=">= 2 batches"):
        PROXIES["zico"].fn(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 10)), one,
                           device="cpu", seed=0)


def test_meco_eigenvalue_bounds_and_collinear_channels(tiny_config, batch):
    from evaluators.proxy_scores import min_correlation_eigenvalue

    g = torch.Generator().manual_seed(0)
    indep = torch.randn(2, 64, 64, 4, generator=g)  # 4096 positions, 4 channels: correlation ~ identity
    assert torch.all(min_correlation_eigenvalue(indep) > 0.9)
    dup = torch.cat([indep[..., :3], 2 * indep[..., :1]], dim=-1)  # a channel is a multiple of another
    assert torch.all(min_correlation_eigenvalue(dup) < 1e-9)
    few = torch.randn(1, 3, 3, 8, generator=g)  # 9 positions, centred: rank up to 8 = channels
    assert float(min_correlation_eigenvalue(few)[0]) > 1e-6  # full rank: computed, not 0
    few = torch.randn(1, 2, 4, 8, generator=g)  # 8 positions, centred: rank <= 7 < 8 channels
    assert float(min_correlation_eigenvalue(few)[0]) == 0.0
    corr = torch.corrcoef(few[0].reshape(8, 8).T.double())
    assert float(torch.linalg.eigvalsh(corr)[0]) == pytest.approx(0.0, abs=1e-9)  # the shortcut is exact
    v = PROXIES["meco"].fn(init_model(tiny_config, 0), batch, device="cpu", seed=0)
    assert 0.0 <= v <= 1 + sum(tiny_config.depths)  # each block's eigenvalue lies in [0, 1]


def test_meco_opt_samples_channels_from_the_seed(tiny_config, batch):
    from evaluators.proxy_scores import meco_score

    model = init_model(tiny_config, 0).train()
    # with more channels sampled than any feature has, MeCo_opt is MeCo
    assert meco_score(model, batch[0], sample=10_000) == pytest.approx(meco_score(model, batch[0]))
    a, b = (PROXIES["meco_opt"].fn(model, batch, device="cpu", seed=s) for s in (0, 1))
    assert a != b and a > 0  # the sampled channels come from the seed
    # each block adds at most C / 8 (an eigenvalue of a correlation matrix is <= 1)
    assert a <= sum(c / 8 for c in [16] + [16, 32, 64, 64, 128]) + 1e-9


def test_dss_is_nuclear_diversity_plus_saliency():
    from evaluators.proxy_scores import dss_score

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones(1, 3, dtype=torch.float64)
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    g1 = w2.T @ torch.ones(2, 1, dtype=torch.float64) @ x  # dR/dW1 for R = 1^T W2 W1 x
    g2 = torch.ones(2, 1, dtype=torch.float64) @ (w1 @ x.T).T  # dR/dW2
    expected = (torch.linalg.matrix_norm(w1, ord="nuc") * torch.linalg.matrix_norm(g1, ord="nuc")
                + (w2 * g2).abs().sum())
    assert dss_score(net, [net[0]], [net[1]], x) == pytest.approx(math.log(float(expected)), rel=1e-12)


def test_dss_scores_a_wider_network_higher(tiny_config, batch):
    narrow = init_model(tiny_config, 0)
    wide = init_model(tiny_config.replace(dim=32, num_heads=(1, 1, 4, 4)), 0)
    fn = PROXIES["dss"].fn
    assert fn(wide, batch, device="cpu", seed=0) > fn(narrow, batch, device="cpu", seed=0)


@pytest.mark.slow
def test_new_proxies_finite_on_fastervit_0_at_64():
    from search_spaces import PRESETS

    model = init_model(PRESETS["faster_vit_0_224"].at_resolution(64), 0, num_classes=10)  # ~2 min on 2 busy CPU cores
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 64, 64, generator=gen), torch.randint(0, 10, (4,), generator=gen))
    res = compute_proxies(model, list(NEW_PROXIES), batch, device="cpu", seed=0)
    assert all(r.ok and math.isfinite(r.value) for r in res.values()), {n: r.error for n, r in res.items()}


def test_init_model_on_device_is_seeded_and_keeps_the_callers_rng(tiny_config):
    """The profiler's builder (``on_device=True``) is init_model: seeded, caller's RNG untouched."""
    before = torch.random.get_rng_state()
    a = init_model(tiny_config, 3, device="cpu", on_device=True)
    assert torch.equal(torch.random.get_rng_state(), before)
    b, c = init_model(tiny_config, 3), init_model(tiny_config, 4, device="cpu", on_device=True)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
