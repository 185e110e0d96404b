"""FasterViTConfig: serialisation, validation messages, geometry, and a property test over the space."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces import PRESETS, FasterViTConfig, build_model


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_exactly(name):
    cfg = PRESETS[name]
    assert FasterViTConfig.from_dict(cfg.to_dict()) == cfg
    assert FasterViTConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["schema_version"] == 1


def test_round_trip_non_square_and_files(tmp_path):
    cfg = PRESETS["faster_vit_0_224"].replace(resolution=(576, 960), layer_scale=1e-5, ct_init_kernel=5)
    assert cfg.to_dict()["resolution"] == [576, 960]
    path = cfg.save(tmp_path / "c.json")
    back = FasterViTConfig.load(path)
    assert back == cfg and back.arch_id == cfg.arch_id and hash(back) == hash(cfg)


def test_lists_become_tuples_and_config_is_frozen():
    cfg = FasterViTConfig(depths=[2, 3, 6, 5], hat=[False, False, True, False])
    assert cfg.depths == (2, 3, 6, 5) and isinstance(cfg.hat, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 3  # type: ignore[misc]


def test_from_dict_does_not_mutate_and_refuses_unknown_keys():
    d = PRESETS["faster_vit_0_224"].to_dict()
    before = dict(d)
    FasterViTConfig.from_dict(d)
    assert d == before
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['window'\]"):
        FasterViTConfig.from_dict({**d, "window": 7})
    with pytest.raises(ValueError, match="schema_version=99"):
        FasterViTConfig.from_dict({**d, "schema_version": 99})


def test_arch_id_ignores_training_only_fields():
    a = PRESETS["faster_vit_0_224"]
    assert a.replace(num_classes=10, drop_path_rate=0.0).arch_id == a.arch_id
    assert a.replace(dim=32).arch_id != a.arch_id


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=(2, 4, 6, 16)), r"num_heads\[2\]=6 must divide the stage-3 width 256"),
    (dict(depths=(2, 3, 6)), r"depths=\[2, 3, 6\] must have exactly 4 values"),
    (dict(depths=(2, 0, 6, 5)), r"depths\[1\]=0 must be >= 1"),
    (dict(ct_init_kernel=4), r"ct_init_kernel=4 must be odd"),
    (dict(ct_size=8), r"ct_size=8 must be <= window_size\[2\]=7"),
    (dict(window_size=(7, 7, 7, 1)), r"window_size\[3\]=1 must be >= 2"),
    (dict(window_size=(7, 7, 7, 9)), r"window_size\[3\]=9 exceeds the stage-4 feature map 7x7"),
    (dict(hat=(True, False, True, False)), r"hat\[0\]=true is not allowed: stage 1 is a conv stage"),
    (dict(mlp_ratio=0.001), r"mlp_ratio=0.001 gives an empty MLP"),
    (dict(resolution=8), r"resolution height=8 must be >= 16"),
    (dict(dim=0), r"dim=0 must be >= 1"),
    (dict(drop_path_rate=1.0), r"drop_path_rate=1.0 must be in \[0, 1\)"),
    (dict(layer_scale=-1.0), r"layer_scale=-1.0 must be null \(off\) or a positive number"),
    (dict(hat=(False, False, 1, False)), r"hat\[2\]=1 must be true or false"),
    (dict(dim=64.0), r"dim=64.0 must be an integer"),
])
def test_validation_names_knob_value_and_rule(changes, message):
    with pytest.raises(ValueError, match=message):
        PRESETS["faster_vit_0_224"].replace(**changes)


def test_geometry_of_fv0_and_any_resolution():
    g = PRESETS["faster_vit_0_224"].stages
    assert [s.feature for s in g] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert g[2].hat and g[2].windows == (2, 2) and g[2].ct_grid == (4, 4) and g[2].ct_per_window == 4
    assert not g[3].hat and g[3].windows == (1, 1)
    big = PRESETS["faster_vit_0_224"].replace(resolution=(576, 960)).stages
    assert big[2].feature == (36, 60) and big[2].padded == (42, 63) and big[2].ct_grid == (12, 18)
    odd = PRESETS["faster_vit_0_224"].replace(resolution=(541, 960)).stages
    assert odd[2].feature == (34, 60)  # true conv arithmetic: ceil at every stride-2 step


def test_at_resolution_keeps_windows_per_side():
    cfg = PRESETS["faster_vit_0_224"].at_resolution(128)
    assert cfg.window_size[2:] == (4, 4)
    assert cfg.stages[2].windows == (2, 2) and cfg.stages[3].windows == (1, 1)
    with pytest.raises(ValueError, match="cannot move"):
        PRESETS["faster_vit_0_224"].replace(ct_size=4).at_resolution(64)


# ----------------------------------------------------------------------------- property test
def _knobs(small: bool):
    """Wide ranges (mostly refused) or plausible ranges (mostly valid, some refused)."""
    ints = (lambda lo, hi, wlo, whi: st.integers(lo, hi) if small else st.integers(wlo, whi))
    four = (lambda s: st.lists(s, min_size=4, max_size=4))
    return st.fixed_dictionaries(dict(
        resolution=st.one_of(ints(48, 112, 1, 200), st.tuples(ints(48, 112, 1, 200), ints(48, 112, 1, 200))),
        in_dim=ints(1, 12, 0, 64),
        dim=st.sampled_from([4, 6, 8, 12, 16]) if small else st.integers(0, 40),
        depths=four(ints(1, 2, 0, 3)),
        num_heads=four(st.sampled_from([1, 2, 4]) if small else st.integers(0, 7)),
        window_size=four(ints(2, 4, 0, 16)),
        ct_size=ints(1, 3, 0, 8),
        ct_init_kernel=st.sampled_from([1, 3, 5]) if small else st.integers(0, 9),
        mlp_ratio=st.floats(0.5, 4.0) if small else st.floats(0.0, 8.0),
        hat=four(st.booleans()).map(lambda h: [False, False, *h[2:]]) if small else four(st.booleans()),
        do_propagation=st.booleans(),
        layer_scale=st.one_of(st.none(), st.floats(1e-6, 1.0)),
        layer_norm_last=st.booleans(),
        qkv_bias=st.booleans(),
        num_classes=st.integers(0, 7),
        # ablations / attention alternatives / proposals (issue 13)
        attn_bias=st.booleans(),
        pos_bias_1d=st.booleans(),
        ct_attention=st.sampled_from([True, True, False]) if small else st.one_of(st.booleans(), st.integers(0, 1)),
        ct_init=st.sampled_from([True, True, False]) if small else st.booleans(),
        attention=st.sampled_from(["hat", "twins", "edgevit"] if small else ["hat", "twins", "edgevit", "swin", ""]),
        ct_gate=st.sampled_from([False, False, True]) if small else st.booleans(),
        stem=st.sampled_from(["conv", "hybrid"] if small else ["conv", "hybrid", "patch"]),
        window_overlap=st.sampled_from([0, 0, 1, 2]) if small else st.integers(-1, 8),
    )).map(_plausible if small else (lambda d: d))


def _plausible(kw: dict) -> dict:
    """Small draws: Twins/EdgeViT without the HAT-only knobs, so that most such draws build."""
    if kw["attention"] != "hat":
        kw = {**kw, "hat": [False] * 4, "ct_gate": False, "ct_attention": True, "ct_init": True, "window_overlap": 0}
    return kw


_FIELDS = [f.name for f in dataclasses.fields(FasterViTConfig) if f.init]
_configs = st.one_of(_knobs(small=True), _knobs(small=True), _knobs(small=True), _knobs(small=False))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs)
def test_any_drawn_config_builds_and_runs_or_is_refused_at_creation(kw):
    try:
        cfg = FasterViTConfig(drop_path_rate=0.0, **kw)
    except ValueError as e:
        # refused up front, with a message naming the knob: that is the contract
        assert any(name in str(e) for name in _FIELDS), f"refusal names no knob: {e}"
        return
    model = build_model(cfg).eval()
    h, w = cfg.resolution
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    expected = cfg.num_classes if cfg.num_classes > 0 else cfg.num_features
    assert out.shape == (2, expected)
    assert torch.isfinite(out).all()


def test_as_resolution_is_the_one_normaliser():
    from search_spaces import as_resolution

    assert as_resolution(64) == (64, 64) and as_resolution([32, 48]) == (32, 48)
    for bad, msg in [(True, "must be an integer or"), ("224", "must be an integer or"), ((1, 2, 3), "must be an integer or"),
                     ((2.0, 3), "of integers"), (0, "resolution height=0 must be >= 1")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            as_resolution(bad)
    with pytest.raises(ValueError, match=re.escape("img_size width=8 must be >= 16 (why)")):
        as_resolution((16, 8), "img_size", 16, "why")
