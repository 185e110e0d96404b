"""The throughput predictor: features, fit/predict, the JSON file, the registry, the dataset file.

Timings on this CPU are too noisy to assert a fitted model's error on them, so the error check
fits a law with a GPU's shape (roofline time of MACs and bytes plus a per-block launch cost, 3 %
log-normal noise) over configs of the default space; the real-measurement tests check the
collection path (records, resume) and that a model fitted on CPU measurements predicts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluators.cost import analytic_flops
from evaluators.predictor import (PREDICTORS, Predictor, PredictorError, check_records, evaluate, fit,
                                  load_predictor, read_records)
from evaluators.predictor_dataset import DatasetFile, collect, parse_resolutions, record_key, sample_configs
from evaluators.predictor_features import FEATURE_NAMES, config_features, stage_costs
from search_spaces import PRESETS, FasterViTConfig
from tests.spaces import tiny_space


def _law(cfg, rng) -> tuple[float, float]:
    """(images/s at batch 128, batch-1 latency ms) of a roofline-shaped GPU."""
    f = config_features(cfg)
    t = max(2 * f["macs"] / 300e12, 2 * f["act_elems"] / 2.5e12) + f["blocks"] * 3e-6 / 128
    lat = 1e3 * (max(2 * f["macs"] / 60e12, 2 * f["act_elems"] / 1e12) + f["blocks"] * 9e-6)
    noise = rng.lognormal(0, 0.03, 2)
    return 1 / t * noise[0], lat * noise[1]


def _records(configs, *, gpu="NVIDIA H200", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for cfg in configs:
        ips, lat = _law(cfg, rng)
        out.append(dict(config=cfg.to_dict(), images_per_s=ips, latency_b1_ms=lat, gpu_name=gpu, mode="cudagraph",
                        dtype="fp16", batch_size=128, driver="580", torch_version="2.11", error=None))
    return out


@pytest.fixture(scope="module")
def law_configs():
    return sample_configs("default", 240, seed=3, resolutions=tuple(range(160, 385, 32)))


def test_stage_costs_add_up_to_analytic_flops():
    for name in ("faster_vit_0_224", "faster_vit_2_224"):
        cfg = PRESETS[name]
        c = stage_costs(cfg)
        assert c["stem"]["macs"] + c["head"]["macs"] + sum(s["macs"] for s in c["stages"]) == analytic_flops(cfg)
    for cfg in sample_configs("default", 5, seed=1):
        f = config_features(cfg)
        assert list(f) == list(FEATURE_NAMES) and all(math.isfinite(v) for v in f.values())
        assert f["macs"] == analytic_flops(cfg)


def test_sample_configs_is_seeded_distinct_and_spans_resolutions():
    a = sample_configs("default", 30, seed=5)
    assert [c.arch_id for c in a] == [c.arch_id for c in sample_configs("default", 30, seed=5)]
    assert len({c.arch_id for c in a}) == 30
    assert {c.resolution[0] for c in a} <= set(range(160, 513, 32)) and len({c.resolution[0] for c in a}) > 3
    assert parse_resolutions("160-224") == (160, 192, 224) and parse_resolutions("224,256") == (224, 256)
    with pytest.raises(ValueError, match="must look like"):
        parse_resolutions("big")


def test_fit_meets_its_held_out_error_on_a_gpu_shaped_law(law_configs):
    p = fit(_records(law_configs), name="law", held_out=0.2)
    held = p.meta["held_out"]["images_per_s"]
    assert held["n"] == 48 and p.meta["n_train"] == 192
    assert held["within_10pct"] >= 0.9 and held["spearman"] >= 0.95, held
    lat = p.meta["held_out"]["latency_b1_ms"]
    assert lat["within_10pct"] >= 0.85 and lat["spearman"] >= 0.95, lat
    # resolutions outside the training grid (160-384), reported apart: the log-linear part extrapolates
    far = sample_configs("default", 30, seed=9, resolutions=(448, 480, 512))
    out = evaluate(p, _records(far, seed=1))["images_per_s"]
    assert out["spearman"] >= 0.9 and out["median_rel_err"] <= 0.2, out


def test_a_constant_is_not_mistaken_for_a_fit(law_configs):
    """evaluate() can fail: a predictor of the wrong law is far off."""
    p = fit(_records(law_configs), name="law", held_out=0.2)
    wrong = [dict(r, images_per_s=r["images_per_s"] * (3 if i % 2 else 1)) for i, r in enumerate(_records(law_configs[:40]))]
    assert evaluate(p, wrong)["images_per_s"]["within_10pct"] <= 0.6


def test_json_file_round_trips_and_is_small(tmp_path, law_configs):
    p = fit(_records(law_configs[:80]), name="small", n_estimators=50)
    path = p.save(tmp_path / "small.json")
    q = Predictor.load(path)
    cfgs = law_configs[80:90]
    assert q.predict_many(cfgs) == p.predict_many(cfgs)
    assert q.meta["gpu_name"] == "NVIDIA H200" and q.meta["driver"] == ["580"] and q.targets == ["images_per_s", "latency_b1_ms"]
    assert path.stat().st_size < 400_000
    assert load_predictor("small", search_dirs=[tmp_path]).predict(cfgs[0]) == p.predict(cfgs[0])
    assert load_predictor(str(path)).name == "small"


def test_trees_in_the_file_predict_as_sklearn_does(law_configs):
    from sklearn.tree import DecisionTreeRegressor

    from evaluators.predictor import _features, _tree_arrays, _tree_predict

    X = _features(law_configs[:100])
    y = np.log([r["images_per_s"] for r in _records(law_configs[:100])])
    tree = DecisionTreeRegressor(max_depth=4, random_state=0).fit(X, y)
    X2 = _features(law_configs[100:140])
    np.testing.assert_allclose(_tree_predict(json.loads(json.dumps(_tree_arrays(tree))), X2), tree.predict(X2))


def test_mixed_gpus_are_refused_naming_both(law_configs):
    recs = _records(law_configs[:20]) + _records(law_configs[20:40], gpu="NVIDIA A100-SXM4-80GB")
    with pytest.raises(PredictorError, match=r"mix gpu_name: 'NVIDIA H200' \(20 records\), 'NVIDIA A100-SXM4-80GB' "
                                             r"\(20 records\).*different GPUs"):
        fit(recs, name="mixed")
    bad_mode = _records(law_configs[:20]) + [dict(r, mode="best") for r in _records(law_configs[20:30])]
    with pytest.raises(PredictorError, match="mix mode"):
        check_records(bad_mode)
    assert len(check_records(bad_mode, mode="best")[0]) == 10


def test_too_few_records_and_failed_records():
    recs = _records(sample_configs("default", 12, seed=2))
    for r in recs[:4]:
        r["error"], r["images_per_s"] = "out of memory at batch 128", None
    with pytest.raises(PredictorError, match="8 usable record.*at least 10"):
        fit(recs, name="few")


def test_unknown_predictor_lists_the_known_ones(tmp_path):
    (tmp_path / "mine.json").write_text("{}")
    with pytest.raises(PredictorError, match=r"unknown predictor 'nope'; known: h100, h200, mine"):
        load_predictor("nope", search_dirs=[tmp_path])
    with pytest.raises(PredictorError, match="not a nas predictor file"):
        load_predictor("mine", search_dirs=[tmp_path])
    assert "h200" in PREDICTORS


def test_a_registered_predictor_without_its_file_says_how_to_make_it(monkeypatch, tmp_path):
    import evaluators.predictor as ep

    monkeypatch.setattr(ep, "SHIPPED_DIR", tmp_path)
    with pytest.raises(PredictorError, match="not shipped yet.*profile_dataset.py"):
        load_predictor("h200")


def test_the_shipped_h200_predictor_matches_the_committed_measurements():
    """evaluators/predictors/h200.json against H200 numbers it was not fitted on (nas compare's FasterViT rows,
    cudagraph, batch 128): inside its training range within 10 %, FasterViT-4..6 flagged as extrapolated."""
    root = Path(__file__).resolve().parents[2]
    p = load_predictor("h200")
    summary = json.loads((root / "results/benchmarks/predictor-summary.json").read_text())
    assert p.gpu == summary["gpu"] == "NVIDIA H200" and p.meta["mode"] == "cudagraph"
    assert p.meta["n_train"] == summary["n_train"]
    assert p.meta["held_out"]["images_per_s"]["within_10pct"] == summary["within_10pct"]
    rows = json.loads((root / "results/benchmarks/compare-h200.json").read_text())["rows"]
    measured = {r["name"]: r["img_s"] for r in rows if r["code"] == "nas"}
    for i in range(7):
        cfg = PRESETS[f"faster_vit_{i}_224"]
        error = p.predict(cfg)["images_per_s"] / measured[f"FasterViT-{i}"] - 1
        outside = p.outside_range(cfg)
        if i <= 2:
            assert not outside and abs(error) < 0.10, (i, error)
        if i >= 4:
            assert "log_weights" in outside, (i, outside)


def test_collect_appends_resumes_and_records_the_machine(tmp_path):
    """Real CPU measurements: the record names device, torch, date; a second run skips what is there."""
    configs = sample_configs(tiny_space(), 3, seed=0, resolutions=(48, 64))
    out = tmp_path / "ds.jsonl"
    kw = dict(mode="eager", dtype="fp32", batch_size=1, device="cpu", repeats=1, warmup=1, latency_b1=False)
    assert collect(configs[:2], out, **kw)["measured"] == 2
    with open(out, "a") as f:
        f.write('{"key": "torn')  # a run killed mid-line
    counts = collect(configs, out, **kw)
    assert counts == dict(measured=1, skipped=2, failed=0, left=0)
    recs = read_records(out)
    assert len(recs) == 3 and len({r["key"] for r in recs}) == 3
    r = recs[0]
    assert r["gpu_name"] == "cpu" and r["torch_version"] and r["timestamp"] and r["images_per_s"] > 0
    assert r["key"] == record_key(configs[0], mode="eager", dtype="fp32", batch_size=1)
    assert r["config"] == configs[0].to_dict() and r["flops"] == analytic_flops(configs[0])
    assert DatasetFile(out).done == {x["key"] for x in recs}
    assert collect(configs, out, deadline=0.0, **kw)["skipped"] == 3


def _bench():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "profile_dataset.py"
    spec = importlib.util.spec_from_file_location("profile_dataset_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_profile_dataset_summary_has_the_issue_keys(tmp_path, law_configs):
    """bench/profile_dataset.py's summary from a dataset file: counts, quick-vs-best rho, the fit; other keys kept."""
    bench = _bench()
    out = tmp_path / "ds.jsonl"
    quick = _records(law_configs[:100])
    best = [dict(r, mode="best", images_per_s=r["images_per_s"] * 1.5) for r in quick[:20]]
    out.write_text("".join(json.dumps(r) + "\n" for r in quick + best))
    offgrid = _records(sample_configs("default", 12, seed=4, resolutions=(448, 480)))
    bench.offgrid_path(out).write_text("".join(json.dumps(r) + "\n" for r in offgrid))
    args = bench.parse_args(["--out", str(out), "--fit", "t", "--predictor-out", str(tmp_path / "t.json"),
                             "--summary-out", str(tmp_path / "s.json")])
    summary = bench.phase_summary(args)
    (tmp_path / "s.json").write_text(json.dumps({"best_mode_ratio_vs_official": {"faster_vit_0_224": 1.3}}))
    bench.write_summary(summary, tmp_path / "s.json")
    s = json.loads((tmp_path / "s.json").read_text())
    for key in ("gpu", "n_configs", "n_best", "n_train", "within_10pct", "spearman", "best_mode_ratio_vs_official",
                "quick_vs_best_spearman"):
        assert key in s, key
    assert s["gpu"] == "NVIDIA H200" and s["n_configs"] == 100 and s["n_best"] == 20 and s["n_train"] == 80
    assert s["quick_vs_best_spearman"] == 1.0 and s["best_mode_ratio_vs_official"] == {"faster_vit_0_224": 1.3}
    assert s["offgrid"]["images_per_s"]["n"] == 12 and (tmp_path / "t.json").is_file()
    with pytest.raises(SystemExit):
        bench.parse_args(["--phases", "quick,nope"])


# ------------------------------------------------------------------------------------------ kernel model
def test_kernel_features_are_finite_deterministic_and_consistent_on_random_configs():
    """Random configs of the default space over the whole resolution grid: same features twice, all finite,
    and the facts that must hold whatever the constants (more images take longer, casts are kernels)."""
    from evaluators.predictor_dataset import RESOLUTIONS
    from evaluators.predictor_features import KERNEL_FEATURES

    configs = sample_configs("default", 25, seed=11, resolutions=RESOLUTIONS)
    for cfg in configs:
        f, again = config_features(cfg), config_features(FasterViTConfig.from_dict(cfg.to_dict()))
        assert f == again and all(math.isfinite(v) for v in f.values()), cfg.summary()
        assert set(KERNEL_FEATURES) <= set(f)
        assert f["b128_roofline_us"] > f["b1_roofline_us"] > 0 and 0 < f["weight_casts"] < f["kernels"]
        for g in cfg.stages:
            off_fused = g.transformer and (g.width // cfg.num_heads[g.index]) % 8 != 0
            assert f[f"s{g.index}_unfused"] == float(off_fused)
            assert f[f"s{g.index}_pad_waste"] >= 0
        assert (f["unfused_attention"] > 0) == any(f[f"s{i}_unfused"] for i in range(4))
        assert (f["score_bytes"] > 0) == (f["unfused_attention"] > 0)


def _dispatched_kernels(cfg, batch: int, monkeypatch) -> int:
    """Kernels the deployed fp16 model launches, counted from a dispatch trace on fake CUDA tensors.

    The profiler's setting without a GPU: built on the meta device, deployed, its tensors swapped
    for fake CUDA ones (channels-last), run under fp16 autocast without the weight-cast cache. A
    non-view op is a kernel; a cast to the dtype a tensor already has is none. ``torch.matmul``
    shows as one op here but copies its permuted operands on a GPU (the kernel model counts them).
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    from search_spaces.fastervit import FasterViT

    views = {"view", "_unsafe_view", "t", "transpose", "permute", "unsqueeze", "squeeze", "expand", "slice",
             "split", "split_with_sizes", "unbind", "select", "alias", "detach", "as_strided", "unflatten",
             "device"}  # prim.device: a query, no kernel

    class Count(TorchDispatchMode):
        kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            same_storage = (isinstance(out, torch.Tensor) and first is not None
                            and StorageWeakRef(out.untyped_storage()) == StorageWeakRef(first.untyped_storage()))
            if name not in views and not (name in ("reshape", "to", "contiguous") and same_storage):
                Count.kernels += 1
            return out

    def fake(t):
        fmt = torch.channels_last if t.dim() == 4 else torch.contiguous_format
        return torch.empty(t.shape, dtype=t.dtype, device="cuda", memory_format=fmt)

    with torch.device("meta"):
        model = FasterViT(cfg).eval()
    model.switch_to_deploy(dtype=torch.float16)
    with FakeTensorMode():
        for m in model.modules():
            for k, p in m._parameters.items():
                m._parameters[k] = torch.nn.Parameter(fake(p), requires_grad=False) if p is not None else None
            for k, b in m._buffers.items():
                m._buffers[k] = fake(b) if b is not None else None
        x = fake(torch.empty(batch, cfg.in_chans, *cfg.resolution, device="meta"))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # else autocast("cuda") turns itself off
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False), Count():
            model(x)
    return Count.kernels


@pytest.mark.parametrize("knobs", [
    dict(),  # 2x2 windows with carrier tokens, fused attention
    dict(resolution=80, window_size=(2, 2, 3, 2), ct_size=1, do_propagation=True, layer_scale=1e-5),  # padding, fp32
    dict(dim=24, num_heads=(1, 1, 8, 4), hat=(False, False, False, False)),  # head dim 12: unfused stage 3
])
def test_kernel_model_counts_the_kernels_the_model_launches(monkeypatch, tiny_config, knobs):
    """The kernel model against a dispatch trace of the real forward pass (``_dispatched_kernels``)."""
    from evaluators.predictor_kernels import kernel_tally

    cfg = tiny_config.replace(**knobs)
    k = kernel_tally(cfg, 2)
    assert _dispatched_kernels(cfg, 2, monkeypatch) == k.kernels - 3 * k.unfused_attention, cfg.summary()
    assert (k.unfused_attention > 0) == ("dim" in knobs)


def test_cross_validation_on_the_committed_dataset_meets_the_stated_error():
    """5-fold CV on the H200 records (``evaluators/predictors/h200-profile.jsonl``): the README's claim,
    with room for one repeat's split (bench/predictor_cv.py runs 5 x 5)."""
    from pathlib import Path

    from evaluators.predictor import cross_validate

    path = Path(__file__).resolve().parents[2] / "evaluators" / "predictors" / "h200-profile.jsonl"
    cv = cross_validate(read_records(path), folds=5, repeats=1, mode="cudagraph")
    ips, lat = cv["images_per_s"], cv["latency_b1_ms"]
    assert ips["n"] >= 200 and ips["within_10pct"] >= 0.93 and ips["spearman"] >= 0.99, ips
    assert ips["median_rel_err"] <= 0.04 and lat["within_10pct"] >= 0.95 and lat["spearman"] >= 0.99, lat


def test_a_version_1_predictor_file_is_refused_with_the_refit_command(tmp_path, law_configs):
    p = fit(_records(law_configs[:40]), name="old", n_estimators=5)
    d = p.to_dict()
    d["version"] = 1
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(PredictorError, match="another version.*nas predictor fit"):
        Predictor.load(tmp_path / "old.json")


def test_profile_dataset_keeps_one_gpu_per_dataset_and_summary(tmp_path):
    """Measuring another card into the H200's dataset (the default --out) or merging its summary into the
    H200's summary file is refused, naming both cards and the option that avoids it."""
    bench = _bench()
    shipped = Path(__file__).resolve().parents[2] / "evaluators" / "predictors" / "h200-profile.jsonl"
    bench.check_dataset_gpu(shipped, "NVIDIA H200")  # the same card goes on
    with pytest.raises(SystemExit, match="holds records of NVIDIA H200; this GPU is NVIDIA H100 80GB HBM3.*"
                                         "--out .*h100-80gb-hbm3-profile.jsonl"):
        bench.check_dataset_gpu(shipped, "NVIDIA H100 80GB HBM3")
    bench.check_dataset_gpu(tmp_path / "new.jsonl", "NVIDIA H100 80GB HBM3")  # a new file is anyone's
    summary = tmp_path / "s.json"
    bench.write_summary({"gpu": "NVIDIA H200", "n_configs": 3}, summary)
    with pytest.raises(SystemExit, match="holds the summary of NVIDIA H200.*--summary-out"):
        bench.write_summary({"gpu": "NVIDIA H100 80GB HBM3", "n_configs": 3}, summary)
    assert json.loads(summary.read_text())["n_configs"] == 3
