"""`nas export`: trial selection (--trial / --pick), the written folder, reloading it every way, errors.

Two studies per module: a real tiny `nas search` (params, flops on CPU; one refused config -> a
failed trial) and a hand-built accuracy/throughput study whose Pareto set is designed so that
knee, max-accuracy and a throughput condition each choose a different trial.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app
from nas.export import ExportError, build_export_model, export_model, select_trial
from search_spaces import FasterViTConfig, load_model

runner = CliRunner()
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")]
BASE = dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2], window_size=[2, 2, 2, 2],
            ct_size=1, num_classes=10)
ALL_FORMATS = ("safetensors", "onnx", "pt", "torchscript")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and the CI box is shared); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def real_study(tmp_path_factory):
    """A real `nas search` run: 4 enqueued points (deterministic), #0 is refused (ct_size 3 > window 2)."""
    import optuna

    from nas.search import SearchSettings, run_search

    tmp = tmp_path_factory.mktemp("search")
    storage = f"sqlite:///{tmp}/nas.db"
    space = dict(name="tiny", base=BASE, knobs={"dim": {"choices": [8, 16]}, "depths[2]": {"choices": [1, 2]},
                                                 "ct_size": {"choices": [1, 2, 3]}})
    st = optuna.create_study(study_name="t", storage=storage, directions=["minimize", "minimize"])
    st.set_metric_names(["params", "flops"])
    for p in ({"dim": 8, "depths[2]": 1, "ct_size": 3}, {"dim": 8, "depths[2]": 1, "ct_size": 1},
              {"dim": 16, "depths[2]": 2, "ct_size": 2}, {"dim": 8, "depths[2]": 1, "ct_size": 2}):
        st.enqueue_trial(p)
    run_search(SearchSettings(objectives=("params", "flops"), trials=4, space=space, storage=storage, study="t",
                              results_dir=str(tmp), device="cpu", quiet=True, enqueue_presets=False))
    return storage, optuna.load_study(study_name="t", storage=storage), tmp


def _cfg(**kw) -> dict:
    return FasterViTConfig(**{**BASE, "dim": 8, "depths": (1, 1, 1, 1), **kw}).to_dict()


def _trial(values, cfg, *, state=None, attrs=None):
    """A trial as `nas search` records it, with a profiler record shaped by the real dataclass."""
    import optuna

    from evaluators.profiler import ThroughputRecord

    c = FasterViTConfig.from_dict(cfg)
    ua = dict(config=cfg, arch_id=c.arch_id, summary=c.summary(), params=100_000, flops=2_000_000, device="NVIDIA H100",
              status="complete")
    if values is not None:
        ua["profile"] = ThroughputRecord(
            model=c.summary(), arch_id=c.arch_id, device="cuda", gpu_name="NVIDIA H100 80GB HBM3", cpu_name="x",
            torch_version="2.14.1", cuda_version="13.0", mode="cudagraph", dtype="fp16", batch_size=128,
            resolution=(64, 64), channels_last=True, deploy=True, warmup=3, repeats=10, driver="570.124.06",
            images_per_s=values[1], timestamp="2026-11-20T10:00:00+00:00").to_dict()
        ua["proxy"] = {"synflow": {"name": "synflow", "value": values[0] * 100, "seconds": 0.5, "error": None}}
    ua.update(attrs or {})
    return optuna.trial.create_trial(state=state or optuna.trial.TrialState.COMPLETE, values=values, user_attrs=ua)


# Pareto set of "syn" (accuracy, throughput; both maximised), normalised over the front:
#   #0 (0.60, 9000) d=1.00   #1 (0.70, 8000) d=0.678   #2 (0.80, 5000) d=0.601 (knee)   #3 (0.90, 1000) d=1.00
# #4 is dominated by #1; #5 failed; #6 pruned; #7 repeats #3's config and values.
SYN = [(0.60, 9000.0, _cfg(dim=8)), (0.70, 8000.0, _cfg(dim=16)), (0.80, 5000.0, _cfg(dim=16, ct_size=2)),
       (0.90, 1000.0, _cfg(dim=16, depths=(1, 1, 2, 1))), (0.65, 7000.0, _cfg(dim=8, ct_size=2))]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    import optuna

    tmp = tmp_path_factory.mktemp("syn")
    storage = f"sqlite:///{tmp}/syn.db"
    st = optuna.create_study(study_name="syn", storage=storage, directions=["maximize", "maximize"])
    st.set_metric_names(["accuracy", "throughput"])
    for acc, thr, cfg in SYN:
        st.add_trial(_trial([acc, thr], cfg))
    st.add_trial(_trial(None, _cfg(), state=optuna.trial.TrialState.FAIL,
                        attrs={"status": "error", "error": "CUDA out of memory"}))
    st.add_trial(_trial(None, _cfg(), state=optuna.trial.TrialState.PRUNED,
                        attrs={"status": "infeasible", "error": "constraint params<=1e5 fails"}))
    st.add_trial(_trial([SYN[3][0], SYN[3][1]], SYN[3][2]))
    # a tie between two different architectures
    tie = optuna.create_study(study_name="tie", storage=storage, directions=["maximize", "maximize"])
    tie.set_metric_names(["accuracy", "throughput"])
    tie.add_trial(_trial([0.8, 5000.0], _cfg(dim=8)))
    tie.add_trial(_trial([0.8, 5000.0], _cfg(dim=16)))
    return storage, st, tie, tmp


# ------------------------------------------------------------------------------------------ helpers
def _outputs_match(out: Path, cfg: FasterViTConfig, formats) -> None:
    """Reload the folder every way a user would and compare outputs (fp32, two batch sizes)."""
    import onnxruntime as ort
    import timm

    ref_model = load_model(out).eval()
    via_timm = timm.create_model("nas_faster_vit", config=str(out / "config.json"), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"))).eval()
    sess = None
    if "onnx" in formats:
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ts = torch.jit.load(str(out / "model.torchscript.pt")) if "torchscript" in formats else None
    pt = None
    if "pt" in formats:
        from search_spaces import FasterViT

        pt = FasterViT(cfg)
        pt.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        pt.eval()
    g = torch.Generator().manual_seed(123)
    for b in (1, 3):
        x = torch.randn(b, 3, *cfg.resolution, generator=g)
        with torch.no_grad():
            ref = ref_model(x)
            assert ref.shape == (b, cfg.num_classes)
            assert torch.equal(via_timm(x), ref)
            if pt is not None:
                assert torch.equal(pt(x), ref)
            if ts is not None:
                assert (ts(x) - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
        if sess is not None:
            y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            assert y.shape == tuple(ref.shape)
            assert np.abs(y - ref.numpy()).max() <= 1e-4 * max(1.0, float(ref.abs().max()))


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------------------ selection
def test_pick_semantics(syn):
    _, st, _, _ = syn
    assert select_trial(st, pick="knee").number == 2
    assert select_trial(st, pick="max-accuracy").number == 3  # #7 repeats #3's config: the lowest number wins
    assert select_trial(st, pick="max-throughput").number == 0
    assert select_trial(st, pick="min-throughput").number == 3
    # a condition in a 2-objective study: the best on the other objective among the Pareto trials satisfying it
    assert select_trial(st, pick="throughput>=8000").number == 1
    assert select_trial(st, pick="throughput>=4000").number == 2
    assert select_trial(st, pick=["throughput>=4000", "knee"]).number == 2
    assert select_trial(st, pick=["accuracy>=0.7", "throughput>=5000", "max-accuracy"]).number == 2
    assert select_trial(st, pick=["accuracy>=0.7", "throughput>=5000", "max-throughput"]).number == 1
    assert select_trial(st, trial=4).number == 4  # dominated but complete: exportable by number


def test_pick_errors(syn):
    _, st, tie, _ = syn
    with pytest.raises(ExportError, match=r"ambiguous --pick: trials #1, #2 satisfy .*add --pick max-<objective>"):
        select_trial(st, pick=["accuracy>=0.7", "throughput>=5000"])
    with pytest.raises(ExportError, match=r"highest throughput on the Pareto front is 9000 \(trial #0\)"):
        select_trial(st, pick="throughput>=10000")
    with pytest.raises(ExportError, match=r"no objective 'latency'; its objectives: accuracy, throughput"):
        select_trial(st, pick="min-latency")
    with pytest.raises(ExportError, match="at most one of knee"):
        select_trial(st, pick=["knee", "max-accuracy"])
    with pytest.raises(ExportError, match="must be 'knee'"):
        select_trial(st, pick="best")
    with pytest.raises(ExportError, match="not both"):
        select_trial(st, trial=1, pick="knee")
    with pytest.raises(ExportError, match="give --trial N or --pick"):
        select_trial(st)
    for p in ("knee", "max-accuracy", "min-throughput"):
        with pytest.raises(ExportError, match=r"ambiguous --pick .*trials #0, #1 tie"):
            select_trial(tie, pick=p)
    with pytest.raises(ExportError, match=r"trial #5 failed \(CUDA out of memory\)"):
        select_trial(st, trial=5)
    with pytest.raises(ExportError, match=r"trial #6 was pruned \(constraint params<=1e5 fails\)"):
        select_trial(st, trial=6)
    with pytest.raises(ExportError, match=r"no trial #42 \(its trials: #0..#7\)"):
        select_trial(st, trial=42)


def test_three_objectives_condition_is_ambiguous(tmp_path):
    import optuna

    st = optuna.create_study(study_name="three", storage=f"sqlite:///{tmp_path}/3.db",
                             directions=["maximize", "maximize", "minimize"])
    st.set_metric_names(["accuracy", "throughput", "params"])
    st.add_trial(_trial([0.8, 5000.0, 3e5], _cfg(dim=8)))
    st.add_trial(_trial([0.9, 6000.0, 9e5], _cfg(dim=16)))
    with pytest.raises(ExportError, match=r"trials #0, #1 satisfy throughput>=1000"):
        select_trial(st, pick="throughput>=1000")
    assert select_trial(st, pick=["throughput>=1000", "min-params"]).number == 0
    assert select_trial(st, pick="throughput>=5500").number == 1  # one candidate: no ambiguity


def test_real_study_picks(real_study):
    _, st, _ = real_study
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert [t.number for t in complete] == [1, 2, 3] and st.trials[0].state.name == "FAIL"
    best_flops = min(complete, key=lambda t: t.values[1])
    assert select_trial(st, pick="min-flops").number == best_flops.number == 1
    assert select_trial(st, pick="knee").number == 1  # the front is a single point here
    assert select_trial(st, pick="flops<=3e6").number == 1
    # #1 and #3 differ only in ct_size, which adds no parameters: a genuine tie on params
    assert complete[0].values[0] == complete[2].values[0]
    with pytest.raises(ExportError, match=r"ambiguous --pick min-params: trials #1, #3 tie"):
        select_trial(st, pick="min-params")
    with pytest.raises(ExportError, match=r"trial #0 failed \(refused config: ct_size=3"):
        select_trial(st, trial=0)


# ------------------------------------------------------------------------------------------ export
def test_export_trial_every_format(real_study, tmp_path):
    storage, st, _ = real_study
    out = tmp_path / "m3"
    res = export_model(out, study="t", storage=storage, trial=3, formats=ALL_FORMATS)
    t = st.trials[3]
    assert res.trial == 3 and res.weights == "initialised"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "export.json", "README.md", "model.safetensors", "model.onnx", "model.pt",
         "model.torchscript.pt"])
    cfg = FasterViTConfig.load(out / "config.json")
    assert cfg == FasterViTConfig.from_dict(t.user_attrs["config"])
    assert json.loads((out / "config.json").read_text()) == t.user_attrs["config"]
    _outputs_match(out, cfg, ALL_FORMATS)

    meta = json.loads((out / "export.json").read_text())
    assert meta["export_schema_version"] == 1 and meta["source"]["study"] == "t" and meta["source"]["trial"] == 3
    assert meta["weights"]["kind"] == "initialised" and meta["weights"]["seed"] == 0
    assert meta["formats"] == list(ALL_FORMATS) and meta["params"] == t.user_attrs["params"]
    assert meta["format_details"]["onnx"]["opset"] >= 17
    assert {(r["format"], r["batch_size"]) for r in meta["verification"]} >= {("onnx", 1), ("onnx", 3)}
    assert all(r["ok"] for r in meta["verification"])
    card = (out / "README.md").read_text()
    assert "study `t`, trial #3" in card and "initialised, not trained" in card
    assert f"{t.user_attrs['params']:,}" in card and t.user_attrs["summary"] in card
    assert "load_model(" in card and "nas_faster_vit" in card and "InferenceSession" in card
    # the initialisation is seeded: exporting again gives the same weights
    model, info = build_export_model(cfg, seed=0)
    assert info["kind"] == "initialised"
    saved = load_model(out).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("pick, number", [("knee", 2), ("max-accuracy", 3), ("throughput>=8000", 1)])
def test_export_each_pick_kind(syn, tmp_path, pick, number):
    storage, st, _, _ = syn
    out = tmp_path / "m"
    res = export_model(out, study="syn", storage=storage, pick=pick, formats=ALL_FORMATS)
    assert res.trial == number
    cfg = FasterViTConfig.load(out / "config.json")
    assert cfg.to_dict() == st.trials[number].user_attrs["config"]
    _outputs_match(out, cfg, ALL_FORMATS)
    card = (out / "README.md").read_text()
    meta = json.loads((out / "export.json").read_text())
    assert meta["source"]["pick"] == [pick] and f"`--pick {pick}`" in card
    # every measurement of the trial is in the card: objectives, profiler record (GPU, driver, date, batch,
    # dtype, mode) and proxy values
    acc, thr = st.trials[number].values
    for needle in (f"| accuracy | {acc:.6g} | maximize", f"| throughput | {thr:.6g} | maximize",
                   "NVIDIA H100 80GB HBM3 (driver 570.124.06), 2026-11-20T10:00:00+00:00: batch 128, fp16, "
                   "mode cudagraph",
                   f"| synflow.value | {acc * 100:.6g} |", "| cv | — |"):
        assert needle in card, needle


def test_trained_weights_are_used(syn, tmp_path):
    """A trial with user_attrs['weights_path'] exports those weights, and says so."""
    import optuna

    from search_spaces import FasterViT
    from search_spaces.io import save_weights

    storage, _, _, _ = syn
    cfg = FasterViTConfig.from_dict(_cfg(dim=8))
    torch.manual_seed(7)
    trained = FasterViT(cfg)
    with torch.no_grad():
        trained.head.bias.fill_(0.5)  # something no initialisation gives
    wpath = save_weights(trained, tmp_path / "trained.safetensors")
    st = optuna.create_study(study_name="trained", storage=storage, directions=["maximize", "maximize"])
    st.set_metric_names(["accuracy", "throughput"])
    st.add_trial(_trial([0.5, 100.0], cfg.to_dict(), attrs={"weights_path": str(wpath)}))
    res = export_model(tmp_path / "tr", study=st, pick="knee", formats=("safetensors",))
    assert res.weights == "trained"
    model = load_model(tmp_path / "tr")
    assert torch.equal(model.head.bias, torch.full((10,), 0.5))
    card = (tmp_path / "tr" / "README.md").read_text()
    assert "Weights: trained" in card and "not trained" not in card


def test_export_errors_write_nothing(real_study, syn, tmp_path):
    storage, st, _ = real_study
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ExportError, match=r"trial #0 failed"):
        export_model(tmp_path / "a", study=st, trial=0)
    with pytest.raises(ExportError, match=r"no trial #9"):
        export_model(tmp_path / "a", study=st, trial=9)
    with pytest.raises(ExportError, match=r"unknown export format\(s\) \['tflite'\]"):
        export_model(tmp_path / "a", study=st, trial=1, formats="onnx,tflite")
    with pytest.raises(ExportError, match="not both"):
        export_model(tmp_path / "a", study=st, trial=1, pick="knee")
    with pytest.raises(ValueError, match=r"no study 'nope' in this storage; studies there: \['t'\]"):
        export_model(tmp_path / "a", study="nope", storage=storage, trial=1)
    with pytest.raises(ExportError, match=r"ambiguous --pick knee"):
        export_model(tmp_path / "a", study=syn[2], pick="knee")
    with pytest.raises(ExportError, match="opset=13 must be >= 17"):
        export_model(tmp_path / "a", study=st, trial=1, opset=13)
    assert sorted(tmp_path.iterdir()) == before  # no folder, no temporary left behind

    # an existing non-empty folder is refused without --force and left exactly as it was
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    snapshot = _listing(out)
    with pytest.raises(ExportError, match="exists and is not empty; add --force"):
        export_model(out, study=st, trial=1)
    assert _listing(out) == snapshot


def test_force_replaces_only_when_complete(real_study, tmp_path, monkeypatch):
    import nas.export as ex

    _, st, _ = real_study
    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("old")
    snapshot = _listing(out)

    def broken(*a, **k):
        raise ExportError("simulated failure after writing")

    monkeypatch.setattr(ex, "_verify", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_model(out, study=st, trial=1, formats=("safetensors",), force=True)
    assert _listing(out) == snapshot and sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(ExportError, match="simulated"):  # folders it had to create are removed again
        export_model(tmp_path / "new" / "deeper" / "m", study=st, trial=1, formats=("safetensors",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    monkeypatch.undo()

    def exporter_bug(model, args=(), f=None, *, dynamo=True, **kw):
        raise RuntimeError("Unsupported operator aten::foo\n(long exporter traceback)")

    monkeypatch.setattr(torch.onnx, "export", exporter_bug)
    with pytest.raises(ExportError, match=r"writing model.onnx failed: RuntimeError: Unsupported operator aten::foo$"):
        export_model(out, study=st, trial=1, formats=("onnx",), force=True)
    assert _listing(out) == snapshot and sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    monkeypatch.undo()

    export_model(out, study=st, trial=1, formats=("safetensors",), force=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    umask = os.umask(0)
    os.umask(umask)  # an ordinary, readable folder (not mkdtemp's private 0700)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder needs no --force
    export_model(empty, config=FasterViTConfig(**{**BASE, "dim": 8}), formats=("safetensors",))
    assert (empty / "config.json").is_file()


# ------------------------------------------------------------------------------------------ CLI
def test_cli_export_from_study_and_config(syn, tmp_path):
    storage, st, _, _ = syn
    out = tmp_path / "knee"
    r = runner.invoke(app, ["export", "--study", "syn", "--storage", storage, "--pick", "knee", "--out", str(out),
                            "--format", "onnx"])
    assert r.exit_code == 0, r.output
    assert "trial #2 of study syn" in r.output and "model.onnx" in r.output
    assert json.loads((out / "export.json").read_text())["files"] == {"safetensors": "model.safetensors",
                                                                       "onnx": "model.onnx"}
    _outputs_match(out, FasterViTConfig.load(out / "config.json"), ("onnx",))

    cfg = FasterViTConfig(**{**BASE, "dim": 8})
    path = cfg.save(tmp_path / "tiny.json")
    out2 = tmp_path / "from_config"
    r = runner.invoke(app, ["export", "--config", str(path), "--out", str(out2), "--format", "safetensors", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["trial"] is None and rec["weights"] == "initialised" and rec["arch_id"] == cfg.arch_id
    assert FasterViTConfig.load(out2 / "config.json") == cfg
    card = (out2 / "README.md").read_text()
    assert "initialised, not trained" in card and "no measurements" in card
    # widths 8..64, head dims 8..32: padding would change nothing, so the advice is the GELU epilogue only
    assert ("**Deploy fast:** after loading it in PyTorch, `model.switch_to_deploy()` then "
            "`search_spaces.fuse_gelu_epilogue(model)`:" in card and "pad_channels" not in card)
    _outputs_match(out2, cfg, ())


def test_card_says_how_to_deploy_fast_when_padding_would_change_the_model(tmp_path):
    from search_spaces import fuse_gelu_epilogue, pad_channels

    cfg = FasterViTConfig(**{**BASE, "dim": 12, "num_heads": [1, 1, 2, 4]})  # stage-0 width 12
    res = export_model(tmp_path / "odd", config=cfg, formats=("safetensors",))
    card = (res.out / "README.md").read_text()
    assert ("**Deploy fast:** after loading it in PyTorch, `model.switch_to_deploy()` then "
            "`search_spaces.pad_channels(model, 8)`" in card and "it zero-pads stages.0 width 12→16." in card)
    # what the card promises is what pad_channels does to the exported model, logits included
    model = load_model(res.out).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        done = pad_channels(model.switch_to_deploy(), 8)
        assert torch.allclose(model(x), ref, atol=1e-4)
    assert res.metadata["channel_padding"] == done.to_dict()
    # then the GELU epilogue, as the card says: tanh-approximate on CUDA, the same logits on the CPU
    assert ("it zero-pads stages.0 width 12→16. Then `search_spaces.fuse_gelu_epilogue(model)`:" in card
            and "on CUDA its GELU is tanh-approximate" in card)
    with torch.no_grad():
        fused = fuse_gelu_epilogue(model)
        assert fused.fused and torch.allclose(model(x), ref, atol=1e-4)


def test_cli_errors_exit_2(syn, real_study, tmp_path):
    storage, _, _, _ = syn
    cases = [
        (["--study", "syn", "--storage", storage, "--trial", "1", "--pick", "knee"], "not both"),
        (["--study", "syn", "--storage", storage], "exactly one of --trial N or --pick"),
        (["--study", "syn", "--storage", storage, "--trial", "5"], "trial #5 failed (CUDA out of memory)"),
        (["--study", "syn", "--storage", storage, "--pick", "max-latency"], "no objective 'latency'"),
        (["--study", "nope", "--storage", storage, "--trial", "1"], "no study 'nope'"),
        (["--study", "syn", "--storage", storage, "--trial", "1", "--format", "tflite"], "unknown export format"),
        (["--config", "faster_vit_0_224", "--pick", "knee"], "nothing to pick"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["export", *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2, (args, r.output)
        assert message in " ".join(r.output.split()), (args, r.output)
        assert "Traceback" not in r.output
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "a.txt").write_text("keep")
    r = runner.invoke(app, ["export", "--study", "syn", "--storage", storage, "--trial", "1", "--out", str(taken)])
    assert r.exit_code == 2 and "not empty; add --force" in " ".join(r.output.split())
    assert sorted(p.name for p in taken.iterdir()) == ["a.txt"] and (taken / "a.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_trained_trial_exports_its_trained_weights(tmp_path):
    """A `--proxy train` trial saves its network; export ships those weights and says "trained"."""
    import optuna
    import torch
    from safetensors.torch import load_file

    from nas.export import export_model
    from nas.search import SearchSettings, run_search
    from search_spaces import load_model
    from tests.spaces import tiny_space

    storage = f"sqlite:///{tmp_path}/nas.db"
    run_search(SearchSettings(objectives=("accuracy", "params"), proxy="train", trials=1, space=tiny_space(),
                              storage=storage, study="trained", results_dir=str(tmp_path), device="cpu", quiet=True,
                              enqueue_presets=False, train_subset=512, train_epochs=1.0, proxy_resolution=64))
    t = optuna.load_study(study_name="trained", storage=storage).trials[0]
    assert t.state == optuna.trial.TrialState.COMPLETE, t.user_attrs.get("error")
    weights = t.user_attrs["weights_path"]
    res = export_model(tmp_path / "out", study="trained", storage=storage, trial=0, formats=("safetensors",))
    assert res.weights == "trained"
    model = load_model(tmp_path / "out")
    saved = load_file(weights)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
