"""A real `nas search --proxy train --fidelity sh` study on the CPU (tiny space, 4 optimizer steps at most):
rung decisions replay from the record, PRUNED trials carry their rung, promoted trials train on in one
run, the architecture-id cache, and the refused settings."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.cache import cached_source
from nas.fidelity import decide
from tests.spaces import tiny_space, write_space

runner = CliRunner()
S = optuna.trial.TrialState
ETA = 2
# 16 training images, batch 16 = 1 step per epoch: rungs at 1, 2 epochs, then the full budget of 4
SH = ["--objective", "accuracy,params", "--proxy", "train", "--train-epochs", "4", "--train-subset", "16",
      "--train-batch-size", "16", "--train-val-subset", "32", "--fidelity", "sh", "--min-budget", "1", "--eta", str(ETA), "--proxy-resolution",
      "64", "--no-enqueue-presets", "--study", "sh"]
RUNG_EPOCHS, RUNG_STEPS, FULL_STEPS = [1.0, 2.0], [1, 2], 4


def _search(*args: str):
    return runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--quiet", *args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sh")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    write_space(root / "tiny.yaml", tiny_space())
    r = _search(*SH, "--trials", "7", "--seed", "1")
    assert r.exit_code == 0, r.output
    s = optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db")
    yield s
    mp.undo()


def _own(study):  # trials that trained (not served from the cache)
    return [t for t in study.get_trials() if t.user_attrs.get("cache_hit") is None]


def test_rung_decisions_follow_nondominated_promotion_with_eta(study):
    trials = _own(study)
    assert len(study.trials) == 7 and all(t.state in (S.COMPLETE, S.PRUNED) for t in study.trials)
    assert any(t.state == S.PRUNED for t in trials) and any(t.state == S.COMPLETE for t in trials)
    for k, epochs in enumerate(RUNG_EPOCHS):
        reached = [t for t in trials if len(t.user_attrs.get("rungs", [])) > k]
        went_on = [t for t in reached if t.user_attrs["rungs"][k]["decision"] == "continue"]
        # who reached the next rung (or completed) is exactly who was promoted at this one
        nxt = [t for t in trials if len(t.user_attrs.get("rungs", [])) > k + 1 or
               (k + 1 == len(RUNG_EPOCHS) and t.state == S.COMPLETE)]
        assert {t.number for t in nxt} == {t.number for t in went_on}
        for t in reached:  # replay every decision from the recorded vectors of the earlier trials (one process)
            e = t.user_attrs["rungs"][k]
            assert e["epochs"] == epochs and e["step"] == RUNG_STEPS[k]
            peers = {p.number: p.user_attrs["rungs"][k]["values"] for p in reached if p.number <= t.number}
            d = decide(t.number, peers, (True, False), ETA)
            assert (e["decision"] == "continue") == d.promote
            assert (e["position"], e["peers"], e["keep"]) == (d.position, len(peers), -(-len(peers) // ETA))
            assert e["values"][1] == t.user_attrs["params"]  # ranked on (rung accuracy, params)


def test_pruned_trials_carry_their_rung(study):
    pruned = [t for t in _own(study) if t.state == S.PRUNED]
    assert pruned
    for t in pruned:
        a = t.user_attrs
        last = a["rungs"][-1]
        assert a["status"] == "pruned" and last["decision"] == "stop"
        assert a["rung"] == last["rung"] and a["rung_epochs"] == RUNG_EPOCHS[a["rung"]]
        assert a["rung_accuracy"] == last["accuracy"] == dict(map(tuple, a["train_history"]))[last["step"]]
        assert a["error"].startswith(f"stopped at rung {a['rung']} ({a['rung_epochs']:g} epochs")
        assert max(s for s, _ in a["train_history"]) == last["step"]  # it trained no further
        assert {"cost_s", "proxy_s"} <= set(a["timings"]) and a["timings"]["proxy_s"] > 0  # the seconds it trained


def test_promoted_trials_train_on_in_one_run(study):
    done = [t for t in _own(study) if t.state == S.COMPLETE]
    assert done
    for t in done:
        a = t.user_attrs
        run = a["proxy"]["train"]
        # one training run over the full budget (one cosine schedule, weights and optimizer kept between
        # rungs): its history holds the rung accuracies at the rung steps and goes on to the budget
        assert run["steps"] == run["recipe"]["steps"] == FULL_STEPS and run["status"] == "ok"
        history = dict(map(tuple, run["top1_history"]))
        assert sorted(history) == [1, 2, 3, 4]
        assert [e["accuracy"] for e in a["rungs"]] == [history[s] for s in RUNG_STEPS]
        assert t.values[0] == pytest.approx(history[FULL_STEPS]) == pytest.approx(run["top1"])
        assert [e["decision"] for e in a["rungs"]] == ["continue", "continue"]


def test_a_measured_architecture_is_served_from_the_cache(study):
    source = next(t for t in _own(study) if t.state == S.COMPLETE)
    pruned = next(t for t in _own(study) if t.state == S.PRUNED)
    study.enqueue_trial(source.params)
    study.enqueue_trial(pruned.params)
    r = _search(*SH, "--trials", "2", "--seed", "1")
    assert r.exit_code == 0, r.output
    again = optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db")
    hit, hit_pruned = again.trials[-2:]
    assert hit.state == S.COMPLETE and hit.user_attrs["cache_hit"] == source.number
    assert hit.values == source.values and hit.user_attrs["arch_id"] == source.user_attrs["arch_id"]
    assert hit.user_attrs["timings"] == source.user_attrs["timings"]  # nothing measured again
    assert hit_pruned.state == S.PRUNED and hit_pruned.user_attrs["cache_hit"] == pruned.number
    assert hit_pruned.user_attrs["rung"] == pruned.user_attrs["rung"]
    assert hit_pruned.user_attrs["error"].startswith(f"cache hit: trial {pruned.number} measured this architecture")
    # another budget is another estimator: resuming with it is refused before any trial runs
    other = [a if a != "4" else "2" for a in SH]  # --train-epochs 2
    r = _search(*other, "--trials", "1", "--seed", "1")
    assert r.exit_code == 2 and "was run with --train-epochs 4.0, not 2.0" in " ".join(r.output.split()), r.output
    assert len(optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db").trials) == len(again.trials)
    # a cache hit needs the same measurement key: another seed (a resume may change it: another sample of the
    # same estimator) measures the architecture again
    study.enqueue_trial(source.params)
    r = _search(*SH, "--trials", "1", "--seed", "2")
    assert r.exit_code == 0, r.output
    last = optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db").trials[-1]
    assert last.params == source.params and last.user_attrs.get("cache_hit") is None
    assert last.user_attrs["measured_with"]["seed"] == 2
    # and a trial measured by another estimator (a study mixed before resumes were compared) is no source
    key = source.user_attrs["measured_with"]
    budget = dict(key["estimator"], recipe=dict(key["estimator"]["recipe"], epochs=2.0))
    arch = source.user_attrs["arch_id"]
    assert cached_source(study, arch, -1, key).number == source.number
    assert cached_source(study, arch, -1, dict(key, estimator=budget)) is None


@pytest.mark.parametrize("args, message", [
    (["--eta", "1"], "--eta=1 must be an integer >= 2"),
    (["--min-budget", "8"], "--min-budget 8 must be smaller than the train budget (4 epochs"),
    (["--proxy", "grad_norm"], "--fidelity sh needs --proxy train"),
    (["--min-budget", "0.5"], "rungs at 0.5 and 1 epochs are the same optimizer step (1) with 1 step(s) per epoch"),
    (["--eta", "2", "--objective", "params,flops"], "add 'accuracy' to the objectives"),
])
def test_bad_fidelity_settings_are_one_line_before_any_study(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = _search(*SH, "--trials", "1", *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert not (tmp_path / "results" / "nas.db").exists()


def test_confirm_retrains_front_points_with_another_seed(study):
    from nas.confirm import confirmations, front_to_confirm, seed_noise

    front = front_to_confirm(study, 2)
    assert front and all(t.state == S.COMPLETE and t.user_attrs.get("cache_hit") is None for t in front)
    r = runner.invoke(app, ["confirm", "--study", "sh", "--top", "2", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    import json

    rows = json.loads(r.output)
    assert [row["trial"] for row in rows] == [t.number for t in front]
    again = optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db")
    recorded = confirmations(again)
    for row, t in zip(rows, front):
        assert row["seed"] == 2 and row["search_seed"] == 1  # the study ran with --seed 1
        assert row["search_accuracy"] == t.values[0] and row["epochs"] == 4
        assert recorded[str(t.number)] == [{k: v for k, v in row.items() if k != "trial"}]
        assert 0.0 <= row["accuracy"] <= 100.0
    assert seed_noise(again) is not None
    # nas pareto reads the front against the measured noise
    r = runner.invoke(app, ["pareto", "--study", "sh", "--json", "--no-report"])
    assert r.exit_code == 0, r.output
    noise = json.loads(r.stdout)["noise"]
    assert noise["seed_noise"] == pytest.approx(seed_noise(again))
    by_trial = {p["trial"]: p for p in noise["points"]}
    for row in rows:
        assert by_trial[row["trial"]]["retrained"] == [row["accuracy"]]
    r = runner.invoke(app, ["pareto", "--study", "sh", "--no-report"])
    assert "seed noise" in r.output
    # a second confirmation adds a new seed, it does not overwrite
    r = runner.invoke(app, ["confirm", "--study", "sh", "--top", "1", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    entries = confirmations(optuna.load_study(study_name="sh", storage="sqlite:///results/nas.db"))[str(front[0].number)]
    assert [e["seed"] for e in entries] == [2, 3]


def test_confirm_refuses_a_zero_cost_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = _search("--objective", "accuracy,params", "--proxy", "grad_norm", "--trials", "2", "--proxy-resolution", "64",
                "--no-enqueue-presets", "--study", "zc")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["confirm", "--study", "zc", "--top", "1"])
    assert r.exit_code == 2 and "searched with --proxy grad_norm" in " ".join(r.output.split())
    r = _search("--proxy", "grad_norm", "--confirm", "1", "--trials", "1")
    assert r.exit_code == 2 and "--confirm 1 trains front points: it needs --proxy train or supernet:DIR" in " ".join(
        r.output.split())


def test_search_confirm_retrains_after_the_search(tmp_path, monkeypatch):
    from nas.confirm import confirmations

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params",
                            "--proxy", "train", "--train-epochs", "1", "--train-subset", "16", "--train-batch-size",
                            "16", "--train-val-subset", "32", "--proxy-resolution", "64", "--no-enqueue-presets",
                            "--study", "c", "--trials", "2", "--confirm", "1"])
    assert r.exit_code == 0, r.output
    assert "re-trained" in r.output and "seed noise" in r.output
    done = confirmations(optuna.load_study(study_name="c", storage="sqlite:///results/nas.db"))
    assert len(done) == 1 and [e["seed"] for e in next(iter(done.values()))] == [1]
