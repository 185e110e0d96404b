"""bench/deploy_fusions.py on the CPU: the smoke run, where its JSON may go, which variants run, and the
tolerance its GPU logit check uses (tanh-approximate GELU emulated on the CPU)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn as nn

from evaluators.proxies import init_model
from search_spaces import fuse_gelu_epilogue
from search_spaces.fastervit import FasterViT
from tests.bench import bench_module
from tests.search_spaces.test_knobs import _randomise

bench = bench_module("deploy_fusions")


def test_smoke_measures_every_variant_and_checks_the_logits(tmp_path):
    out = tmp_path / "fusions.json"
    assert bench.main(["--smoke", "--official", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["gpu"] == "cpu" and data["benchmark"] == "deploy-fusions" and data["complete"]
    assert data["tolerance_rel"] == bench.TANH_GELU_REL_TOL
    entry = data["models"]["faster_vit_0_224"]
    assert entry["variants"] == ["plain", "gelu"]  # FasterViT-0 is aligned: no pad8_gelu
    check = entry["logits"]["variants"]["gelu"]
    assert check["fp32_ok"] and check["half_ok"] and check["fp32_rel"] <= 1e-5  # the CPU's GELU is exact
    row = entry["modes"]["eager"]
    med = row["images_per_s"]
    assert set(med) == {"official", "plain", "gelu"} and all(v > 0 for v in med.values())
    assert math.isclose(row["over_plain"]["gelu"], med["gelu"] / med["plain"])
    assert math.isclose(row["over_official"]["gelu"], med["gelu"] / med["official"])
    fused = row["variants"]["gelu"]
    assert fused["gelu_fused"] == 17 and [k["part"] for k in fused["gelu_kept"]] == ["stages.0 conv blocks",
                                                                                    "stages.1 conv blocks"]
    # the profiled pass: the fused op runs, and only the conv blocks' GELU is left
    plain_k, fused_k = row["variants"]["plain"]["gelu_kernels_us"], fused["gelu_kernels_us"]
    assert "aten::_addmm_activation" in fused_k and "aten::_addmm_activation" not in plain_k
    assert fused_k.get("aten::gelu", 0.0) < plain_k["aten::gelu"]
    table = bench.markdown(data).splitlines()  # the README's table, from this run's JSON
    assert len(table) == 3 and table[2].startswith(f"| FasterViT-0 | eager | {med['official']:,.0f} | ")
    assert f"| {row['over_plain']['gelu']:.3f}× | {row['over_official']['gelu']:.3f}× | yes |" in table[2]


def test_results_go_to_the_committed_json_from_a_gpu_only(tmp_path):
    with pytest.raises(SystemExit, match="a CPU run needs --out"):
        bench.main(["--smoke"])
    with pytest.raises(SystemExit, match="a CPU run needs --out"):
        bench.main(["--device", "cpu", "--models", "faster_vit_0_224"])
    args = bench.parse_args(["--smoke", "--out", str(tmp_path / "x.json")])
    assert bench.output_path(args) == tmp_path / "x.json" and args.device == "cpu" and args.modes == "eager"


def test_padding_runs_where_it_changes_the_preset():
    keys = lambda name, always=False: [v.key for v in bench.variants_for(name, always)]  # noqa: E731
    assert keys("faster_vit_0_224") == ["plain", "gelu"]
    assert keys("faster_vit_0_224", True) == keys("faster_vit_4_21k_224") == ["plain", "gelu", "pad8_gelu"]
    args = bench.parse_args([])
    assert args.models.split(",") == [f"faster_vit_{i}_224" for i in range(4)] and args.modes == "best"


# ---------------------------------------------------------------------------------------------
# the GPU's numerics, emulated: the MLPs' GELU tanh-approximate
# ---------------------------------------------------------------------------------------------
def _tanh_change(model: FasterViT, x: torch.Tensor) -> float:
    """max |Δ logit| / max |logit| of deployed ``model`` when its fusable MLPs use tanh-approximate GELU."""
    emulated = copy.deepcopy(model)
    for name in fuse_gelu_epilogue(copy.deepcopy(model)).fused:
        emulated.get_submodule(name).act = nn.GELU(approximate="tanh")
    with torch.no_grad():
        ref, out = model(x), emulated(x)
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_tanh_gelu_changes_fastervit_0_within_the_benchs_tolerance():
    """The bench's own model and batch: measured 1.1e-4 (FasterViT-0, fp32); bound 1e-3 (about 9x)."""
    x = torch.randn(bench.LOGIT_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(bench.LOGIT_SEED))
    model = init_model("faster_vit_0_224", bench.LOGIT_SEED).eval().switch_to_deploy()
    change = _tanh_change(model, x)
    assert bench.TANH_GELU_REL_TOL / 100 < change <= bench.TANH_GELU_REL_TOL / 5, change  # a real, bounded change
    # larger random weights (logits ~180 instead of ~1): measured 2.1e-4
    trained_like = init_model("faster_vit_0_224", bench.LOGIT_SEED).eval()
    _randomise(trained_like)
    assert _tanh_change(trained_like.switch_to_deploy(), x[:2]) <= bench.TANH_GELU_REL_TOL / 2


def test_merge_keeps_the_earlier_models_of_the_same_protocol_and_refuses_another(tmp_path):
    out = tmp_path / "fusions.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    earlier = dict(first, models={"faster_vit_9_224": first["models"]["faster_vit_0_224"]}, created="then", host="h1")
    out.write_text(json.dumps(earlier))
    assert bench.main(["--smoke", "--out", str(out), "--merge"]) == 0
    merged = json.loads(out.read_text())
    assert list(merged["models"]) == ["faster_vit_9_224", "faster_vit_0_224"] and merged["complete"]
    assert merged["earlier_runs"] == [dict(created="then", host="h1", wall_s=first["wall_s"],
                                           models=["faster_vit_9_224"])]
    assert bench.main(["--smoke", "--out", str(out)]) == 0  # without --merge the file is this run's alone
    assert list(json.loads(out.read_text())["models"]) == ["faster_vit_0_224"]
    out.write_text(json.dumps(dict(earlier, batch_size=128, official=True)))
    with pytest.raises(SystemExit, match=r"measured otherwise \(batch_size 128 there, 1 here; official True there, "
                                         r"False here\); pass another --out"):
        bench.main(["--smoke", "--out", str(out), "--merge"])


def test_autotune_is_the_compile_mode_with_max_autotune_and_unknown_modes_are_refused(monkeypatch):
    from types import SimpleNamespace

    import evaluators.profiler as profiler

    assert set(bench.PROFILER_MODES) == set(profiler.MODES)
    assert bench.profiler_mode("best") == ("best", None)
    assert bench.profiler_mode("autotune") == ("compile", {"mode": "max-autotune", "dynamic": False})
    with pytest.raises(SystemExit, match="unknown mode 'fast'; choose from eager, cudagraph, compile, best, autotune"):
        bench.main(["--modes", "best,fast", "--device", "cpu", "--out", "unused.json"])
    seen = []

    def fake(name, **kw):  # what the bench asks the profiler for, per measurement
        seen.append(dict(kw, name=name))
        return SimpleNamespace(error=None, images_per_s=100.0 + len(seen), compile_s=1.0, wall_s=1.0, gelu_fused=1,
                               gelu_kept=[], channels_padded=[], kernel_us={"k": 1.0})

    monkeypatch.setattr(profiler, "measure_throughput", fake)
    monkeypatch.setattr(profiler, "measure_official", fake)
    args = bench.parse_args(["--modes", "autotune", "--rounds", "1", "--official", "--device", "cpu"])
    row = bench.measure_mode("faster_vit_0_224", "autotune", [bench.PLAIN, bench.GELU], args, 0.0)
    assert [s["mode"] for s in seen] == ["compile"] * 3
    assert all(s["compile_options"] == {"mode": "max-autotune", "dynamic": False} for s in seen)
    assert set(row["images_per_s"]) == {"official", "plain", "gelu"}


def test_merge_keeps_the_modes_a_model_does_not_measure_again(tmp_path):
    out = tmp_path / "fusions.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    entry = first["models"]["faster_vit_0_224"]
    earlier = copy.deepcopy(first)
    earlier["models"]["faster_vit_0_224"]["modes"] = {"autotune": entry["modes"]["eager"]}
    out.write_text(json.dumps(earlier))
    assert bench.main(["--smoke", "--out", str(out), "--merge"]) == 0
    merged = json.loads(out.read_text())
    assert list(merged["models"]["faster_vit_0_224"]["modes"]) == ["autotune", "eager"]
    assert merged["modes"] == ["eager", "autotune"]
    rows = bench.markdown(merged).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["eager", "autotune"]  # the profiler's modes first
