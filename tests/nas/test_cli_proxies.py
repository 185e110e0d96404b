"""``nas proxies``: JSON and table output on a tiny config, and the one-line data error (exit 2)."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def _err(result) -> str:
    try:
        return result.stderr
    except ValueError:  # older click: stderr mixed into output
        return result.output


def test_json_lists_every_proxy(tiny_config_json):
    from evaluators.proxies import list_proxies

    r = runner.invoke(app, ["proxies", "--data", "fashion-mnist", "--config", tiny_config_json, "--device", "cpu",
                            "--batch-size", "8", "--json"])
    assert r.exit_code == 0, _err(r)
    out = json.loads(r.stdout)
    assert out["data"] == "fashion-mnist" and out["batch_size"] == 8 and out["resolution"] == [64, 64]
    assert list(out["proxies"]) == list_proxies()
    for name, rec in out["proxies"].items():
        assert rec["error"] is None, (name, rec["error"])
        assert math.isfinite(rec["value"]) and rec["seconds"] >= 0


def test_table_with_selected_proxies(tiny_config_json):
    r = runner.invoke(app, ["proxies", "--config", tiny_config_json, "--device", "cpu", "--batch-size", "8",
                            "--proxy", "params", "--proxy", "naswot"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, _err(r)
    assert "params" in r.stdout and "naswot" in r.stdout and "synflow" not in r.stdout
    assert "higher = better" in r.stdout


def test_missing_dataset_is_one_clear_error():
    r = runner.invoke(app, ["proxies", "--data", "cifar10", "--data-dir", "/nonexistent", "--config",
                            "faster_vit_0_224", "--device", "cpu"], env={"COLUMNS": "200"})
    assert r.exit_code == 2
    err = " ".join(_err(r).split())
    assert "cifar10 not found" in err and "/nonexistent/cifar-10-batches-py/" in err and "--data-dir" in err
    assert "Traceback" not in err


def test_unknown_proxy_and_bad_batch(tiny_config_json):
    r = runner.invoke(app, ["proxies", "--config", tiny_config_json, "--proxy", "bogus", "--device", "cpu"])
    assert r.exit_code == 2 and "unknown proxy 'bogus'" in " ".join(_err(r).split())
    r = runner.invoke(app, ["proxies", "--config", tiny_config_json, "--batch-size", "1", "--device", "cpu"])
    assert r.exit_code == 2 and "--batch-size=1" in " ".join(_err(r).split())
