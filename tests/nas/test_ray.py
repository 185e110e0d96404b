"""``nas search --backend ray``: Ray Tune drives trials into the same Optuna study as a local run."""

from __future__ import annotations

import math
import sys

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.search import SearchSettings, create_or_load_study, run_search
from nas.objectives import parse_objectives
from nas.storage import get_storage
from tests.spaces import tiny_space, write_space

runner = CliRunner()

# ct_size=3 > window 2 is refused by the generator: such trials must be recorded as FAIL with the reason
REFUSED = {"dim": 16, "depths[2]": 1, "ct_size": 3}


def _text(output: str) -> str:
    return " ".join(output.split())


def test_without_ray_the_error_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    from nas.ray_backend import RayNotInstalledError, run_ray_search

    with pytest.raises(RayNotInstalledError, match=r'pip install "nas-fastervit\[ray\]"'):
        run_ray_search(SearchSettings(objectives=("params", "flops"), device="cpu", trials=1))
    result = runner.invoke(app, ["search", "--backend", "ray", "--objective", "params,flops", "--device", "cpu",
                                 "--trials", "1", "-q"])
    assert result.exit_code == 2
    assert 'pip install "nas-fastervit[ray]"' in _text(result.output)


def test_storage_policy_for_ray():
    from nas.ray_backend import ray_storage

    assert ray_storage(None, nodes=1).startswith("journal:/")
    assert ray_storage("postgresql://u@db/nas", nodes=3) == "postgresql://u@db/nas"
    with pytest.raises(ValueError, match="cluster has 3 nodes"):
        ray_storage("journal:results/nas.journal", nodes=3)
    with pytest.raises(ValueError, match="one writer"):
        ray_storage("sqlite:///results/nas.db", nodes=1)


def test_searcher_tells_each_outcome(tmp_path):
    """The searcher's outcome table, one Tune result per case, without a cluster."""
    from search_spaces.space import load_space

    from nas.ray_tune import Control, NasSearcher

    write_space(tmp_path / "space.yaml", tiny_space())
    storage = f"journal:{tmp_path / 's.journal'}"
    objectives = parse_objectives("params,accuracy")
    settings = SearchSettings(objectives=("params", "accuracy"), storage=storage, study="tell", device="cpu")
    study = create_or_load_study(settings, objectives, sampler=optuna.samplers.RandomSampler(seed=0))
    lines: list[str] = []
    control = Control(lines.append, 6, ["params", "accuracy"], 20)
    searcher = NasSearcher(study=study, space=load_space(str(tmp_path / "space.yaml")), control=control)
    nan = math.nan
    cases = {
        "complete": dict(result={"params": 10.0, "accuracy": 50.0, "nas_status": "complete"}),
        "failed": dict(result={"params": nan, "accuracy": nan, "nas_status": "failed"}),
        "pruned": dict(result={"params": nan, "accuracy": nan, "nas_status": "pruned"}),
        "asha": dict(result={"params": 10.0, "accuracy": 12.5, "nas_status": "running", "nas_step": 40,
                             "training_iteration": 1}),
        "crashed": dict(result=None, error=True),
        "never_ran": dict(result=None),
    }
    for tune_id in cases:
        config = searcher.suggest(tune_id)
        assert set(config) >= {"dim", "nas_trial_id", "nas_trial_number"}
    for tune_id, kw in cases.items():
        searcher.on_trial_complete(tune_id, **kw)
    study = optuna.load_study(study_name="tell", storage=get_storage(storage))
    t = {tune_id: study.trials[i] for i, tune_id in enumerate(cases)}
    S = optuna.trial.TrialState
    assert t["complete"].state == S.COMPLETE and t["complete"].values == [10.0, 50.0]
    assert t["failed"].state == S.FAIL and t["pruned"].state == S.PRUNED
    assert t["asha"].state == S.PRUNED and t["asha"].values is None
    assert t["asha"].user_attrs["error"].startswith("stopped by ASHA after 1 report(s) (step 40, accuracy 12.5)")
    assert t["crashed"].state == S.FAIL and t["crashed"].user_attrs["error"].startswith("Ray trial failed")
    assert t["never_ran"].state == S.FAIL and "before it reported" in t["never_ran"].user_attrs["error"]
    assert len(lines) == 6 and lines[0].startswith("[1/6] ray #0 COMPLETE params=10 accuracy=50")
    searcher.on_trial_complete("complete", **cases["complete"])  # a second completion changes nothing
    assert len(lines) == 6


def test_a_failed_tell_still_ends_the_trial(tmp_path):
    """A storage fault while the driver tells an outcome: the trial ends FAIL with the reason, never RUNNING."""
    from search_spaces.space import load_space

    from nas.ray_tune import Control, NasSearcher

    write_space(tmp_path / "space.yaml", tiny_space())
    storage = f"journal:{tmp_path / 's.journal'}"
    settings = SearchSettings(objectives=("params", "flops"), storage=storage, study="tf", device="cpu")
    study = create_or_load_study(settings, parse_objectives("params,flops"),
                                 sampler=optuna.samplers.RandomSampler(seed=0))
    searcher = NasSearcher(study=study, space=load_space(str(tmp_path / "space.yaml")),
                           control=Control(None, 1, ["params", "flops"], 20))
    searcher.suggest("t0")

    def broken_tell(*a, **k):
        raise RuntimeError("simulated storage fault")

    searcher.study.tell = broken_tell
    searcher.on_trial_complete("t0", result={"params": 1.0, "flops": 2.0, "nas_status": "complete"})
    t = optuna.load_study(study_name="tf", storage=get_storage(storage)).trials[0]
    assert t.state == optuna.trial.TrialState.FAIL
    assert t.user_attrs["error"] == ("the driver could not record the outcome COMPLETE: RuntimeError: "
                                     "simulated storage fault")


@pytest.fixture(scope="module")
def local_ray():
    import ray  # the `ray` extra is installed for the tests (./setup.sh test)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_cluster_records_every_trial_like_a_local_run(local_ray, tmp_path, monkeypatch):
    from nas.pareto import write_report
    from nas.ray_backend import run_ray_search

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    write_space(tmp_path / "space.yaml", tiny_space(refused=True))
    base = dict(objectives=("params", "flops"), space="space.yaml", device="cpu", quiet=True)

    # a local run of the same space: the attributes a trial must have
    local_settings = SearchSettings(**base, trials=1, study="local", storage="sqlite:///local.db")
    create_or_load_study(local_settings, parse_objectives("params,flops")).enqueue_trial(
        {"dim": 8, "depths[2]": 1, "ct_size": 1})
    local = run_search(local_settings)
    assert local.n_complete == 1
    local_keys = set(optuna.load_study(study_name="local", storage="sqlite:///local.db").trials[0].user_attrs)

    settings = SearchSettings(**base, trials=6, study="ray")
    study = create_or_load_study(settings, parse_objectives("params,flops"))
    study.enqueue_trial(REFUSED)  # the first trial is a config the generator refuses
    result = run_ray_search(settings, workers=2)

    study = optuna.load_study(study_name="ray", storage=get_storage("journal:results/nas.journal"))
    trials = study.get_trials()
    assert len(trials) == 6, [(t.number, t.state) for t in trials]
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.user_attrs["worker"]["tune_trial_id"] for t in trials}) == 6  # one Tune trial each
    states = optuna.trial.TrialState
    assert all(t.state in (states.COMPLETE, states.FAIL) for t in trials)
    assert result.n_complete + result.n_failed == 6
    for t in trials:
        assert t.user_attrs["worker"]["backend"] == "ray" and t.user_attrs["device"] == "cpu"
        if t.state == states.COMPLETE:
            assert set(t.user_attrs) - {"worker"} == local_keys
            assert t.values == [t.user_attrs["params"], t.user_attrs["flops"]] and t.user_attrs["status"] == "complete"
        else:
            assert t.user_attrs["error"]
    refused = trials[0]
    assert refused.params == REFUSED and refused.state == states.FAIL and refused.user_attrs["status"] == "refused"
    assert refused.user_attrs["error"].startswith("refused config: ct_size=3 must be <= window_size[2]=2")
    assert study.user_attrs["objectives"] == ["params", "flops"]

    assert write_report(study, tmp_path / "report.html") is not None
    shown = runner.invoke(app, ["pareto", "--study", "ray", "--storage", "journal:results/nas.journal"])
    assert shown.exit_code == 0, shown.output
    assert "Pareto" in shown.output


def test_asha_stops_or_completes_train_proxy_trials(local_ray, tmp_path, monkeypatch):
    """The train proxy reports each epoch to Tune; every trial ends COMPLETE, or PRUNED by ASHA with the reason."""
    from nas.ray_backend import run_ray_search

    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "space.yaml", tiny_space())
    settings = SearchSettings(objectives=("params", "accuracy"), proxy="train", train_epochs=3, train_subset=512,
                              proxy_resolution=64, space="space.yaml", device="cpu", trials=4, study="asha",
                              quiet=True)
    # one trial at a time: ASHA compares each trial's first-epoch accuracy with the trials before it
    run_ray_search(settings, workers=1)
    study = optuna.load_study(study_name="asha", storage=get_storage("journal:results/nas.journal"))
    trials = study.get_trials()
    assert len(trials) == 4
    states = optuna.trial.TrialState
    for t in trials:
        assert t.user_attrs["train_history"], t.number
        if t.state == states.PRUNED:
            assert t.user_attrs["error"].startswith("stopped by ASHA")
        else:
            assert t.state == states.COMPLETE and len(t.user_attrs["train_history"]) >= 2
    pruned = [t for t in trials if t.state == states.PRUNED]
    assert pruned, [(t.number, t.user_attrs["train_history"]) for t in trials]  # ASHA did stop a trial
    assert any(t.state == states.COMPLETE for t in trials)
    for t in pruned:  # stopped after the first epoch's report: fewer validations than a complete trial
        assert len(t.user_attrs["train_history"]) < 3
