"""The architecture-id cache's key (``nas.cache.measurement_key``): what a measured value depends on."""

from __future__ import annotations

from types import SimpleNamespace

import optuna

from nas import record as R
from nas.cache import cached_source, measurement_key
from nas.settings import SearchSettings


def _key(**settings) -> dict:
    s = SearchSettings(objectives=("params", "throughput"), device="cpu", **settings).resolved()
    return measurement_key(SimpleNamespace(settings=s, device_name="cpu", needs_profile=True, estimator=None))


def test_channel_padding_is_part_of_the_key_only_when_set():
    plain, padded = _key(), _key(pad_channels=8)
    assert "pad_channels" not in plain  # the keys of studies made before the option are unchanged
    assert padded == dict(plain, pad_channels=8) and _key(pad_channels=16) != padded
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0], user_attrs={R.ARCH_ID: "a", R.MEASURED_WITH: plain}))
    assert cached_source(study, "a", -1, plain).number == 0
    assert cached_source(study, "a", -1, padded) is None  # an unpadded throughput is not reused for a padded one


def test_gelu_epilogue_is_part_of_the_key_only_when_set():
    plain, fused = _key(), _key(gelu_epilogue=True)
    assert "gelu_epilogue" not in plain and _key(gelu_epilogue=False) == plain  # keys of older studies unchanged
    assert fused == dict(plain, gelu_epilogue=True)
    assert _key(pad_channels=8, gelu_epilogue=True) == dict(plain, pad_channels=8, gelu_epilogue=True)
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0], user_attrs={R.ARCH_ID: "a", R.MEASURED_WITH: plain}))
    assert cached_source(study, "a", -1, fused) is None  # an unfused throughput is not reused for a fused one
