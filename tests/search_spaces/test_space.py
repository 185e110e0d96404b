"""Search spaces as data: the default space, conditions, size, and errors that name the key/line."""

from __future__ import annotations

import numpy as np
import pytest

from search_spaces import PRESETS
from search_spaces.space import SearchSpace, SpaceError, list_builtin_spaces, load_space


def test_default_space_contains_fastervit_0_to_3():
    space = load_space("default")
    for i in range(4):
        cfg = PRESETS[f"faster_vit_{i}_224"]
        values = space.params_for(cfg)
        assert values is not None, f"faster_vit_{i}_224 is not a point of the default space"
        assert space.apply(values).arch_id == cfg.arch_id
    assert space.params_for(PRESETS["faster_vit_4_224"]) is None  # different heads: outside
    assert "default" in list_builtin_spaces()


def test_conditions_and_size():
    space = SearchSpace.from_dict(dict(
        base="faster_vit_0_224",
        knobs={"window_size[2]": {"choices": [7, 14]},
               "hat[2]": {"choices": [True, False], "when": {"window_size[2]": 7}},
               "ct_size": {"choices": [1, 2, 3], "when": {"window_size[2]": 7, "hat[2]": True}},
               "dim": {"low": 32, "high": 64, "step": 16}}))
    # window 14: 1 * dims; window 7: (hat off 1 + hat on 3) * dims
    assert space.size() == (1 + 1 + 3) * 3
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        values, cfg = space.sample_random(rng)
        if values["window_size[2]"] == 14:
            assert "hat[2]" not in values and "ct_size" not in values
        seen.add(tuple(sorted(values.items())))
        assert cfg.dim in (32, 48, 64)
    assert len(seen) > 5
    continuous = SearchSpace.from_dict(dict(knobs={"mlp_ratio": {"low": 2.0, "high": 4.0}}))
    assert continuous.size() == float("inf")


def test_round_trip_through_dict():
    space = load_space("default")
    again = SearchSpace.from_dict(space.to_dict())
    assert again.knobs == space.knobs and again.size() == space.size()


@pytest.mark.parametrize("text, message", [
    ("knobs:\n  dim: {choices: [32]}\n  widht: {choices: [1]}\n", r"knobs.widht: not a FasterViTConfig field \(line 3\)"),
    ("knobs:\n  depths[7]: {choices: [1]}\n", r"knobs.depths\[7\]: \[i\] selects a stage"),
    ("knobs:\n  dim: {low: 64, high: 32}\n", r"knobs.dim: low=64 must be <= high=32 \(line 2\)"),
    ("knobs:\n  dim: {choices: []}\n", r"knobs.dim: choices must not be empty"),
    ("knobs:\n  dim: {choices: [32], colour: red}\n", r"knobs.dim: unknown key\(s\) \['colour'\]"),
    ("knobs:\n  hat[2]: {choices: [1, 0]}\n", r"hat\[2\]: value 1 has the wrong type"),
    ("base: faster_vit_9\n", r"base: 'faster_vit_9' is neither a preset"),
    ("fixed:\n  num_heads: [2, 4, 6, 16]\n", r"num_heads\[2\]=6 must divide"),
    ("knobs: [dim]\n", r"knobs: must be a mapping"),
    ("colour: red\n", r"colour: unknown top-level key \(line 1\)"),
    ("knobs:\n  dim: {choices: [32\n", r"not valid YAML \(line"),
])
def test_bad_space_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message):
        load_space(path)


def test_missing_space_file():
    with pytest.raises(SpaceError, match="neither a built-in space"):
        load_space("/nonexistent/space.yaml")


def test_highres_space_holds_fastervit_0_at_384_and_512_and_every_point_is_valid():
    space = load_space("highres")
    assert "highres" in list_builtin_spaces()
    for res in (384, 512):
        cfg = PRESETS["faster_vit_0_224"].at_resolution(res)  # HAT stage 3: 2x2 windows
        values = space.params_for(cfg)
        assert values is not None and values[f"window_size[2]@{res}"] == cfg.window_size[2]
        assert space.apply(values).arch_id == cfg.arch_id
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(80):
        values, cfg = space.sample_random(rng)  # never refused: the windows fit each resolution
        assert cfg.resolution[0] in (384, 512)
        g3 = cfg.stages[2]
        kinds.add((cfg.resolution[0], "global" if g3.num_windows == 1 else ("HAT" if g3.hat else "window")))
        if g3.num_windows == 1:
            assert "hat[2]" not in values and "ct_size" not in values  # no carrier tokens to tune
    assert kinds == {(r, k) for r in (384, 512) for k in ("global", "HAT", "window")}


def test_tagged_knobs_and_one_of_conditions():
    space = SearchSpace.from_dict(dict(
        base="faster_vit_0_224", fixed={"hat": [False] * 4},
        knobs={"resolution": {"choices": [224, 448]},
               "window_size[2]@224": {"choices": [7, 14], "when": {"resolution": 224}},
               "window_size[2]@448": {"choices": [14, 28], "when": {"resolution": 448}},
               "hat[2]": {"choices": [True, False], "when": {"window_size[2]": {"in": [7, 14]}}}}))
    # 224: window 7 or 14, each with hat on/off; 448: window 14 (hat on/off) or 28 (no hat knob)
    assert space.size() == 4 + 3
    cfg = space.apply({"resolution": 448, "window_size[2]@448": 14, "hat[2]": True})
    assert cfg.window_size[2] == 14 and cfg.stages[2].hat
    assert space.params_for(cfg) == {"resolution": 448, "window_size[2]@448": 14, "hat[2]": True}
    again = SearchSpace.from_dict(space.to_dict())
    assert again.knobs == space.knobs and again.to_dict()["knobs"]["hat[2]"]["when"] == {
        "window_size[2]": {"in": [7, 14]}}
    with pytest.raises(ValueError, match=r"knobs window_size\[2\]@224 and window_size\[2\]@448 both set"):
        space.apply({"window_size[2]@224": 7, "window_size[2]@448": 14})


@pytest.mark.parametrize("knobs, message", [
    ({"dim": {"choices": [32]}, "dim@b": {"choices": [64]}}, r"knobs dim, dim@b all set dim: each needs a `when`"),
    ({"hat[2]": {"choices": [True], "when": {"dim": {"any": [1]}}}},
     r"knobs.hat\[2\].when.dim: a mapping condition must be \{in: \[values...\]\}"),
])
def test_bad_tagged_knobs_and_conditions(knobs, message):
    with pytest.raises(SpaceError, match=message):
        SearchSpace.from_dict(dict(base="faster_vit_0_224", knobs=knobs))


def test_new_config_knobs_are_space_knobs():
    space = SearchSpace.from_dict(dict(base="faster_vit_0_224", fixed={"hat": [False] * 4}, knobs={
        "attention": {"choices": ["twins", "edgevit"]}, "pos_bias_1d": {"choices": [True, False]},
        "stem": {"choices": ["conv", "hybrid"]}}))
    assert space.size() == 8
    with pytest.raises(SpaceError, match=r"attention: value 3 has the wrong type"):
        SearchSpace.from_dict(dict(knobs={"attention": {"choices": [3]}}))
