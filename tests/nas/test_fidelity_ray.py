"""`--fidelity sh --backend ray`: the same multi-objective rung logic inside each Ray trial (not ASHA)."""

from __future__ import annotations

import math

import optuna
import pytest

from nas.search import SearchSettings
from nas.storage import get_storage
from tests.nas.test_ray import local_ray  # noqa: F401  (the module's Ray cluster fixture)
from tests.spaces import tiny_space, write_space

pytest.importorskip("ray")


def test_ray_runs_the_rungs(local_ray, tmp_path, monkeypatch):  # noqa: F811
    from nas.ray_backend import run_ray_search

    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "space.yaml", tiny_space())
    settings = SearchSettings(objectives=("accuracy", "params"), proxy="train", train_epochs=4, train_subset=16,
                              train_batch_size=16, train_val_subset=32, fidelity="sh", min_budget=1.0, eta=2,
                              proxy_resolution=64, space="space.yaml", device="cpu", trials=4, study="rsh",
                              quiet=True)
    with pytest.raises(ValueError, match="two schedulers"):
        run_ray_search(settings, workers=1, asha=True)
    run_ray_search(settings, workers=1)
    trials = optuna.load_study(study_name="rsh", storage=get_storage("journal:results/nas.journal")).get_trials()
    S = optuna.trial.TrialState
    assert len(trials) == 4 and all(t.state in (S.COMPLETE, S.PRUNED) for t in trials)
    own = [t for t in trials if t.user_attrs.get("cache_hit") is None]
    assert any(t.state == S.PRUNED for t in own) and any(t.state == S.COMPLETE for t in own)
    for t in own:
        entries = t.user_attrs["rungs"]
        for e in entries:
            assert e["keep"] == math.ceil(e["peers"] / 2) and (e["decision"] == "continue") == (e["position"] < e["keep"])
        if t.state == S.PRUNED:
            assert t.user_attrs["error"].startswith("stopped at rung") and entries[-1]["decision"] == "stop"
            assert t.user_attrs["rung_accuracy"] == entries[-1]["accuracy"]
        else:
            assert [e["decision"] for e in entries] == ["continue", "continue"]
            assert t.user_attrs["proxy"]["train"]["steps"] == 4
