"""`nas search` end to end on a tiny space through the real CLI: storage, resume, constraints,
refused configs, report, dashboard."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.search import SearchSettings, run_search
from tests.spaces import tiny_space, write_space

runner = CliRunner()

TINY_SPACE = tiny_space(refused=True, **{"mlp_ratio": {"choices": [2.0, 4.0]}})


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", TINY_SPACE)
    return tmp_path


def _search(*args: str):
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--quiet", *args])
    assert r.exit_code == 0, r.output
    return r


def _study(name: str, storage: str = "sqlite:///results/nas.db"):
    return optuna.load_study(study_name=name, storage=storage)


def test_cli_search_records_everything_and_resumes(workdir):
    r = _search("--objective", "accuracy,throughput", "--proxy", "grad_norm", "--trials", "8", "--study", "s1",
                "--seed", "3", "--proxy-resolution", "64", "--batch-size", "2")
    assert "Pareto set" in r.output and "report:" in r.output
    study = _study("s1")
    assert study.user_attrs["objectives"] == ["accuracy", "throughput"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    trials = study.trials
    assert len(trials) == 8
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, "no trial completed"
    for t in complete:
        a = t.user_attrs
        assert a["config"]["num_classes"] == 10 and a["arch_id"] and a["summary"]
        assert a["params"] > 0 and a["flops"] > 0
        assert a["profile"]["device"] == "cpu" and a["profile"]["images_per_s"] > 0
        assert a["proxy"]["grad_norm"]["value"] == pytest.approx(t.values[0])
        assert t.values[1] == pytest.approx(a["profile"]["images_per_s"])
        assert set(a["timings"]) >= {"cost_s", "profile_s", "proxy_s"}
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert t.user_attrs["status"] == "refused"
            assert "ct_size=3 must be <= window_size" in t.user_attrs["error"]
    refused = [t for t in trials if t.params.get("ct_size") == 3]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in refused)
    assert Path("results/reports/s1.html").stat().st_size > 10_000
    assert Path("results/reports/s1.png").is_file()
    assert Path("results/logs/s1.log").is_file()
    # resume: the same study adds trials and keeps the old ones
    _search("--objective", "accuracy,throughput", "--proxy", "grad_norm", "--trials", "2", "--study", "s1",
            "--seed", "3", "--proxy-resolution", "64", "--batch-size", "2")
    again = _study("s1").trials
    assert len(again) == 10
    assert [t.values for t in again[:8]] == [t.values for t in trials]


def test_mismatched_resume_is_refused(workdir):
    _search("--objective", "params,flops", "--trials", "2", "--study", "s2", "--seed", "3")  # seed 0: all refused
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "-q", "--objective", "params,latency",
                            "--study", "s2", "--trials", "1"])
    assert r.exit_code == 2 and "exists with objectives ['params', 'flops']" in r.output


def test_constraints_cheap_prune_and_expensive_recorded(workdir):
    _search("--objective", "params,throughput", "--trials", "8", "--study", "s3", "--batch-size", "2",
            "-c", "params<=500000", "-c", "throughput>=1e9")
    study = _study("s3")
    states = optuna.trial.TrialState
    pruned = [t for t in study.trials if t.state == states.PRUNED]
    complete = [t for t in study.trials if t.state == states.COMPLETE]
    assert pruned and complete
    for t in pruned:  # cheap constraint failed: no profiler run was paid for
        assert t.user_attrs["params"] > 500000 and "profile" not in t.user_attrs
        assert "constraint params<=500000 fails" in t.user_attrs["error"]
    for t in complete:
        assert set(t.constraints) == {"params<=500000", "throughput>=1e+09"}
        assert t.constraints["params<=500000"] <= 0
        assert t.constraints["throughput>=1e+09"] > 0  # no CPU reaches 1e9 img/s: infeasible, recorded
    assert study.best_trials == []  # nothing feasible


def test_bad_inputs_are_clear_errors(workdir):
    cases = [
        (["--objective", "accuracy"], "takes 2 or 3 objectives"),
        (["--objective", "accuracy,speed"], "unknown objective(s) ['speed']"),
        (["--constraint", "params<<3"], "must look like NAME<=NUMBER"),
        (["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        (["--data", "cifar10", "--data-dir", str(workdir / "none")], "cifar"),
    ]
    for args, message in cases:
        r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "-q", "--trials", "1", *args])
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (args, r.output)
        assert "Traceback" not in r.output
    bad = workdir / "bad.yaml"
    bad.write_text("knobs:\n  dim: {choices: [8]}\n  widht: {choices: [1]}\n")
    r = runner.invoke(app, ["search", "--space", str(bad), "--device", "cpu", "-q", "--trials", "1"])
    assert r.exit_code == 2 and "knobs.widht: not a FasterViTConfig field (line 3)" in r.output


def test_samplers_all_run(workdir):
    # every point of tiny_space() is buildable: each sampler must complete every trial (a sampler that
    # crashed would show up as failed trials, which this counts)
    write_space(workdir / "ok.yaml", tiny_space())
    for sampler in ("nsga2", "nsga3", "tpe", "gp", "random"):
        res = run_search(SearchSettings(objectives=("params", "flops"), trials=3, sampler=sampler, space="ok.yaml",
                                        study=f"smp-{sampler}", device="cpu", quiet=True))
        assert (res.n_complete, res.n_failed) == (3, 0), (sampler, res.failures)
        assert len(_study(f"smp-{sampler}").trials) == 3


def test_population_sizes_nsga2_for_a_timeout_bound_study():
    from nas.samplers import default_population, make_sampler

    # no trial budget (a --timeout study): the default is 100 // 5 = 20, --population overrides it
    assert make_sampler("nsga2", seed=0, n_trials=100)._population_size == default_population(100) == 20
    assert make_sampler("nsga2", seed=0, n_trials=100, population=6)._population_size == 6
    assert make_sampler("nsga3", seed=0, n_trials=10, population=4)._population_size == 4
    with pytest.raises(ValueError, match="applies to nsga2 and nsga3, not to --sampler random"):
        make_sampler("random", seed=0, n_trials=10, population=4)


def test_pareto_command_and_json(workdir):
    _search("--objective", "params,flops", "--trials", "6", "--study", "s4")
    r = runner.invoke(app, ["pareto", "--study", "s4", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["objectives"] == ["params", "flops"] and summary["pareto"]
    assert summary["hypervolume"] > 0 and len(summary["reference_point"]) == 2
    assert Path(summary["report"]).is_file()
    r = runner.invoke(app, ["pareto", "--study", "nope"])
    assert r.exit_code == 2 and "no study 'nope'" in r.output and "s4" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study(workdir):
    _search("--objective", "params,flops", "--trials", "3", "--study", "dash", "--seed", "3")  # some complete
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nas.cli", "dashboard", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        body = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as resp:
                    body = json.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read().decode())
                time.sleep(0.5)
        assert body is not None, "dashboard did not answer"
        names = [s["study_name"] for s in body["study_summaries"]]
        assert "dash" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_without_database_is_a_clear_error(workdir):
    r = runner.invoke(app, ["dashboard", "--storage", "sqlite:///nothing/here.db"])
    assert r.exit_code == 2 and "no study database" in r.output
