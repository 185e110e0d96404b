"""`nas supernet train` and `nas supernet eval` through the real CLI (tiny space, CPU)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from nas.cli import app
from tests.spaces import tiny_space, write_space

runner = CliRunner()
FAST = ["--batch-size", "8", "--subset", "64", "--val-subset", "32", "--device", "cpu", "--no-progress"]


def test_train_pause_resume_and_eval(tmp_path):
    space = write_space(tmp_path / "tiny.yaml", tiny_space())
    out = tmp_path / "sn"
    args = ["supernet", "train", "--space", str(space), "--data", "fashion-mnist", "--epochs", "0.25", "--out",
            str(out), *FAST]
    r = runner.invoke(app, [*args, "--max-steps", "1"])
    assert r.exit_code == 75, r.output  # paused: run it again
    assert "paused: step 1 of 2" in r.output and "run the same command again" in r.output
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["status"] == "done" and res["steps_done"] == 2 and res["session_steps"] == 1
    assert set(res["final_top1"]) == {"largest", "smallest"}

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(dict(tiny_space()["base"], dim=16)))
    r = runner.invoke(app, ["supernet", "eval", "--dir", str(out), "--config", str(cfg), "--val-subset", "32",
                            "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["label"] == "top-1 % (supernet, 0.25 epochs, fashion-mnist)"
    assert len(ev["results"]) == 1 and 0 <= ev["results"][0]["top1"] <= 100 and ev["results"][0]["seconds"] > 0


def test_bad_input_is_one_error_before_training(tmp_path):
    out = tmp_path / "sn"
    base = ["supernet", "train", "--data", "fashion-mnist", "--epochs", "1", "--out", str(out), *FAST]
    r = runner.invoke(app, [*base, "--space", "no-such-space"])
    assert r.exit_code == 2 and "neither a built-in space" in r.output and "Traceback" not in r.output
    refused = write_space(tmp_path / "twins.yaml", tiny_space(attention={"choices": ["hat", "twins"]}))
    r = runner.invoke(app, [*base, "--space", str(refused)])
    assert r.exit_code == 2 and "knob attention" in r.output and "cannot share weights" in r.output
    tiny = write_space(tmp_path / "tiny.yaml", tiny_space())
    r = runner.invoke(app, ["supernet", "train", "--space", str(tiny), "--data", "imagefolder:" + str(tmp_path / "no"),
                            "--epochs", "1", "--out", str(out), *FAST])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    assert not out.exists()
    r = runner.invoke(app, ["supernet", "eval", "--dir", str(tmp_path / "nothing"), "--config", "faster_vit_0_224"])
    assert r.exit_code == 2 and "expected a folder written by `nas supernet train`" in r.output
