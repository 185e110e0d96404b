"""bench/supernet_step_cost.py --smoke on the CPU, and the committed H100 measurement's shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.bench import bench_module

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_measures_the_supernet_and_both_subnets(tmp_path):
    bench = bench_module("supernet_step_cost")
    out = tmp_path / "cost.json"
    assert bench.main(["--smoke", "--eager", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["gpu"] == "cpu" and data["steps"] == 3
    assert set(data["standalone"]) == set(data["standalone_eager"]) == {"largest", "smallest"}
    ips = data["standalone"]["largest"]["images_per_s"]
    assert math.isclose(data["projected_cost_ratio"], ips / data["supernet"]["images_per_s"])


def test_the_committed_measurement_names_its_gpu_and_its_ratio():
    data = json.loads((ROOT / "results" / "benchmarks" / "supernet-step-cost.json").read_text())
    assert "H100" in data["gpu"]
    assert math.isclose(data["projected_cost_ratio"],
                        data["standalone"]["largest"]["images_per_s"] / data["supernet"]["images_per_s"])


def test_the_readme_table_is_the_json():
    data = json.loads((ROOT / "results" / "benchmarks" / "supernet-step-cost.json").read_text())
    text = (ROOT / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| supernet, `--step-mode ")]
    assert len(rows) == len(data["variants"])
    for row, v in zip(rows, data["variants"]):
        assert v["step_mode"].split(":")[0].split(" ")[0] in row and f"`--sandwich-n {v['sandwich_n']}`" in row
        assert f"| {round(v['images_per_s']):,} | {round(v['steady_images_per_s']):,} | " in row
        assert row.rstrip(" |*").endswith(f"{v['cost_ratio']:.1f}×")
    for key in ("largest", "smallest"):
        assert f"| {round(data['standalone'][key]['images_per_s']):,} |" in text
    assert f"| {round(data['standalone_eager']['largest']['images_per_s']):,} |" in text
    assert f"**{data['projected_cost_ratio']:.1f}×**" in text and data["gpu"] in text


def test_every_variant_ratio_is_the_largest_alone_over_it():
    data = json.loads((ROOT / "results" / "benchmarks" / "supernet-step-cost.json").read_text())
    alone = data["standalone"]["largest"]["images_per_s"]
    assert data["supernet"] == data["variants"][0]
    for v in data["variants"]:
        assert math.isclose(v["cost_ratio"], alone / v["images_per_s"])
