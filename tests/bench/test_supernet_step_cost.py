"""bench/supernet_step_cost.py --smoke on the CPU, and the committed H100 measurement's shape."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def test_smoke_measures_the_supernet_and_both_subnets(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import supernet_step_cost as bench
    finally:
        sys.path.remove(str(BENCH))
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
    assert f"| {round(data['supernet']['images_per_s']):,} |" in text
    for key in ("largest", "smallest"):
        assert f"| {round(data['standalone'][key]['images_per_s']):,} |" in text
    assert f"| {round(data['standalone_eager']['largest']['images_per_s']):,} |" in text
    assert f"**{data['projected_cost_ratio']:.1f}×**" in text and data["gpu"] in text
