"""`nas compare` on the CPU (tiny batch): published data, measured rows, skips, front, report, tables."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from nas import compare as cmp
from nas.cli import app

runner = CliRunner()


def test_published_table1_is_complete_and_names_a_timm_id_for_each_peer():
    table = cmp.load_published()
    by = {p.name: p for p in table}
    assert len(table) == 32  # Table 1: 25 peers + FasterViT-0..6
    assert (by["FasterViT-0"].a100_img_s, by["FasterViT-0"].top1, by["FasterViT-0"].params_m) == (5802, 82.1, 31.4)
    assert (by["RegNetY-040"].resolution, by["EfficientNetV2-S"].resolution, by["SwinV2-B"].resolution) == (288, 384, 256)
    default = cmp.resolve_models(None)
    peers = [p for p in default if not p.is_fastervit]
    assert len(peers) == 19 and all(p.timm_id for p in peers)
    assert [p.preset for p in default if p.is_fastervit] == [f"faster_vit_{i}_224" for i in range(7)]
    assert all(p.source == "FasterViT paper, Table 1" for p in table)


def test_every_default_peer_builds_with_the_installed_timm():
    import timm
    import torch

    for p in cmp.resolve_models(["peers"]):
        with torch.device("meta"):
            m = timm.create_model(p.timm_id, pretrained=False)
        params = sum(t.numel() for t in m.parameters()) / 1e6
        assert params == pytest.approx(p.params_m, rel=0.02), (p.name, p.timm_id, params)


def test_unknown_model_is_one_error_listing_the_choices():
    with pytest.raises(ValueError, match="unknown model 'Swin-Q'.*ConvNeXt-T"):
        cmp.resolve_models(["Swin-Q"])
    r = runner.invoke(app, ["compare", "--device", "cpu", "--models", "Swin-Q"])
    assert r.exit_code == 2 and "unknown model" in r.output


def test_front_and_dominated_fastervit():
    rows = [cmp.ModelRow(name=n, family=f, code="timm" if f != "fastervit" else "nas", model_id=n, resolution=224,
                         mode="eager", img_s=v, top1=t)
            for n, f, v, t in [("FasterViT-0", "fastervit", 100.0, 82.1), ("FasterViT-1", "fastervit", 50.0, 83.2),
                               ("A", "conv", 120.0, 82.5), ("B", "conv", 40.0, 83.0)]]
    front, dominated = cmp.pareto_front(rows)
    assert front == ["A", "FasterViT-1"] and dominated == {"FasterViT-0": ["A"]}


def test_out_of_memory_and_build_errors_are_recorded_skips(monkeypatch):
    import torch

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cmp, "_build", oom)
    s = cmp.CompareSettings(models=["DeiT3-L"], device="cpu").resolved()
    (row,) = cmp._measure_one(cmp.resolve_models(["DeiT3-L"])[0], "timm", s)
    assert row.img_s is None and row.error == "out of memory while building at 224 px"
    monkeypatch.setattr(cmp, "_build", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no kernel")))
    (row,) = cmp._measure_one(cmp.resolve_models(["MaxViT-L"])[0], "timm", s)
    assert row.error == "not built: RuntimeError: no kernel"


def test_profiler_oom_is_a_recorded_skip(monkeypatch):
    import evaluators.profiler as prof

    real = prof.measure_throughput

    def fake(model, **kw):
        rec = real(model, **{**kw, "repeats": 1, "warmup": 1, "batch_size": 1})
        rec.error, rec.images_per_s = f"out of memory at batch {kw['batch_size']}", None
        return rec

    monkeypatch.setattr(prof, "measure_throughput", fake)
    s = cmp.CompareSettings(models=["Twins-S"], device="cpu").resolved()
    (row,) = cmp._measure_one(cmp.resolve_models(["Twins-S"])[0], "timm", s)
    assert row.error == "out of memory at batch 2" and row.img_s is None and row.params_m == pytest.approx(24.06, abs=0.01)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """Two models measured for real on the CPU (tiny batch), one peer timm cannot build."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    r = runner.invoke(app, ["compare", "--device", "cpu", "--models", "FasterViT-0,Twins-S,EdgeViT-S", "--batch-size",
                            "1", "--repeats", "1", "--warmup", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_cpu_run_measures_reports_and_skips(cpu_run):
    out, output = cpu_run
    d = json.loads(out.with_suffix(".json").read_text())
    rows = {r["name"]: r for r in d["rows"]}
    fv, tw = rows["FasterViT-0"], rows["Twins-S"]
    assert fv["code"] == "nas" and fv["deploy"] is True and tw["code"] == "timm" and tw["model_id"] == "twins_svt_small"
    for r in (fv, tw):
        assert r["img_s"] > 0 and r["ratio"] == pytest.approx(r["img_s"] / r["paper_a100_img_s"], rel=1e-3)
        assert r["profile"]["device"] == "cpu" and r["profile"]["batch_size"] == 1 and r["profile"]["mode"] == "eager"
    assert fv["params_m"] == pytest.approx(31.4, abs=0.1) and fv["gmacs"] == pytest.approx(3.3, rel=0.05)
    assert tw["gmacs"] == pytest.approx(2.8, rel=0.05)
    assert d["skipped"] == [dict(name="EdgeViT-S", code="timm", model_id="—", mode="eager",
                                 reason="not built: timm has no EdgeViT")]
    assert set(d["front"]) <= {"FasterViT-0", "Twins-S"} and d["front"]
    assert d["environment"]["device"] == "cpu" and d["published_source"].startswith("Hatamizadeh")
    flat = " ".join(output.split())
    assert "front of throughput and top-1" in flat and "Skipped (1): EdgeViT-S" in flat
    html = out.with_suffix(".html").read_text().replace("\\u002f", "/")  # plotly escapes / in its JSON
    assert re.findall(r"<script[^>]*\ssrc=", html) == [] and "Plotly.newPlot" in html
    assert "img/s (batch 1, Table 1 resolution, fp32, eager; log scale)" in html
    assert "ImageNet-1K top-1 % (paper, Table 1)" in html and "twins_svt_small" in html
    assert out.with_suffix(".png").stat().st_size > 20_000


def test_render_rebuilds_the_report_from_json(cpu_run, tmp_path):
    out, _ = cpu_run
    r = runner.invoke(app, ["compare", "--render", str(out.with_suffix(".json")), "--out", str(tmp_path / "again"),
                            "--plotlyjs", "directory"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    html = (tmp_path / "again.html").read_text()
    assert '<script charset="utf-8" src="plotly.min.js"></script>' in html


def test_table_variants_are_valid_configs_of_our_generator():
    from search_spaces import PRESETS

    tables = cmp.paper_tables()
    built = 0
    for _, name, over in cmp._variant_jobs(tables, cmp.CompareSettings(device="cpu").resolved()):
        if over["nas"] is None:
            continue
        cfg = PRESETS["faster_vit_2_224"].replace(**{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in over["nas"].items()})
        built += 1
        if name == "w7c7":
            assert cfg.ct_size == 7 and cfg.stages[2].ct_per_window == 49
        if name == "w16c0":
            assert cfg.resolution == (256, 256) and not cfg.stages[2].hat
    assert built == 1 + 7 + 10  # reference, every S.2 component (issue-13 knobs), all of S.3


def test_table_ratios_divide_by_the_right_reference(monkeypatch):
    w256 = json.dumps(dict(resolution=256, window_size=[8, 8, 8, 8]), sort_keys=True)
    speeds = {"{}": 100.0, w256: 50.0, json.dumps({"hat": [False] * 4}): 80.0}

    def fake(code, over, s, mode):
        return speeds.get(json.dumps(over, sort_keys=True), 40.0), None

    monkeypatch.setattr(cmp, "_variant_img_s", fake)
    out = cmp.measure_tables(cmp.CompareSettings(device="cpu", official=True).resolved())
    s2 = {r["name"]: r for r in out["S.2"]["rows"]}
    s3 = {r["name"]: r for r in out["S.3"]["rows"]}
    assert s2["HAT block"]["nas_ratio"] == 0.8 and s2["HAT block"]["paper_ratio"] == 1.08
    assert s2["window 14×14"]["official_ratio"] == 0.4
    assert s2["attention bias"]["nas_ratio"] == 0.4 and s2["attention bias"]["official_ratio"] is None
    assert s2["attention bias"]["official_error"] == "not expressible"
    assert s3["w7c7"]["nas_ratio"] == 0.4 and s3["w7c2"]["nas_ratio"] == 1.0
    assert s3["w8c4"]["nas_ratio"] == 0.8 and s3["w8c2"]["official_ratio"] == 1.0


def test_compare_imports_without_optuna_plotly_or_fvcore():
    """The GPU image has torch and timm only: measuring must not need the search stack."""
    import subprocess
    import sys

    code = ("import sys\nfor m in ('optuna', 'plotly', 'fvcore', 'optuna_dashboard'): sys.modules[m] = None\n"
            "import nas.cli, nas.compare\nfrom nas.commands.compare import _missing_report_deps\n"
            "assert _missing_report_deps() == 'plotly', _missing_report_deps()\n"
            "assert len(nas.compare.resolve_models(['all'])) == 32\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_peer_labels_of_coinciding_points_are_stacked_and_lone_ones_stay_put():
    from nas.compare_report import _stacked_label_offsets

    pts = [dict(name="ConvNeXt-T", img_s=8300.0, top1=82.0), dict(name="DeiT-B", img_s=8600.0, top1=82.0),
           dict(name="ResNetV2-101", img_s=9900.0, top1=82.0), dict(name="MaxViT-L", img_s=1270.0, top1=85.1)]
    dy = _stacked_label_offsets(pts, pts_per_top1=130.0, pts_per_decade=450.0)
    assert len(set(dy[:3])) == 3  # three labels on one line would print over each other
    assert dy[3] == max(dy)  # a point alone keeps the default offset


# ------------------------------------------------------------------------------------------ --pad-channels
ODD = dict(resolution=64, dim=12, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4), window_size=(2, 2, 2, 2),
           ct_size=1, num_classes=1000)  # stage-0 width 12: padded to 16
OFFICIAL_TINY = dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                     window_size=[2, 2, 2, 2], ct_size=1)


@pytest.fixture
def tiny_fastervit_0(monkeypatch):
    """FasterViT-0's Table 1 row at 64 px, built tiny by both codes (ours with an odd width)."""
    import dataclasses

    import torch

    from evaluators import profiler
    from search_spaces import FasterViT, FasterViTConfig

    table = [dataclasses.replace(p, resolution=64) if p.name == "FasterViT-0" else p for p in cmp.load_published()]
    monkeypatch.setattr(cmp, "load_published", lambda: table)

    def build(p, code, device, seed):
        if code == "official":
            return profiler.build_official("faster_vit_0_224", device=device, seed=seed, **OFFICIAL_TINY)
        with torch.device(device):
            return FasterViT(FasterViTConfig(**ODD)).eval()

    monkeypatch.setattr(cmp, "_build", build)
    return table[[p.name for p in table].index("FasterViT-0")]


def test_pad_channels_pads_our_rows_records_it_and_renders(tiny_fastervit_0, tmp_path):
    out = tmp_path / "pad"
    args = ["compare", "--device", "cpu", "--models", "FasterViT-0", "--official", "--batch-size", "1", "--repeats",
            "1", "--warmup", "1"]
    r = runner.invoke(app, [*args, "--pad-channels", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.with_suffix(".json").read_text())
    assert d["settings"]["pad_channels"] == 8
    ours, official = ({r["code"]: r for r in d["rows"]}[c] for c in ("nas", "official"))
    assert ours["img_s"] > 0 and official["img_s"] > 0
    assert ours["profile"]["pad_channels"] == 8
    assert ours["profile"]["channels_padded"] == [{"part": "stages.0 width", "real": 12, "padded": 16}]
    assert official["profile"]["channels_padded"] == []  # measured as it is, and the record says why
    assert "is not this generator's FasterViT" in official["profile"]["channels_kept"][0]["reason"]
    assert "counted unpadded" in d["flops_method"]
    from nas.compare_report import table_rows

    assert [row[1] for row in table_rows(d)] == ["nas: faster_vit_0_224 (padded to 8)",  # the CLI's and HTML's
                                                 "official: official:faster_vit_0_224"]
    html = out.with_suffix(".html").read_text()
    assert "ours padded to 8" in html and "(our generator) (padded to 8)" in html
    # a JSON written before the option existed renders as before; --render does not take the option
    del d["settings"]["pad_channels"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    r = runner.invoke(app, ["compare", "--render", str(old), "--out", str(tmp_path / "old")])
    assert r.exit_code == 0, r.output
    assert "padded to" not in r.output and "padded to" not in (tmp_path / "old.html").read_text()
    r = runner.invoke(app, ["compare", "--render", str(old), "--pad-channels", "8", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--render draws a JSON measured earlier" in " ".join(r.output.split())
    r = runner.invoke(app, [*args, "--pad-channels", "0", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--pad-channels=0 must be an integer >= 1" in r.output


def test_padded_rows_count_the_architecture_macs(tiny_fastervit_0):
    from search_spaces import FasterViT, FasterViTConfig, pad_channels

    s = cmp.CompareSettings(device="cpu", pad_channels=8).resolved()
    plain = FasterViT(FasterViTConfig(**ODD)).switch_to_deploy()
    padded = FasterViT(FasterViTConfig(**ODD)).switch_to_deploy()
    pad_channels(padded, 8)
    macs = cmp._architecture_macs(tiny_fastervit_0, "cpu", s)
    assert macs == cmp.count_macs(plain, 64, "cpu") < cmp.count_macs(padded, 64, "cpu")


# ------------------------------------------------------------------------------------------ --gelu-epilogue
def test_gelu_epilogue_fuses_our_rows_records_it_and_renders(tiny_fastervit_0, tmp_path):
    out = tmp_path / "gelu"
    args = ["compare", "--device", "cpu", "--models", "FasterViT-0", "--official", "--batch-size", "1", "--repeats",
            "1", "--warmup", "1"]
    r = runner.invoke(app, [*args, "--gelu-epilogue", "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.with_suffix(".json").read_text())
    assert d["settings"]["gelu_epilogue"] is True
    ours, official = ({r["code"]: r for r in d["rows"]}[c] for c in ("nas", "official"))
    assert ours["img_s"] > 0 and official["img_s"] > 0
    assert ours["profile"]["gelu_epilogue"] is True and ours["profile"]["gelu_fused"] > 0
    assert official["profile"]["gelu_fused"] == 0  # measured as it is, and the record says why
    assert "is not this generator's FasterViT" in official["profile"]["gelu_kept"][0]["reason"]
    assert "counted unfused" in d["flops_method"]
    assert ours["gmacs"] == round(cmp._architecture_macs(tiny_fastervit_0, "cpu", cmp.CompareSettings()) / 1e9, 3)
    from nas.compare_report import table_rows

    assert [row[1] for row in table_rows(d)] == ["nas: faster_vit_0_224 (GELU epilogue)",  # the CLI's and HTML's
                                                 "official: official:faster_vit_0_224"]
    html = out.with_suffix(".html").read_text()
    assert "ours with the GELU epilogue" in html and "(our generator) (GELU epilogue)" in html
    d["settings"]["pad_channels"] = 8  # both steps: one label
    assert table_rows(d)[0][1] == "nas: faster_vit_0_224 (padded to 8, GELU epilogue)"
    # a JSON written before the option existed renders as before; --render does not take the option
    del d["settings"]["gelu_epilogue"], d["settings"]["pad_channels"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    r = runner.invoke(app, ["compare", "--render", str(old), "--out", str(tmp_path / "old")])
    assert r.exit_code == 0, r.output
    assert "GELU epilogue" not in r.output and "GELU epilogue" not in (tmp_path / "old.html").read_text()
    r = runner.invoke(app, ["compare", "--render", str(old), "--gelu-epilogue", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--render draws a JSON measured earlier" in " ".join(r.output.split())


def test_deploy_steps_reach_both_fastervit_codes_and_no_peer():
    """What the profiler is told per code (the main rows and Tables S.2/S.3 alike): the official code gets the
    steps too, so that its record says why it is measured as it is."""
    both = cmp.CompareSettings(device="cpu", pad_channels=8, gelu_epilogue=True).resolved()
    assert cmp._deploy_steps("nas", both) == cmp._deploy_steps("official", both) == dict(pad_channels=8,
                                                                                          gelu_epilogue=True)
    assert cmp._deploy_steps("timm", both) == {} and cmp._deploy_steps("nas", cmp.CompareSettings()) == {}
    with pytest.raises(ValueError, match="--gelu-epilogue='yes' must be true or false"):
        cmp.CompareSettings(device="cpu", gelu_epilogue="yes").resolved()  # type: ignore[arg-type]
