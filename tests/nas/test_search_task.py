"""`nas search` on the ground-truth task (fmnist-odd) on the CPU, with a tiny budget."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.search import SearchSettings, run_search
from tests.spaces import tiny_space, write_space

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    return tmp_path


def test_default_search_scores_the_default_proxy_on_the_task(workdir):
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--quiet", "--trials", "3",
                            "--study", "odd", "--proxy-resolution", "64", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="odd", storage="sqlite:///results/nas.db")
    assert study.user_attrs["proxy"] == "az_progressivity" and study.user_attrs["settings"]["data"] == "fmnist-odd"
    assert study.metric_names[0] == "az_progressivity score"
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and all(t.values[0] == t.values[0] for t in done)  # finite proxy values


def test_train_proxy_search_on_the_task(workdir):
    s = SearchSettings(space="tiny.yaml", device="cpu", quiet=True, trials=2, study="odd-train", proxy="train",
                       data="fmnist-odd", train_epochs=1.0, train_subset=512, proxy_resolution=64, batch_size=2,
                       storage="sqlite:///results/nas.db")
    result = run_search(s)
    assert result.n_complete == 2
    study = optuna.load_study(study_name="odd-train", storage="sqlite:///results/nas.db")
    assert study.metric_names[0] == "top-1 % (train, 1 epochs, fmnist-odd)"
    for t in study.trials:
        assert 0.0 <= t.values[0] <= 100.0
