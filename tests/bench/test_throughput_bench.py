"""bench/throughput.py's best-mode parts (issue #16) and bench/profile_dataset.py's warm list, on the CPU:
the ratios come from best-mode records of both implementations, official-at-its-best takes the faster
compiled setting, and a warm list lives in the cache it describes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench_under_test", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tp():
    return _load("throughput")


def _data(records: dict[str, float]) -> dict:
    results = {}
    for key, ips in records.items():
        impl, name, setting = key.split("/")
        results[key] = dict(impl=impl, name=name, setting=setting, images_per_s=ips, cv=0.001)
    return {"parts": {"presets": {"env": {"gpu_name": "NVIDIA H200"}, "results": results}}}


def test_best_mode_ratio_is_ours_over_official_both_in_best_mode(tp, tmp_path):
    data = _data({"ours/faster_vit_0_224/best": 26_000.0, "official/faster_vit_0_224/best": 20_000.0,
                  "ours/faster_vit_0_224/cudagraph": 40_000.0,  # not best mode: not in the ratio
                  "ours/faster_vit_1_224/best": 10_000.0})  # no official best-mode record: no ratio
    assert tp.best_mode_ratios(data) == {"faster_vit_0_224": 1.3}
    path = tmp_path / "predictor-summary.json"
    path.write_text(json.dumps({"n_configs": 1000}))
    tp.merge_best_mode_ratios(data, path, Path("results/benchmarks/throughput-best.json"))
    summary = json.loads(path.read_text())
    assert summary["n_configs"] == 1000 and summary["best_mode_ratio_vs_official"] == {"faster_vit_0_224": 1.3}
    assert summary["best_mode_ratio_source"]["gpu"] == "NVIDIA H200"


def test_best_vs_best_check_takes_the_official_code_at_its_fastest(tp):
    data = _data({"ours/faster_vit_0_224/best": 26_000.0, "official/faster_vit_0_224/best": 24_000.0,
                  "official/faster_vit_0_224/compiled": 12_000.0})
    check = next(c for c in tp.checks(data) if c["name"].startswith("ours best >= 1.3x"))
    assert check["value"] == pytest.approx(26_000 / 24_000, abs=1e-3) and check["status"] == "MISS"


def test_fidelity_ranks_against_the_chosen_compiled_setting(tp):
    part = {"configs": {f"r{i}": {} for i in range(4)}, "results": {}}
    for i, (quick, best, compiled) in enumerate([(1, 10, 4), (2, 20, 3), (3, 30, 2), (4, 40, 1)]):
        part["results"][f"ours/r{i}/cudagraph"] = dict(images_per_s=quick)
        part["results"][f"ours/r{i}/best"] = dict(images_per_s=best)
        part["results"][f"ours/r{i}/compiled"] = dict(images_per_s=compiled)
    assert tp.fidelity_summary(part, "cudagraph", "best")["spearman_rho"] == 1.0
    assert tp.fidelity_summary(part, "cudagraph", "compiled")["spearman_rho"] == -1.0


def test_compiled_settings_are_checked(tp):
    assert tp.parse_args([]).compiled == ["best"]
    assert tp.parse_args(["--smoke"]).compiled == ["compiled"]
    assert tp.parse_args(["--compiled", "compiled,best"]).compiled == ["compiled", "best"]
    for argv in (["--compiled", "fast"], ["--smoke", "--compiled", "best"]):
        with pytest.raises(SystemExit):
            tp.parse_args(argv)


def test_the_warm_list_lives_in_the_inductor_cache(tmp_path):
    """A fresh GPU machine has an empty cache: a warm list kept beside the dataset would skip compiling there."""
    pd = _load("profile_dataset")
    cache = tmp_path / "inductor-cache"
    args = pd.parse_args(["--out", str(tmp_path / "ds.jsonl"), "--inductor-cache", str(cache)])
    assert pd.warm_list(args).parent == cache and cache.is_dir()
    smoke = pd.parse_args(["--smoke", "--out", str(tmp_path / "s.jsonl")])
    assert pd.warm_list(smoke) == tmp_path / "s.jsonl.warm"
