"""A trial whose train proxy fails still records how long each measurement took (``timings``)."""

from __future__ import annotations

import pytest

from nas.objectives import parse_objectives
from nas.settings import SearchSettings
from nas.trial import Evaluator, TrialFailure
from search_spaces import FasterViTConfig


def test_a_failed_train_proxy_records_its_timings():
    s = SearchSettings(objectives=("accuracy", "params"), proxy="train", data="fashion-mnist", device="cpu",
                       proxy_resolution=32, train_subset=32, train_val_subset=32, train_batch_size=16,
                       train_epochs=1.0, quiet=True).validated()
    ev = Evaluator(s, parse_objectives(s.objectives), [])
    # a 2x2 carrier-token grid does not fit the 1x1 stage-3 window that 32 px leaves
    cfg = FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                          window_size=(2, 2, 2, 2), ct_size=2, num_classes=10)
    recorded: dict = {}
    with pytest.raises(TrialFailure, match="proxy resolution 32"):
        ev.measure(cfg, recorded.__setitem__)
    assert {"cost_s", "proxy_s"} <= set(recorded["timings"]) and recorded["timings"]["proxy_s"] >= 0
