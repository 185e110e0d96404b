"""`nas describe` and `nas presets`, through the real CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def test_describe_preset_json():
    r = runner.invoke(app, ["describe", "faster_vit_0_224", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert abs(rec["params"] / 1e6 - 31.4) < 0.1
    assert abs(rec["flops"] / 1e9 - 3.3) / 3.3 < 0.1
    s3 = rec["stages"][2]
    assert s3["kind"] == "HAT" and s3["windows"] == "2x2" and s3["tokens_per_window"] == 49
    assert s3["ct_per_window"] == 4 and s3["carrier_tokens"] == 16


def test_describe_config_file_table(tiny_config_json):
    r = runner.invoke(app, ["describe", tiny_config_json])
    assert r.exit_code == 0, r.output
    assert "params" in r.stdout and "HAT" in r.stdout


def test_describe_errors_are_one_message(tmp_path):
    r = runner.invoke(app, ["describe", "faster_vit_9"])
    assert r.exit_code == 2 and "neither a preset" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dim": 64, "num_heads": [2, 4, 6, 16]}))
    r = runner.invoke(app, ["describe", str(bad)])
    assert r.exit_code == 2 and "num_heads[2]=6 must divide the stage-3 width 256" in r.output
    assert "Traceback" not in r.output


def test_presets_lists_all_with_paper_numbers():
    r = runner.invoke(app, ["presets", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {f"faster_vit_{i}_224" for i in range(7)} <= set(rows)
    for i in range(7):
        row = rows[f"faster_vit_{i}_224"]
        if i == 4:  # the paper prints 424.6M; the official code builds 365.6M (README explains)
            assert abs(row["params_m"] - 365.6) / 365.6 < 0.005
        else:
            assert abs(row["params_m"] - row["paper_params_m"]) / row["paper_params_m"] < 0.005


def test_deep_params_extrapolate_exactly():
    """Params are linear in each stage's depth: the extrapolation a deep config uses is exact."""
    from evaluators.cost import static_cost
    from search_spaces import PRESETS

    from nas.commands._common import extrapolated_params

    cfg = PRESETS["faster_vit_0_224"]
    assert extrapolated_params(cfg)[0] == static_cost(cfg).params


def test_describe_refuses_what_the_machine_cannot_build(tmp_path):
    from search_spaces import PRESETS

    r = runner.invoke(app, ["describe", "faster_vit_0_224", "--resolution", "1000000000"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "resolution=1000000000x1000000000" in " ".join(r.output.split()) and "GiB" in r.output
    deep = tmp_path / "deep.json"
    PRESETS["faster_vit_0_224"].replace(depths=(2, 3, 300000, 5)).save(deep)
    r = runner.invoke(app, ["describe", str(deep)])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "depths[2]=300000" in text and "G parameters" in text, r.output
