"""bench/groundtruth.py runs issue #29's stable recipe and task by default, into its own file, while the
first ground truth (4 epochs, lr 1e-3) stays the committed earlier record and can never be mixed into."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.bench import bench_module

gt = bench_module("groundtruth")


def _settings(argv):
    args = gt.parse_args(argv)
    gt._validate(args)
    return gt.settings_from_args(args)


def test_the_defaults_are_the_stable_recipe_on_streamed_canvases():
    a = gt.parse_args([])
    assert (a.data, a.epochs, a.lr, a.warmup) == ("fmnist-odd:train=stream", 16.0, 3.5e-4, 0.2)
    assert gt.DEFAULT_OUT != gt.EARLIER_OUT and gt.EARLIER_OUT.name == "groundtruth.json"


def test_the_earlier_record_is_reproduced_by_its_options():
    old = json.loads(gt.EARLIER_OUT.read_text())["settings"]
    now = _settings(list(gt.EARLIER_ARGS))
    assert {k: now[k] for k in gt.RECIPE_KEYS} == {k: old[k] for k in gt.RECIPE_KEYS}


def test_the_new_defaults_never_resume_into_the_earlier_record(tmp_path):
    copy = tmp_path / "groundtruth.json"
    shutil.copy(gt.EARLIER_OUT, copy)
    before = copy.read_bytes()
    with pytest.raises(SystemExit) as e:
        gt.Store.open(copy, _settings([]), None)
    msg = str(e.value)
    for knob in ("data: file 'fmnist-odd' vs now 'fmnist-odd:train=stream'", "epochs: file 4.0 vs now 16.0",
                 "lr: file 0.001 vs now 0.00035", "warmup: file 0.1 vs now 0.2"):
        assert knob in msg
    assert copy.read_bytes() == before  # nothing written
    assert gt.Store.open(copy, _settings(list(gt.EARLIER_ARGS)), None).data["settings"]["epochs"] == 4.0


def test_analyze_only_without_a_new_file_names_the_earlier_record(monkeypatch):
    monkeypatch.setattr(gt, "DEFAULT_OUT", gt.ROOT / "results" / "benchmarks" / "no-such-groundtruth.json")
    with pytest.raises(SystemExit, match="--out results/benchmarks/groundtruth.json"):
        gt.main(["--analyze-only"])


def test_the_knob_bench_keeps_the_recipe_of_its_committed_record():
    knob = bench_module("knob_accuracy")
    settings = json.loads((gt.ROOT / "results" / "benchmarks" / "knob-accuracy.json").read_text())["settings"]
    now = knob.recipe(knob.parse_args([]))
    assert {k: now[k] for k in knob.RECIPE_KEYS} == {k: settings[k] for k in knob.RECIPE_KEYS}
