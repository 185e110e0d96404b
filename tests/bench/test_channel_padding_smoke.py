"""bench/channel_padding.py --smoke on the CPU: both variants measured, their ratio, what was padded."""

from __future__ import annotations

import json
import math

from tests.bench import bench_module


def test_smoke_measures_unpadded_and_padded(tmp_path):
    bench = bench_module("channel_padding")
    out = tmp_path / "pad.json"
    assert bench.main(["--smoke", "--official", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["gpu"] == "cpu" and data["benchmark"] == "channel-padding"
    row = data["models"]["faster_vit_0_224"]
    assert math.isclose(row["ratio"], row["padded_images_per_s"] / row["unpadded_images_per_s"])
    assert row["padded"] == [] and [k["part"] for k in row["kept"]] == ["stem input"]  # FasterViT-0 is aligned
    assert data["official"] and len(row["rounds"]["official"]) == data["rounds"]
    assert math.isclose(row["padded_over_official"], row["padded_images_per_s"] / row["official_images_per_s"])
