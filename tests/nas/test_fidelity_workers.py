"""`nas search --fidelity sh --workers 2` on one journal: a worker SIGKILLed between two rungs of its trial.

Nothing is lost (every other trial ends COMPLETE or PRUNED with its decisions), no trial is decided twice
at a rung, and once the killed trial is failed its place at the rung is freed: later trials do not rank
against it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import optuna

from nas.record import OWNER_KEY
from nas.storage import get_storage
from tests.nas.test_parallel import _Output, _wait
from tests.spaces import tiny_space, write_space

S = optuna.trial.TrialState
ETA = 2
# 512 training images = 32 steps an epoch: a trial spends ~a second between two rungs, long enough
# for the 0.2 s poll below to catch it there on a fast machine (16 images made the window milliseconds)
SH = ["--objective", "accuracy,params", "--proxy", "train", "--train-epochs", "4", "--train-subset", "512",
      "--train-batch-size", "16", "--train-val-subset", "32", "--fidelity", "sh", "--min-budget", "1", "--eta",
      str(ETA), "--proxy-resolution", "64", "--no-enqueue-presets", "--study", "shw", "--device", "cpu",
      "--data", "fashion-mnist",
      "--space", "space.yaml", "--quiet"]


def _trials(journal):
    if not journal.is_file():
        return []
    try:
        return optuna.load_study(study_name="shw", storage=get_storage(f"journal:{journal}")).get_trials()
    except (KeyError, FileNotFoundError):
        return []


def _between_rungs(journal):
    """(number, pid) of a RUNNING trial that has passed rung 0 and is training towards rung 1."""
    for t in _trials(journal):
        rungs = t.user_attrs.get("rungs") or []
        if (t.state == S.RUNNING and OWNER_KEY in t.system_attrs and len(rungs) == 1
                and rungs[0].get("decision") == "continue"):
            return t.number, t.system_attrs[OWNER_KEY]["pid"]
    return None


def _check_decisions(trials):
    for t in trials:
        entries = t.user_attrs.get("rungs") or []
        assert [e["rung"] for e in entries] == list(range(len(entries)))  # each rung decided once, in order
        for e in entries:
            assert e["keep"] == math.ceil(e["peers"] / ETA) and (e["decision"] == "continue") == (e["position"] < e["keep"])
        if t.state == S.PRUNED and t.user_attrs.get("cache_hit") is None:
            assert entries[-1]["decision"] == "stop" and t.user_attrs["rung"] == entries[-1]["rung"]
        if t.state == S.COMPLETE and t.user_attrs.get("cache_hit") is None:
            assert [e["decision"] for e in entries] == ["continue", "continue"]


def test_killed_worker_mid_rung_frees_its_place(tmp_path):
    write_space(tmp_path / "space.yaml", tiny_space(**{"mlp_ratio": {"choices": [2.0, 3.0, 4.0]}}))
    journal = tmp_path / "results" / "nas.journal"
    env = dict(os.environ, COLUMNS="300")
    parent = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *SH, "--workers", "2", "--trials", "8"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    out = _Output(parent)
    try:
        killed, pid = _wait(lambda: _between_rungs(journal), 240, "a trial between rung 0 and rung 1")
        os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=300)  # the other worker finishes its share
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    time.sleep(1)
    before = {t.number: t for t in _trials(journal)}
    # the parent reports the dead worker and fails its trial (no heartbeat from a dead pid)
    assert "was killed by SIGKILL" in out.text
    assert before[killed].state == S.FAIL and before[killed].user_attrs["error"].startswith("worker died"), out.text
    assert before[killed].user_attrs["rungs"][0]["rung"] == 0  # it had reached rung 0 ...
    others = [t for n, t in before.items() if n != killed]
    assert others and all(t.state in (S.COMPLETE, S.PRUNED) for t in others), out.text
    assert len({t.user_attrs["worker"]["pid"] for t in before.values()}) == 2
    _check_decisions(before.values())

    # resume in one process (a deterministic order): the failed trial no longer ranks at rung 0
    r = subprocess.run([sys.executable, "-m", "nas.cli", "search", *SH, "--storage", f"journal:{journal}",
                        "--trials", "3"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    after = {t.number: t for t in _trials(journal)}
    _check_decisions(after.values())
    new = [t for n, t in after.items() if n not in before and t.user_attrs.get("cache_hit") is None]
    for t in new:
        e = t.user_attrs["rungs"][0]
        ranked = [p for p in after.values() if p.number < t.number and p.state != S.FAIL
                  and p.user_attrs.get("cache_hit") is None and p.user_attrs.get("rungs")]
        assert e["peers"] == len(ranked) + 1  # ... but is not among the peers of the later trials
    assert new
    for n, t in before.items():  # nothing recorded before changed
        assert (after[n].state, after[n].values, after[n].user_attrs) == (t.state, t.values, t.user_attrs)
