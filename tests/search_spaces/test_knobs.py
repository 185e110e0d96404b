"""The ablation / alternative / proposal knobs of FasterViTConfig: each builds, runs, deploys, exports,
does what its docstring says, and is refused with a message naming it when it cannot apply."""

from __future__ import annotations

import copy

import pytest
import torch

from search_spaces import PRESETS, FasterViTConfig, build_model
from search_spaces.config import HASHED_WHEN_CHANGED
from search_spaces.fastervit import (CarrierTokenInit, EdgeViTBlock, HaloRelPosBias, RelPosBias, SubsampledAttention,
                                     TokenPosEmbed, TwinsBlock, WindowAttention)

NO_HAT = (False,) * 4
#: one config per knob value that is not the default (plus a few combinations)
KNOBS = {
    "attn_bias_off": dict(attn_bias=False),
    "pos_bias_1d_off": dict(pos_bias_1d=False),
    "ct_attention_off": dict(ct_attention=False),
    "ct_attention_off_prop": dict(ct_attention=False, do_propagation=True, layer_scale=0.5),
    "ct_init_off": dict(ct_init=False),
    "ct_gate": dict(ct_gate=True),
    "stem_hybrid": dict(stem="hybrid"),
    "overlap1": dict(window_overlap=1),
    "overlap1_gate_nobias": dict(window_overlap=1, ct_gate=True, attn_bias=False),
    "twins": dict(attention="twins", hat=NO_HAT),
    "twins_nobias_nopos": dict(attention="twins", hat=NO_HAT, attn_bias=False, pos_bias_1d=False),
    "edgevit": dict(attention="edgevit", hat=NO_HAT, layer_scale=0.5),
}


@pytest.fixture
def base(tiny_config):
    """tiny_config with two stage-4 blocks (so Twins alternates LSA and GSA there too)."""
    return tiny_config.replace(depths=(1, 1, 2, 2))


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics, so that no zero-init or unit statistics hide a difference."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(torch.randn(t.shape, generator=g) * 0.1)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("name", list(KNOBS))
def test_knob_builds_runs_deploys_and_exports(base, name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from nas.export import export_onnx

    cfg = base.replace(**KNOBS[name])
    model = build_model(cfg).eval()
    _randomise(model)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        deployed = copy.deepcopy(model).switch_to_deploy()
        out = deployed(x)
    assert ref.shape == (3, 10) and torch.isfinite(ref).all()
    assert _rel_err(ref, out) <= 1e-5, "switch_to_deploy changed the outputs"
    meta = export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {meta["input"]: x.numpy()})[0]
    assert _rel_err(ref, torch.from_numpy(onnx_out)) <= 1e-4, "ONNX round trip changed the outputs"
    model.train()
    model(x).sum().backward()  # trains: every parameter receives a gradient
    assert all(p.grad is not None for p in model.parameters()), [n for n, p in model.named_parameters() if p.grad is None]


def test_defaults_are_the_paper_model_and_keep_arch_ids():
    cfg = PRESETS["faster_vit_0_224"]
    assert {k: getattr(cfg, k) for k in HASHED_WHEN_CHANGED} == HASHED_WHEN_CHANGED
    # ids published before these knobs existed (saved studies refer to them)
    assert cfg.arch_id == "51a0d7b0e282" and PRESETS["faster_vit_2_224"].arch_id == "b2dde69e1e1c"
    for k, v in dict(attn_bias=False, stem="hybrid", window_overlap=1, ct_gate=True).items():
        changed = cfg.replace(**{k: v})
        assert changed.arch_id != cfg.arch_id and FasterViTConfig.from_json(changed.to_json()) == changed
    # a default config writes the JSON it wrote before these knobs existed (older readers accept it)
    assert not set(cfg.to_dict()) & set(HASHED_WHEN_CHANGED)
    assert set(HASHED_WHEN_CHANGED) <= set(cfg.to_dict(full=True))
    assert FasterViTConfig.from_dict(cfg.to_dict(full=True)) == cfg
    twins = cfg.replace(attention="twins", hat=NO_HAT)
    assert twins.to_dict()["attention"] == "twins" and "stem" not in twins.to_dict()


@pytest.mark.parametrize("changes, message", [
    (dict(ct_gate=True, hat=NO_HAT), r"ct_gate=true needs carrier tokens, but no stage has HAT"),
    (dict(ct_attention=False, hat=NO_HAT), r"ct_attention=false needs carrier tokens"),
    (dict(ct_init=False, window_size=(2, 2, 4, 2)), r"ct_init=false needs carrier tokens"),  # one window: no CTs
    (dict(window_overlap=2), r"window_overlap=2 must be < window_size\[2\]=2"),
    (dict(window_overlap=-1), r"window_overlap=-1 must be >= 0"),
    (dict(window_overlap=1, window_size=(2, 2, 4, 2)), r"window_overlap=1 has no effect: no transformer stage"),
    (dict(window_overlap=1, attention="edgevit", hat=NO_HAT), r"window_overlap=1 needs attention='hat'"),
    (dict(attention="twins"), r"hat\[2\]=true needs attention='hat': attention='twins' replaces"),
    (dict(attention="swin"), r"attention='swin' must be one of 'hat', 'twins', 'edgevit'"),
    (dict(stem="patch"), r"stem='patch' must be one of 'conv', 'hybrid'"),
    (dict(attn_bias=1), r"attn_bias=1 must be true or false"),
    (dict(pos_bias_1d="no"), r"pos_bias_1d='no' must be true or false"),
])
def test_refusals_name_knob_value_and_rule(base, changes, message):
    with pytest.raises(ValueError, match=message):
        base.replace(**changes)


def _modules(cfg, kind):
    return [m for m in build_model(cfg).modules() if isinstance(m, kind)]


def test_ablations_remove_exactly_their_component(base):
    assert _modules(base, RelPosBias) and not _modules(base.replace(attn_bias=False), RelPosBias)
    assert _modules(base, TokenPosEmbed) and not _modules(base.replace(pos_bias_1d=False), TokenPosEmbed)
    full, no_cta = build_model(base), build_model(base.replace(ct_attention=False))
    assert all(b.ct_attn is not None for b in full.stages[2].blocks)
    assert all(b.ct_attn is None and b.has_ct for b in no_cta.stages[2].blocks)
    assert no_cta.stages[2].ct_init is not None  # carrier tokens are still made and join their windows
    assert not any(k.startswith("stages.2.blocks.0.ct_mlp") for k in no_cta.state_dict())
    no_init = build_model(base.replace(ct_init=False)).stages[2].ct_init
    assert no_init.pos_conv is None


def test_ct_init_off_is_plain_average_pooling(base):
    geom = base.stages[2]  # 4x4 map, 2x2 windows of 2, one carrier token per window
    init = CarrierTokenInit(geom.width, geom, base.ct_size, conv=False)
    x = torch.randn(2, geom.width, *geom.padded)
    expected = torch.nn.functional.avg_pool2d(x, 2).flatten(2).transpose(1, 2)
    assert torch.allclose(init(x), expected)


def test_ct_gate_starts_as_the_paper_block_and_learns(base):
    torch.manual_seed(0)
    plain = build_model(base).eval()
    gated = build_model(base.replace(ct_gate=True)).eval()
    missing = gated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".gate." in k for k in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel_err(plain(x), gated(x)) <= 1e-6  # factor 2*sigmoid(0) = 1 at init
    # the gate scales what the window tokens take from the carrier tokens: silenced, they take nothing
    attn, geom = gated.stages[2].blocks[0].attn, base.stages[2]
    L = geom.ct_per_window
    t = torch.randn(geom.num_windows, L + geom.window**2, geom.width)
    t2 = t.clone()
    t2[:, :L] += torch.randn(geom.num_windows, L, geom.width)  # other carrier tokens
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.2)
        attn.gate.weight.zero_()
        attn.gate.bias.zero_()
        assert (attn(t)[:, L:] - attn(t2)[:, L:]).abs().max() > 1e-3
        attn.gate.bias.fill_(-1000.0)
        assert (attn(t)[:, L:] - attn(t2)[:, L:]).abs().max() < 1e-6


def _halo_reference(attn: WindowAttention, x: torch.Tensor, geom) -> torch.Tensor:
    """Window attention with halo keys by brute force: per window, keys = its carrier tokens + every
    map token within ``overlap`` pixels of the window (none outside the map)."""
    (nh, nw), ws, k, L = geom.windows, geom.window, geom.overlap, geom.ct_per_window
    h, d = attn.num_heads, attn.head_dim
    qkv = attn.qkv(x).view(x.shape[0], x.shape[1], 3, h, d)
    bias = attn.rel_pos()[0]  # (heads, L + ws², L + (ws+2k)²)
    B = x.shape[0] // (nh * nw)
    outs = []
    for b in range(B):
        for wi in range(nh):
            for wj in range(nw):
                w = b * nh * nw + wi * nw + wj
                keys, vals, cols = [qkv[w, :L, 1]], [qkv[w, :L, 2]], list(range(L))
                for a in range(ws + 2 * k):
                    for c in range(ws + 2 * k):
                        r, s = wi * ws + a - k, wj * ws + c - k
                        if 0 <= r < nh * ws and 0 <= s < nw * ws:
                            src = b * nh * nw + (r // ws) * nw + s // ws
                            tok = L + (r % ws) * ws + s % ws
                            keys.append(qkv[src, tok:tok + 1, 1])
                            vals.append(qkv[src, tok:tok + 1, 2])
                            cols.append(L + a * (ws + 2 * k) + c)
                kk, vv = torch.cat(keys).transpose(0, 1), torch.cat(vals).transpose(0, 1)  # (heads, n, d)
                q = qkv[w, :, 0].transpose(0, 1)
                logits = q @ kk.transpose(-1, -2) * attn.scale + bias[:, :, cols]
                outs.append((logits.softmax(-1) @ vv).transpose(0, 1).reshape(x.shape[1], h * d))
    return attn.proj(torch.stack(outs))


@pytest.mark.parametrize("res, windows, overlap", [
    (64, (2, 2, 2, 2), 1),
    (80, (2, 2, 3, 3), 2),  # stage 3: 5x5 padded to 6x6 (2x2 windows of 3); stage 4: one window, no halo
])
def test_window_overlap_equals_brute_force_halo_attention(base, res, windows, overlap):
    cfg = base.replace(resolution=res, window_size=windows, window_overlap=overlap)
    assert cfg.stages[3].overlap == 0
    geom = cfg.stages[2]
    block = build_model(cfg).stages[2].blocks[0]
    attn = block.attn
    assert isinstance(attn, WindowAttention) and isinstance(attn.rel_pos, HaloRelPosBias)
    with torch.no_grad():
        for p in attn.rel_pos.parameters():
            p.add_(torch.randn_like(p))  # a bias that varies over offsets
        x = torch.randn(2 * geom.num_windows, geom.ct_per_window + geom.window**2, geom.width)
        for fused in (False, True):
            attn.fused_attn = fused
            assert _rel_err(_halo_reference(attn, x, geom), attn(x)) <= 1e-5


def test_window_overlap_lets_windows_see_their_neighbours(base):
    """A pixel change in one stage-3 window reaches the next window's tokens in the window attention."""
    cfg = base.replace(window_overlap=1)
    geom = cfg.stages[2]
    attn = build_model(cfg).stages[2].blocks[0].attn
    x = torch.randn(geom.num_windows, geom.ct_per_window + 4, geom.width)
    y = x.clone()
    y[1, geom.ct_per_window] += 1.0  # first token of window (0, 1): map pixel (0, 2), in the halo of window (0, 0)
    with torch.no_grad():
        a, b = attn(x), attn(y)
    assert (a[0] - b[0]).abs().max() > 1e-4
    assert torch.equal(a[3], b[3])  # window (1, 1): rows 1-4 with its halo, the pixel is in row 0
    plain = build_model(base).stages[2].blocks[0].attn
    with torch.no_grad():
        assert torch.equal(plain(x)[0], plain(y)[0])  # without overlap windows are independent


def test_twins_alternates_lsa_and_gsa_and_edgevit_uses_delegates(base):
    twins = build_model(base.replace(attention="twins", hat=NO_HAT))
    blocks = twins.stages[2].blocks
    assert all(isinstance(b, TwinsBlock) for b in blocks)
    assert [b.global_attn for b in blocks] == [False, True]
    gsa = blocks[1].attn
    assert isinstance(gsa, SubsampledAttention) and gsa.sr.kernel_size == base.stages[2].windows == (2, 2)
    assert twins.stages[3].blocks[1].attn.sr is None  # one window in stage 4: plain global attention
    edge = build_model(base.replace(attention="edgevit", hat=NO_HAT))
    b = edge.stages[2].blocks[0]
    assert isinstance(b, EdgeViTBlock) and b.rate == (2, 2) and b.prop.kernel_size == (2, 2)
    assert edge.stages[3].blocks[0].prop is None
    assert not _modules(base.replace(attention="edgevit", hat=NO_HAT), CarrierTokenInit)


@pytest.mark.parametrize("res", [64, (70, 50)])
def test_hybrid_stem_keeps_the_stem_geometry(base, res):
    cfg = base.replace(resolution=res)
    x = torch.randn(1, 3, *cfg.resolution)
    conv, hybrid = build_model(cfg).stem.eval(), build_model(cfg.replace(stem="hybrid")).stem.eval()
    with torch.no_grad():
        assert conv(x).shape == hybrid(x).shape == (1, cfg.dim, *cfg.stages[0].feature)
    assert hybrid.patch.kernel_size == (4, 4)


def test_summary_names_non_default_knobs(base):
    s = base.replace(attn_bias=False, window_overlap=1, stem="hybrid", ct_gate=True).summary()
    assert s.endswith(" -attn_bias ct_gate stem:hybrid overlap1")
    assert "twins" in base.replace(attention="twins", hat=NO_HAT).summary()
    assert "-attn_bias" not in base.summary()


def test_bench_knobs_smoke_writes_every_ratio(tmp_path):
    """bench/knobs.py (the GPU evidence script) on the CPU: every group and row, with paper ratios."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "knobs.py"
    spec = importlib.util.spec_from_file_location("bench_knobs", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "knobs.json"
    result = bench.main(["--smoke", "--rounds", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["complete"] and result["smoke"]
    groups = result["groups"]
    assert set(groups) == {"table_s2", "table_6_fv2", "proposals"}
    s2 = {r["variant"]: r for r in groups["table_s2"]["rows"]}
    assert set(bench.PAPER_S2) < set(s2) and s2["baseline"]["ratio"] == 1.0
    assert all(s2[v]["paper_ratio"] == bench.PAPER_S2[v] and s2[v]["ratio"] > 0 for v in bench.PAPER_S2)
    t6 = {r["variant"]: r for r in groups["table_6_fv2"]["rows"]}
    assert t6["twins"]["paper_ratio"] == pytest.approx(3668 / 3161) and t6["edgevit"]["ratio"] > 0
    assert {"ct_gate", "stem_hybrid", "window_overlap_1", "window_overlap_2"} < {r["variant"] for r in groups["proposals"]["rows"]}
    # each distinct architecture is measured once per round and shared between groups
    assert len(result["measurements"]) == len({r["arch_id"] for g in groups.values() for r in g["rows"]})


@pytest.mark.parametrize("changes, dropped", [
    (dict(attn_bias=False), ".rel_pos."),
    (dict(pos_bias_1d=False), "pos_embed."),
    (dict(ct_attention=False), "ct_"),  # ct_norm1, ct_attn, ct_mlp, gamma_ct_* (but gamma_ct_attn of propagation)
    (dict(ct_init=False), ".ct_init.pos_conv."),
])
def test_ablation_of_a_trained_model_loads_its_weights(base, changes, dropped):
    """Table S.2's "removed after training" column: the ablated network takes the trained weights
    with nothing missing; only the removed component's weights are left over."""
    trained = build_model(base.replace(do_propagation=True, layer_scale=0.5)).state_dict()
    ablated = build_model(base.replace(do_propagation=True, layer_scale=0.5, **changes))
    result = ablated.load_state_dict(trained, strict=False)
    assert not result.missing_keys
    assert result.unexpected_keys and all(dropped in k for k in result.unexpected_keys)
