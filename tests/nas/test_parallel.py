"""``nas search --workers N``: worker processes sharing one journal study; heartbeats and killed workers.

The end-to-end tests start real ``python -m nas.cli worker`` processes on the CPU (each imports
torch: ~10 s on a 2-core CI box), so they use cheap objectives on tiny configs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.parallel import (HEARTBEAT_KEY, OWNER_KEY, TrialHeartbeat, assign_gpus, fail_stale_trials, parallel_storage,
                          process_identity, settings_for_process, settings_from_dict, split_trials)
from nas.search import SearchSettings
from tests.spaces import tiny_space, write_space
from nas.storage import DEFAULT_JOURNAL, get_storage

runner = CliRunner()

# every point of tiny_space() is valid (ct_size <= window 2): no refused trial
# a CPU latency measurement of these takes several seconds: long enough to kill a worker mid-trial
SLOW_SPACE = tiny_space(name="slow", base=dict(resolution=128, window_size=[2, 2, 4, 2]),
                        **{"dim": {"choices": [16, 24, 32]}, "ct_size": {"choices": [1]}})


def _text(output: str) -> str:
    return " ".join(output.split())


def _study(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=get_storage(f"journal:{path}"))


# ------------------------------------------------------------------------------------------ units
def test_split_trials_is_exact():
    assert split_trials(20, 4) == [5, 5, 5, 5]
    assert split_trials(21, 4) == [6, 5, 5, 5]
    assert split_trials(3, 4) == [1, 1, 1]
    assert sum(split_trials(97, 8)) == 97
    with pytest.raises(ValueError, match="trials=0"):
        split_trials(0, 2)
    with pytest.raises(ValueError, match="workers=0"):
        split_trials(4, 0)


def test_assign_gpus_round_robin_keeps_visible_ids():
    assert assign_gpus(4, visible="2,3") == ["2", "3", "2", "3"]
    assert assign_gpus(3, count=2) == ["0", "1", "0"]
    with pytest.raises(ValueError, match="no GPU"):
        assign_gpus(2, count=0)


def test_parallel_storage_policy():
    assert parallel_storage(None, workers=4) == DEFAULT_JOURNAL
    assert parallel_storage("postgresql://u@db/nas", workers=4) == "postgresql://u@db/nas"
    assert parallel_storage("sqlite:///x.db", workers=1) == "sqlite:///x.db"
    with pytest.raises(ValueError, match="SQLite allows one writer"):
        parallel_storage("sqlite:///results/nas.db", workers=2)
    with pytest.raises(ValueError, match="give a URL"):
        parallel_storage(optuna.storages.InMemoryStorage(), workers=2)


def test_settings_for_process_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "space.yaml", tiny_space())
    s = SearchSettings(objectives=("params", "flops"), space="space.yaml", storage="journal:r/s.journal",
                       results_dir="r", trials=3, constraints=("params<=1e9",))
    d = settings_for_process(s)
    assert json.loads(json.dumps(d)) == d
    assert d["space"] == str(tmp_path / "space.yaml")
    assert d["storage"] == f"journal:{tmp_path / 'r' / 's.journal'}" and d["results_dir"] == str(tmp_path / "r")
    back = settings_from_dict(d)
    assert back.objectives == ("params", "flops") and back.constraints == ("params<=1e9",) and back.trials == 3
    with pytest.raises(ValueError, match="unknown keys"):
        settings_from_dict({**d, "bogus": 1})


def test_heartbeat_beats_while_running_and_stops(tmp_path):
    study = optuna.create_study(storage=get_storage(f"journal:{tmp_path / 'hb.journal'}", create=True),
                                directions=["minimize"])
    trial = study.ask()
    with TrialHeartbeat(study._storage, trial._trial_id, interval=0.2):
        first = study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_KEY]
        time.sleep(0.7)
        later = study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_KEY]
        owner = study._storage.get_trial(trial._trial_id).system_attrs[OWNER_KEY]
    assert later > first
    assert owner["pid"] == os.getpid()
    study.tell(trial, 1.0)
    time.sleep(0.5)  # no beat after the end: the attribute stays as it was
    assert study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_KEY] == pytest.approx(later, abs=0.25)


def test_fail_stale_trials_decides_per_owner(tmp_path):
    study = optuna.create_study(storage=get_storage(f"journal:{tmp_path / 's.journal'}", create=True),
                                directions=["minimize"])
    st = study._storage
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead_owner = process_identity(proc.pid)
    proc.kill()
    proc.wait()
    now = time.time()
    cases = {
        "dead_here": (dead_owner, now),                          # process gone: FAIL at once
        "alive_here": (process_identity(), now - 3600),          # alive on this host: never touched
        "other_host_stale": (dict(host="elsewhere", pid=1), now - 600),
        "other_host_fresh": (dict(host="elsewhere", pid=1), now - 5),
        "no_heartbeat": (None, None),
    }
    ids = {}
    for name, (owner, beat) in cases.items():
        t = study.ask()
        ids[name] = t.number
        if owner is not None:
            st.set_trial_system_attr(t._trial_id, OWNER_KEY, owner)
            st.set_trial_system_attr(t._trial_id, HEARTBEAT_KEY, beat)
    done = study.ask()
    study.tell(done, 2.0)

    failed = fail_stale_trials(study, stale_after=60)
    assert sorted(failed) == sorted([ids["dead_here"], ids["other_host_stale"]])
    trials = {t.number: t for t in study.get_trials()}
    assert trials[ids["dead_here"]].state == optuna.trial.TrialState.FAIL
    assert re.match(r"worker died: no heartbeat for \d+s \(process \d+ on .* is gone\)",
                    trials[ids["dead_here"]].user_attrs["error"])
    assert re.match(r"worker died: no heartbeat for 60\ds \(more than 60s; process 1 on elsewhere\)",
                    trials[ids["other_host_stale"]].user_attrs["error"])
    for name in ("alive_here", "other_host_fresh", "no_heartbeat"):
        assert trials[ids[name]].state == optuna.trial.TrialState.RUNNING, name
    assert trials[done.number].state == optuna.trial.TrialState.COMPLETE and trials[done.number].values == [2.0]
    assert fail_stale_trials(study) == []  # idempotent


def test_cli_refuses_sqlite_with_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["search", "--objective", "params,flops", "--workers", "2", "--device", "cpu",
                                 "--storage", "sqlite:///results/nas.db", "--trials", "2", "-q"])
    assert result.exit_code == 2
    assert "SQLite allows one writer" in _text(result.output)
    assert not (tmp_path / "results" / "nas.db").exists()


# ------------------------------------------------------------------------------------------ end to end
def test_cli_four_workers_twenty_trials_all_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    write_space(tmp_path / "space.yaml", tiny_space())
    result = runner.invoke(app, ["search", "--objective", "params,flops", "--space", "space.yaml", "--device", "cpu",
                                 "--workers", "4", "--trials", "20", "--study", "w4"])
    out = _text(result.output)
    assert result.exit_code == 0, result.output
    assert "4 local worker process(es)" in out and "JournalStorage file" in out
    assert "budget 5+5+5+5 = 20" in out and "20 complete, 0 failed, 0 pruned" in out

    study = _study(tmp_path / "results" / "nas.journal", "w4")
    trials = study.get_trials()
    assert len(trials) == 20
    assert sorted(t.number for t in trials) == list(range(20))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.user_attrs["config"]["resolution"] == 64 and t.values == [t.user_attrs["params"],
                                                                                  t.user_attrs["flops"]]
    per_worker = [sum(t.user_attrs["worker"]["index"] == i for t in trials) for i in range(4)]
    assert per_worker == [5, 5, 5, 5]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 4
    assert study.user_attrs["objectives"] == ["params", "flops"]
    for i in range(4):
        assert (tmp_path / "results" / "logs" / f"w4.worker{i}.log").read_text().count("NAS-TRIAL ") == 5
    assert (tmp_path / "results" / "reports" / "w4.html").is_file()


class _Output:
    """Collects a process's output in a thread (so the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.text += line


def _wait(cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _running_owned(study_path: Path, name: str, exclude: set = frozenset()) -> list[tuple[int, int]]:
    """(trial number, worker pid) of the RUNNING trials that have a heartbeat owner."""
    if not study_path.exists():
        return []
    try:
        study = _study(study_path, name)
    except KeyError:
        return []
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    return [(t.number, t.system_attrs[OWNER_KEY]["pid"]) for t in running
            if OWNER_KEY in t.system_attrs and t.system_attrs[OWNER_KEY]["pid"] not in exclude]


def _snapshot(study: optuna.Study) -> dict:
    return {t.number: (t.state, t.values, t.params, t.user_attrs) for t in study.get_trials()}


def test_killed_worker_is_reported_failed_and_resumed_without_loss(tmp_path):
    write_space(tmp_path / "space.yaml", SLOW_SPACE)
    journal = tmp_path / "results" / "nas.journal"
    cmd = [sys.executable, "-m", "nas.cli", "search", "--objective", "params,latency", "--space", "space.yaml",
           "--device", "cpu", "--batch-size", "2", "--workers", "2", "--study", "k"]
    env = dict(os.environ, COLUMNS="300")
    parent = subprocess.Popen(cmd + ["--trials", "6"], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    output = _Output(parent)
    try:
        # 1. both workers busy (past their start-up stale check); SIGKILL one in the middle of its trial:
        #    the parent reports it with its log, the other worker goes on
        busy = _wait(lambda: (lambda r: r if len({pid for _, pid in r}) == 2 else None)(_running_owned(journal, "k")),
                     150, "both workers running a trial")
        killed_trial, killed_pid = busy[0]
        os.kill(killed_pid, signal.SIGKILL)
        msg = _wait(lambda: re.search(r"worker (\d) was killed by SIGKILL after \d trial\(s\).*?log: (\S+)",
                                      output.text), 60, "the parent's report of the killed worker")
        assert Path(tmp_path / msg.group(2)).is_file()
        # 2. then the parent is SIGKILLed while the surviving worker runs a trial: the worker dies with it
        #    (PR_SET_PDEATHSIG: SIGTERM), recording its running trial FAIL with the reason
        survivor = _wait(lambda: _running_owned(journal, "k", exclude={killed_pid}), 120,
                         "a trial of the surviving worker")
        survivor_trial, survivor_pid = survivor[0]
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        _wait(lambda: not os.path.exists(f"/proc/{survivor_pid}") or
              open(f"/proc/{survivor_pid}/stat").read().split(") ")[1][0] in "ZX", 60,
              "the surviving worker to die with its parent")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    time.sleep(1)  # let the killed processes be reaped
    before = _snapshot(_study(journal, "k"))
    running = [n for n, (state, *_rest) in before.items() if state == optuna.trial.TrialState.RUNNING]
    assert running == [killed_trial], output.text  # only the SIGKILLed worker could not record its trial
    interrupted = before[survivor_trial]
    assert interrupted[0] == optuna.trial.TrialState.FAIL and interrupted[3]["status"] == "interrupted"
    assert interrupted[3]["error"] == "interrupted by SIGTERM while it ran"

    # 3. resume: the stale trials become FAIL with the heartbeat reason, 2 new trials complete, nothing lost
    resumed = subprocess.run(cmd + ["--trials", "2"], cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"marked trials {sorted(running)} FAIL" in _text(resumed.stderr)
    after = _snapshot(_study(journal, "k"))
    assert len(after) == len(before) + 2
    for n, (state, values, params, attrs) in before.items():
        if n in running:
            assert after[n][0] == optuna.trial.TrialState.FAIL
            assert after[n][3]["error"].startswith("worker died: no heartbeat for")
            assert after[n][2] == params
        else:  # finished before the kill: unchanged
            assert after[n] == (state, values, params, attrs)
    new = [after[n] for n in after if n not in before]
    assert [s for s, *_ in new] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(attrs["profile"]["latency_b1_ms"] > 0 for *_, attrs in new)
