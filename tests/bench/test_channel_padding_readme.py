"""The README's channel-padding table is the committed GPU measurement."""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"faster_vit_4_21k_224": "FasterViT-4", "faster_vit_0_224": "FasterViT-0"}


def test_the_committed_measurement_is_a_gpu_run_with_both_variants():
    data = json.loads((ROOT / "results" / "benchmarks" / "channel-padding.json").read_text())
    assert "H100" in data["gpu"] and data["rounds"] >= 2 and data["mode"] == "cudagraph"
    for row in data["models"].values():
        assert math.isclose(row["ratio"], row["padded_images_per_s"] / row["unpadded_images_per_s"])
        assert len(row["rounds"]["padded"]) == len(row["rounds"]["unpadded"]) == data["rounds"]


def test_the_readme_rows_are_the_json():
    data = json.loads((ROOT / "results" / "benchmarks" / "channel-padding.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert "bench/channel_padding.py" in text and data["gpu"] in text
    for key, name in NAMES.items():
        row = data["models"][key]
        start = f"| {name} | {round(row['unpadded_images_per_s']):,} |"
        line = next(t for t in text.splitlines() if t.startswith(start))
        assert f"| {round(row['padded_images_per_s']):,} |" in line and f"{row['ratio']:.2f}×" in line
