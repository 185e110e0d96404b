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
