"""``nas profile`` through the real CLI (typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def _text(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_profile_on_cpu_prints_a_json_record(tiny_config_json):
    result = runner.invoke(app, ["profile", tiny_config_json, "--device", "cpu", "--batch-size", "2", "--repeats", "2",
                                 "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["device"] == "cpu" and record["gpu_name"] == "cpu"
    assert record["batch_size"] == 2 and record["repeats"] == 2 and record["warmup"] == 1
    assert record["mode"] == "eager" and record["resolution"] == [64, 64]
    assert record["images_per_s"] > 0 and record["error"] is None
    assert "not the paper's protocol" in _text(result.stderr)


def test_profile_table_on_cpu(tiny_config_json):
    result = runner.invoke(app, ["profile", tiny_config_json, "--device", "cpu", "--batch-size", "2", "--repeats", "2",
                                 "--warmup", "1", "--no-deploy", "--no-channels-last", "--resolution", "96"])
    assert result.exit_code == 0, result.output
    assert "images/s (median)" in result.stdout and "96x96" in result.stdout
    assert "no deploy" in result.stdout and "contiguous" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on a machine without a CUDA GPU")
def test_profile_without_gpu_exits_3_with_one_message():
    result = runner.invoke(app, ["profile", "faster_vit_0_224"])
    assert result.exit_code == 3
    assert "no CUDA GPU" in _text(result.output) and "--device cpu" in _text(result.output)
    assert "Traceback" not in result.output


def test_bad_config_file_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dim": 64, "depths": [1, 1, 1]}))
    result = runner.invoke(app, ["profile", str(bad), "--device", "cpu"])
    assert result.exit_code == 2
    assert "depths" in _text(result.output) and "Traceback" not in result.output
    result = runner.invoke(app, ["profile", str(tmp_path / "missing.json"), "--device", "cpu"])
    assert result.exit_code == 2 and "does not exist" in _text(result.output)


def test_cudagraph_on_cpu_is_a_clear_error(tiny_config_json):
    result = runner.invoke(app, ["profile", tiny_config_json, "--device", "cpu", "--mode", "cudagraph"])
    assert result.exit_code == 2
    assert "needs a CUDA device" in _text(result.output)


# ------------------------------------------------------------------------------------------ predictor
def test_sample_fit_and_a_search_on_the_predicted_objective(tmp_path, monkeypatch):
    """CPU end to end: `nas profile --sample` measures, `nas predictor fit` fits, `nas search
    --throughput predicted:NAME` searches on it (no profiler run) and labels the values predicted."""
    import optuna

    from tests.spaces import tiny_space, write_space

    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    args = ["profile", "--sample", "12", "--out", "ds.jsonl", "--space", "tiny.yaml", "--device", "cpu",
            "--resolutions", "32-96", "--batch-size", "1", "--repeats", "1", "--warmup", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "12 measured, 0 already there" in _text(r.stdout)
    lines = (tmp_path / "ds.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(x)["gpu_name"] == "cpu" for x in lines)
    r = runner.invoke(app, args)  # a second run resumes: nothing left to measure
    assert "0 measured, 12 already there" in _text(r.stdout)

    r = runner.invoke(app, ["predictor", "fit", "ds.jsonl", "--name", "mycpu"])
    assert r.exit_code == 0, r.output
    assert "mycpu: cpu (eager, fp32, batch 1), 10 training configs" in _text(r.stdout)
    assert (tmp_path / "results" / "predictors" / "mycpu.json").is_file()
    r = runner.invoke(app, ["predictor", "show", "mycpu"])
    assert json.loads(r.stdout)["gpu_name"] == "cpu"

    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--quiet", "--objective",
                            "params,throughput", "--throughput", "predicted:mycpu", "--constraint",
                            "throughput>=0.001", "--trials", "4", "--study", "pred"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="pred", storage="sqlite:///results/nas.db")
    assert study.user_attrs["objectives"] == ["params", "predicted_throughput"]
    assert study.metric_names[0] == "params (count)" and "predicted by mycpu" in study.metric_names[1]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for t in done:
        pred = t.user_attrs["predicted"]
        assert pred["predictor"] == "mycpu" and pred["gpu_name"] == "cpu"
        assert t.values[1] == pred["images_per_s"] > 0 and "profile" not in t.user_attrs
        assert isinstance(pred["outside_training_range"], list)  # names of extrapolated quantities, [] inside
    # resuming the study with another predictor would mix values that do not compare
    (tmp_path / "results" / "predictors" / "other.json").write_bytes(
        (tmp_path / "results" / "predictors" / "mycpu.json").read_bytes())
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "params,throughput",
                            "--throughput", "predicted:other", "--trials", "1", "--study", "pred"])
    assert r.exit_code == 2 and "was run with predictor 'mycpu', not 'other'" in _text(r.output)
    assert "throughput/latency are predicted, not measured: mycpu: cpu" in _text(r.output)


def test_predicted_objective_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["search", "--device", "cpu", "--quiet", "--objective", "params,throughput",
                            "--throughput", "predicted:nope", "--trials", "1"])
    assert r.exit_code == 2 and "unknown predictor 'nope'; known: h100, h200" in _text(r.output)
    r = runner.invoke(app, ["search", "--device", "cpu", "--quiet", "--throughput", "guessed", "--trials", "1"])
    assert r.exit_code == 2 and "must be 'measured' or 'predicted:NAME'" in _text(r.output)
    r = runner.invoke(app, ["profile", "--sample", "3", "--device", "cpu"])
    assert r.exit_code == 2 and "--sample needs --out" in _text(r.output)
    r = runner.invoke(app, ["profile", "--device", "cpu"])
    assert r.exit_code == 2 and "missing NAME|CONFIG.json" in _text(r.output)
    r = runner.invoke(app, ["predictor", "fit", "missing.jsonl"])
    assert r.exit_code == 2 and "does not exist" in _text(r.output)


def test_best_mode_on_cpu_is_a_clear_error(tiny_config_json):
    r = runner.invoke(app, ["profile", tiny_config_json, "--device", "cpu", "--mode", "best"])
    assert r.exit_code == 2 and "mode='best' needs a CUDA device" in _text(r.output)


# ------------------------------------------------------------------------------------------ --pad-channels
def test_pad_channels_reaches_the_profiler_and_is_shown(tiny_config, tmp_path):
    odd = str(tiny_config.replace(dim=12, num_heads=(1, 1, 2, 4)).save(tmp_path / "odd.json"))  # stage-0 width 12
    args = ["profile", odd, "--device", "cpu", "--batch-size", "2", "--repeats", "2", "--warmup", "1"]
    r = runner.invoke(app, [*args, "--pad-channels", "8", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["pad_channels"] == 8 and rec["images_per_s"] > 0
    assert rec["channels_padded"] == [{"part": "stages.0 width", "real": 12, "padded": 16}]
    r = runner.invoke(app, [*args, "--pad-channels", "8"])
    assert r.exit_code == 0, r.output
    out = _text(r.stdout)  # table cells wrap: check the pieces
    assert "channel padding" in out and "to multiples of 8: stages.0 width 12→16;" in out and "head output" in out
    r = runner.invoke(app, args)  # default: off, and the table says nothing about it
    assert r.exit_code == 0 and "channel padding" not in r.stdout
    r = runner.invoke(app, [*args, "--pad-channels", "8", "--no-deploy"])
    assert r.exit_code == 2 and "--pad-channels 8 pads the deployed model: drop --no-deploy" in _text(r.output)
    r = runner.invoke(app, ["profile", "--sample", "2", "--out", str(tmp_path / "d.jsonl"), "--device", "cpu",
                            "--pad-channels", "8"])
    assert r.exit_code == 2 and "predictors are fitted unpadded" in _text(r.output)
    assert not (tmp_path / "d.jsonl").exists()


# ------------------------------------------------------------------------------------------ --gelu-epilogue
def test_gelu_epilogue_reaches_the_profiler_and_is_shown(tiny_config, tmp_path):
    from search_spaces import FasterViT, fuse_gelu_epilogue

    path = str(tiny_config.save(tmp_path / "tiny.json"))
    expected = fuse_gelu_epilogue(FasterViT(tiny_config).switch_to_deploy()).to_dict()
    assert expected["fused"] and expected["kept"]  # the tiny model has both: the table shows both
    args = ["profile", path, "--device", "cpu", "--batch-size", "2", "--repeats", "2", "--warmup", "1"]
    r = runner.invoke(app, [*args, "--gelu-epilogue", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["gelu_epilogue"] is True and rec["images_per_s"] > 0
    assert rec["gelu_fused"] == len(expected["fused"]) and rec["gelu_kept"] == expected["kept"]
    r = runner.invoke(app, [*args, "--gelu-epilogue", "--pad-channels", "8"])
    assert r.exit_code == 0, r.output
    out = _text(r.stdout)  # table cells wrap: check the pieces
    assert "GELU epilogue" in out and f"{len(expected['fused'])} MLP(s) fused" in out and "channel padding" in out
    assert "stages.0 conv" in out and "(reasons: --json)" in out  # what was kept: the conv blocks' GELUs
    r = runner.invoke(app, args)  # default: off, and the table says nothing about it
    assert r.exit_code == 0 and "GELU epilogue" not in r.stdout
    r = runner.invoke(app, [*args, "--gelu-epilogue", "--no-deploy"])
    assert r.exit_code == 2 and "--gelu-epilogue fuses the deployed model's MLPs: drop --no-deploy" in _text(r.output)
    r = runner.invoke(app, ["profile", "--sample", "2", "--out", str(tmp_path / "d.jsonl"), "--device", "cpu",
                            "--gelu-epilogue"])
    assert r.exit_code == 2 and "predictors are fitted unfused" in _text(r.output)
    assert not (tmp_path / "d.jsonl").exists()
