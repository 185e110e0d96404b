"""Fault injection: signals at every phase of a trial, torn/garbage/missing storage, full disk,
read-only paths, concurrent writers, killed parents, bad inputs, and a real PostgreSQL server.

Every case checks the same promise: one clear line (no traceback), a non-zero exit where the run did
not do what was asked, and no trial lost: every trial ends COMPLETE, PRUNED or FAIL with a reason
(the README's "Reliability" table lists the cases). Subprocess cases use tiny configs on the CPU.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.heartbeat import HEARTBEAT_KEY, OWNER_KEY, UNOWNED_AFTER_S, fail_stale_trials
from nas.search import SearchSettings, run_search
from nas.storage import StorageError, get_storage
from tests.nas.test_parallel import _wait
from tests.spaces import tiny_space, write_space

runner = CliRunner()
S = optuna.trial.TrialState
# a CPU latency measurement of these takes seconds: long enough to signal a process mid-trial
SLOW_SPACE = tiny_space(name="slow", base=dict(resolution=128, window_size=[2, 2, 4, 2]),
                        **{"dim": {"choices": [16, 24, 32]}, "ct_size": {"choices": [1]}})
SLOW_SEARCH = ["search", "--objective", "params,latency", "--space", "space.yaml", "--device", "cpu",
               "--batch-size", "2", "--study", "r"]
ALL_REFUSED = tiny_space(name="refused", **{"ct_size": {"choices": [3, 4]}})  # > window 2: never builds


def _text(output: str) -> str:
    return " ".join(output.split())


def _one_line_error(result, *needles: str) -> str:
    text = _text(result.output)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and text.startswith("error:"), result.output
    for n in needles:
        assert n in text, (n, result.output)
    return text


def _journal_study(path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=get_storage(f"journal:{path}"))


def _no_trial_lost(study: optuna.Study) -> None:
    for t in study.get_trials():
        assert t.state in (S.COMPLETE, S.PRUNED, S.FAIL), (t.number, t.state)
        if t.state == S.FAIL:
            assert t.user_attrs.get("error"), (t.number, t.user_attrs)


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _owned_running_trials(journal: Path, name: str) -> list:
    """The RUNNING trials that have a heartbeat owner ([] while the journal or study is not there yet)."""
    if not journal.exists():
        return []
    try:
        study = _journal_study(journal, name)
    except (KeyError, StorageError):
        return []
    return [t for t in study.get_trials(states=(S.RUNNING,)) if OWNER_KEY in t.system_attrs]


def _running_owned(journal: Path, name: str) -> list[tuple[int, int]]:
    return [(t.number, t.system_attrs[OWNER_KEY]["pid"]) for t in _owned_running_trials(journal, name)]


def _trial_inside_its_objective(journal: Path, name: str) -> int:
    """A RUNNING trial that was beating on two polls 0.3 s apart: past its heartbeat's start, so a
    signal now lands while the trial runs, not in the window between its owner stamp and its try."""
    def beating() -> set[int]:
        return {t.number for t in _owned_running_trials(journal, name) if HEARTBEAT_KEY in t.system_attrs}

    def settled() -> list[int]:
        first = beating()
        if not first:
            return []
        time.sleep(0.3)
        return sorted(first & beating())[:1]

    return _wait(settled, 120, "a running trial")[0]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in "ZX"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "space.yaml", SLOW_SPACE)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    write_space(tmp_path / "refused.yaml", ALL_REFUSED)
    return tmp_path


# ------------------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_trial_fails_it_with_the_reason_and_says_how_to_resume(workdir, sig):
    journal = workdir / "j.journal"
    proc = _cli([*SLOW_SEARCH, "--trials", "4", "--storage", f"journal:{journal}"], workdir)
    try:
        number = _trial_inside_its_objective(journal, "r")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    text = _text(err)
    assert f"interrupted by {sig.name}: study 'r' keeps" in text and "Resume with the same command" in text, err
    assert "Traceback" not in err
    study = _journal_study(journal, "r")
    t = study.trials[number]
    assert t.state == S.FAIL and t.user_attrs["status"] == "interrupted"
    assert t.user_attrs["error"] == f"interrupted by {sig.name} while it ran"
    _no_trial_lost(study)


def test_interrupt_before_the_first_heartbeat_and_during_tell(workdir, monkeypatch):
    """The two narrow windows of a trial: between its creation and its first beat, and inside tell."""
    storage = f"journal:{workdir / 'w.journal'}"
    settings = SearchSettings(objectives=("params", "flops"), trials=3, space="tiny.yaml", device="cpu", quiet=True,
                              storage=storage, study="win")
    real_ask, real_tell = optuna.Study.ask, optuna.Study.tell

    def ask_then_interrupt(self, *a, **k):
        real_ask(self, *a, **k)  # the trial now exists, RUNNING, without an owner
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.Study, "ask", ask_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted by SIGINT: study 'win' keeps 1 trial"):
        run_search(settings)
    monkeypatch.setattr(optuna.Study, "ask", real_ask)

    def interrupt_in_tell(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.Study, "tell", interrupt_in_tell)
    with pytest.raises(KeyboardInterrupt):
        run_search(settings)
    monkeypatch.setattr(optuna.Study, "tell", real_tell)
    study = _journal_study(workdir / "w.journal", "win")
    first, second = study.trials
    assert first.state == S.FAIL and first.user_attrs["error"] == "interrupted by SIGINT before it started"
    assert second.state == S.FAIL and second.user_attrs["status"] == "interrupted"
    assert second.user_attrs["error"] == "interrupted by SIGINT while its result was being recorded"
    assert second.user_attrs["config"] and second.user_attrs["params"] > 0  # what was measured is kept
    _no_trial_lost(study)


def test_sigkill_before_the_first_heartbeat_is_failed_later(workdir):
    journal = workdir / "k.journal"
    create = (f"import optuna, os, signal; from nas.storage import get_storage; "
              f"st = optuna.create_study(study_name='k', storage=get_storage('journal:{journal}', create=True)); "
              f"st.ask(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", create], cwd=workdir, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    study = _journal_study(journal, "k")
    assert fail_stale_trials(study) == []  # just created: its process might be about to beat
    assert study.trials[0].state == S.RUNNING
    assert fail_stale_trials(study, now=time.time() + UNOWNED_AFTER_S + 1) == [0]
    t = _journal_study(journal, "k").trials[0]
    assert t.state == S.FAIL and t.user_attrs["error"].startswith("worker died before its first heartbeat")


def test_ctrl_c_on_the_parent_stops_every_worker_and_fails_their_trials(workdir):
    journal = workdir / "results" / "nas.journal"
    proc = _cli([*SLOW_SEARCH, "--trials", "6", "--workers", "2"], workdir)
    try:
        busy = _wait(lambda: (lambda r: r if len({p for _, p in r}) == 2 else None)(_running_owned(journal, "r")),
                     180, "both workers running a trial")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted by SIGINT" in _text(err) and "Traceback" not in err
    for _, pid in busy:
        assert _wait(lambda: not _alive(pid), 30, f"worker {pid} to exit")
    study = _journal_study(journal, "r")
    for number, _ in busy:
        t = study.trials[number]
        assert t.state == S.FAIL and t.user_attrs["error"] == "interrupted by SIGTERM while it ran", t.user_attrs
    _no_trial_lost(study)


# ------------------------------------------------------------------------------------------ storage
def _three_trials(path: Path) -> optuna.Study:
    study = optuna.create_study(study_name="t", storage=get_storage(f"journal:{path}", create=True))
    for x in (1.0, 2.0, 3.0):
        trial = study.ask()
        trial.suggest_float("x", 0, 10)
        study.tell(trial, x)
    return study


def test_torn_journal_tail_is_moved_aside_and_every_complete_record_kept(tmp_path, capfd):
    path = tmp_path / "j.journal"
    _three_trials(path)
    whole = path.read_bytes()
    os.truncate(path, len(whole) - 40)  # the last record (the third tell) is cut short
    study = _journal_study(path, "t")  # opening repairs: complete records kept, torn bytes aside
    err = capfd.readouterr().err
    assert "its last record was cut short" in err and "moved to" in err
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("j.journal.torn-")]
    assert len(aside) == 1 and whole.startswith(path.read_bytes() + aside[0].read_bytes())
    assert path.read_bytes().endswith(b"\n")
    states = [t.state for t in study.trials]
    assert states[:2] == [S.COMPLETE, S.COMPLETE] and len(states) == 3  # the torn tell: trial 2 not finished
    trial = study.ask()  # appending now writes onto a clean line: every later read still works
    study.tell(trial, 4.0)
    again = _journal_study(path, "t")
    assert [t.values for t in again.trials if t.state == S.COMPLETE] == [[1.0], [2.0], [4.0]]


def test_torn_tail_written_by_another_process_is_repaired_before_appending(tmp_path):
    path = tmp_path / "j.journal"
    study = _three_trials(path)  # this process keeps its storage open
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "us')  # a writer died mid-record
    trial = study.ask()
    study.tell(trial, 5.0)
    assert _journal_study(path, "t").trials[-1].values == [5.0]


def test_bad_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "j.journal"
    _three_trials(path)
    lines = path.read_bytes().split(b"\n")
    lines[2] = b"{not json"
    path.write_bytes(b"\n".join(lines))
    where = re.escape(str(path))
    with pytest.raises(StorageError, match=rf"journal {where}: line 3 \(byte \d+\) is not a valid record"):
        get_storage(f"journal:{path}")


def test_bad_storage_urls_and_files_are_one_line_errors(workdir):
    (workdir / "garbage.db").write_bytes(os.urandom(4096))
    base = ["search", "--objective", "params,flops", "--space", "tiny.yaml", "--device", "cpu", "-q", "--trials", "1"]
    _one_line_error(runner.invoke(app, [*base, "--storage", "sqlite:///garbage.db"]), "not an SQLite database")
    _one_line_error(runner.invoke(app, [*base, "--storage", "nonsense://x"]), "unknown database kind 'nonsense'")
    _one_line_error(runner.invoke(app, [*base, "--storage", "sqlite:/x.db"]), "three slashes")
    _one_line_error(runner.invoke(app, [*base, "--storage", "nothing"]), "is not a storage URL")


def test_reading_a_mistyped_storage_creates_nothing(workdir):
    before = sorted(p.name for p in workdir.iterdir())
    _one_line_error(runner.invoke(app, ["pareto", "--study", "s", "--storage", "sqlite:///typo.db"]),
                    "no study database at typo.db")
    _one_line_error(runner.invoke(app, ["pareto", "--study", "s", "--storage", "journal:typo.journal"]),
                    "no journal at typo.journal")
    _one_line_error(runner.invoke(app, ["pareto", "--study", "s"]), "no study database at results/nas.db")
    assert sorted(p.name for p in workdir.iterdir()) == before


# ------------------------------------------------------------------------------------------ read-only, full disk
@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` at ``path`` (root); yields False when mounting is not allowed here."""
    path.mkdir(parents=True, exist_ok=True)
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                              capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _make_read_only(path: Path, mounted: bool) -> None:
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    else:  # no mount here: permissions (the test runs its CLI as a user they apply to)
        for p in [path, *path.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)


def _as_unprivileged(mounted: bool):
    """preexec_fn: run as nobody when permissions, not a read-only mount, make the path read-only."""
    if mounted or os.geteuid() != 0:
        return None

    def drop() -> None:
        os.setgid(65534)
        os.setuid(65534)

    return drop


def _run(args: list[str], cwd: Path, preexec=None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=preexec)


def _assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    text = _text(proc.stdout + proc.stderr)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in text and "error:" in text, text
    for n in needles:
        assert n in text, (n, text)


def test_read_only_database_journal_results_and_out(workdir):
    ro = workdir / "ro"
    base = ["search", "--objective", "params,flops", "--space", str(workdir / "tiny.yaml"), "--device", "cpu", "-q",
            "--trials", "1", "--study", "s"]
    with _tmpfs(ro, "8m") as mounted:
        assert runner.invoke(app, [*base, "--storage", f"sqlite:///{ro}/nas.db", "--results-dir",
                                   str(ro / "results")]).exit_code == 0
        assert runner.invoke(app, [*base, "--storage", f"journal:{ro}/nas.journal"]).exit_code == 0
        if not mounted:
            os.chmod(workdir, 0o755)
        _make_read_only(ro, mounted)
        pre = _as_unprivileged(mounted)
        _assert_one_line(_run([*base, "--storage", f"sqlite:///{ro}/nas.db"], ro.parent, pre), "read-only")
        _assert_one_line(_run([*base, "--storage", f"journal:{ro}/nas.journal"], ro.parent, pre),
                         f"{ro}/nas.journal", "not writable")
        _assert_one_line(_run([*base, "--storage", f"journal:{ro}/nas.journal", "--results-dir",
                               str(ro / "fresh")], ro.parent, pre), "--results-dir", "writable")
        _assert_one_line(_run(["export", "--config", "faster_vit_0_224", "--out", str(ro / "export")], ro.parent, pre),
                         "--out folder", "writable")
        shown = _run(["pareto", "--study", "s", "--storage", f"journal:{ro}/nas.journal", "--json"], ro.parent, pre)
        assert '"n_complete": 1' in shown.stdout, shown.stdout + shown.stderr  # reading still works


def _fsize_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, like a full disk's ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_is_one_line_and_leaves_no_torn_record(workdir):
    disk = workdir / "disk"
    with _tmpfs(disk, "160k") as mounted:
        journal = disk / "nas.journal"
        proc = _run(["search", "--objective", "params,flops", "--space", "tiny.yaml", "--device", "cpu", "-q",
                     "--trials", "400", "--study", "full", "--storage", f"journal:{journal}"], workdir,
                    None if mounted else _fsize_limit(160 * 1024))
        _assert_one_line(proc, "disk is full", str(journal))
        data = journal.read_bytes()
        assert data.endswith(b"\n")  # the failed write was cut back: no torn record
        for line in data.splitlines():
            json.loads(line)
        study = _journal_study(journal, "full")
        done = [t for t in study.trials if t.state == S.COMPLETE]
        assert len(done) >= 5 and all(t.user_attrs["params"] == t.values[0] for t in done)
        journal.unlink()  # free the disk; now the reports (--results-dir) do not fit on it
        proc = _run(["search", "--objective", "params,flops", "--space", "tiny.yaml", "--device", "cpu", "-q",
                     "--trials", "2", "--study", "rep", "--results-dir", str(disk / "res")], workdir,
                    None if mounted else _fsize_limit(160 * 1024))
        _assert_one_line(proc, f"report {disk}/res/reports/rep.html (--results-dir)", "disk is full",
                         "nas pareto --study rep rewrites the report")
        trials = optuna.load_study(study_name="rep", storage="sqlite:///results/nas.db").trials
        assert [t.state for t in trials] == [S.COMPLETE, S.COMPLETE]  # what was measured is kept


# ------------------------------------------------------------------------------------------ concurrency
_WRITER = """
import sys, optuna
from nas.storage import get_storage
st = optuna.load_study(study_name="c", storage=get_storage(sys.argv[1]))
for i in range(int(sys.argv[2])):
    t = st.ask()
    st.tell(t, t.suggest_float("x", 0, 1))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    url = f"journal:{tmp_path / 'c.journal'}"
    optuna.create_study(study_name="c", storage=get_storage(url, create=True))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, "25"], env=env) for _ in range(3)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    study = optuna.load_study(study_name="c", storage=get_storage(url))
    assert len(study.trials) == 75 and all(t.state == S.COMPLETE for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(75))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, message", [
    (["--proxy", "nope", "--objective", "accuracy,params"], "unknown proxy 'nope'"),
    (["--sampler", "nope"], "unknown sampler 'nope'"),
    (["--sampler", "tpe", "--population", "8"], "--population 8 applies to nsga2 and nsga3, not to --sampler tpe"),
    (["--population", "1"], "--population=1 must be an integer >= 2"),
    (["--objective", "params,nope"], "unknown objective(s) ['nope']"),
    (["--data", "nope"], "unknown dataset 'nope'"),
    (["--backend", "nope"], "--backend 'nope' must be one of"),
    (["--batch-size", "0"], "--batch-size=0 must be an integer >= 1"),
    (["--proxy-resolution", "0"], "--proxy-resolution=0 must be an integer in [16, 4096]"),
    (["--workers", "0"], "--workers=0 must be an integer >= 1"),
    (["--workers", "-1"], "--workers=-1 must be an integer >= 1"),
    (["--study", ""], "--study '' must be a non-empty name"),
    (["--trials", "0"], "--trials=0 must be an integer >= 1"),
])
def test_bad_input_is_refused_before_any_study_exists(workdir, args, message):
    r = runner.invoke(app, ["search", "--objective", "params,flops", "--space", "tiny.yaml", "--device", "cpu", "-q",
                            "--trials", "1", *args])
    _one_line_error(r, message)
    assert not (workdir / "results" / "nas.db").exists()


def test_a_study_stopped_by_failures_exits_non_zero_and_shows_why(workdir):
    r = runner.invoke(app, ["search", "--objective", "params,flops", "--space", "refused.yaml", "--device", "cpu",
                            "--trials", "30", "--study", "bad"])
    text = _text(r.output)
    assert r.exit_code == 1, r.output
    assert "stopped after 20 failed trials in a row" in text and "20 trial(s): 0 complete, 20 failed" in text
    assert "no trial completed; the last failures:" in text and "ct_size=" in text
    _no_trial_lost(optuna.load_study(study_name="bad", storage="sqlite:///results/nas.db"))


def test_space_show_counts_only_buildable_points(workdir):
    r = runner.invoke(app, ["space", "show", "refused.yaml"])
    assert r.exit_code == 1 and "0 buildable architectures" in _text(r.output), r.output
    r = runner.invoke(app, ["space", "show", "tiny.yaml"])
    assert r.exit_code == 0 and "size: 12 architectures (every knob assignment builds)" in _text(r.output)
    mixed = write_space(workdir / "mixed.yaml", tiny_space(refused=True))
    r = runner.invoke(app, ["space", "show", str(mixed), "--json"])
    assert json.loads(r.stdout)["buildable"] == dict(checked=18, buildable=12, exact=True,
                                                     first_refusal=json.loads(r.stdout)["buildable"]["first_refusal"])


def test_a_killed_exports_temp_folder_is_cleaned_by_the_rerun(tmp_path, tiny_config_json):
    from nas.export import export_model
    from nas.export.folder import OWNER_FILE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / ".m.tmp-killed"
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"\0" * 1000)
    (left / OWNER_FILE).write_text(json.dumps(dict(__import__("nas.heartbeat").heartbeat.process_identity(),
                                                   pid=dead.pid, start=0)))
    res = export_model(tmp_path / "m", config=tiny_config_json, formats=("safetensors",))
    assert res.out.is_dir() and not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert found, "PostgreSQL is not installed: apt-get install postgresql (./setup.sh test does)"
    return found[-1].parent


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server on a free port (run as the postgres user when we are root)."""
    import socket

    import tempfile

    bin_ = _pg_bin()
    top = Path(tempfile.mkdtemp(prefix="nas-pg-"))  # outside pytest's private (0700) tmp folders
    top.chmod(0o755)
    data = top / "data"
    data.mkdir()
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as the postgres user
        shutil.chown(data, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_pg, str(bin_ / "initdb"), "-D", str(data), "-A", "trust", "-U", "nas"], check=True,
                   capture_output=True)
    subprocess.run([*as_pg, str(bin_ / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                    f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300", "start"],
                   check=True, capture_output=True)  # 100 (the default) ran out on a loaded 2-core box
    try:
        subprocess.run([str(bin_ / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "nas", "nas"], check=True,
                       capture_output=True)
        yield f"postgresql+psycopg2://nas@127.0.0.1:{port}/nas"  # psycopg2-binary: the test extra
    finally:
        subprocess.run([*as_pg, str(bin_ / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def _running_rdb(url: str, name: str) -> list[tuple[int, int]]:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return []
    return [(t.number, t.system_attrs[OWNER_KEY]["pid"]) for t in study.get_trials(states=(S.RUNNING,))
            if OWNER_KEY in t.system_attrs]


def test_postgresql_four_workers_one_killed_all_trials_accounted_for(workdir, postgres):
    proc = _cli([*SLOW_SEARCH, "--trials", "8", "--workers", "4", "--storage", postgres], workdir)
    try:
        _, pid = _wait(lambda: _running_rdb(postgres, "r"), 240, "a running trial")[0]
        os.kill(pid, signal.SIGKILL)  # the worker may have moved on to its next trial meanwhile
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = _text(out + err)
    assert proc.returncode == 1, out + err  # a worker died: the run did not do all it was asked
    assert re.search(r"worker \d was killed by SIGKILL", text), text
    study = optuna.load_study(study_name="r", storage=postgres)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    owned = [t for t in trials if t.system_attrs.get(OWNER_KEY, {}).get("pid") == pid]
    killed = max(owned, key=lambda t: t.number)  # the trial the worker was running when it died
    assert killed.state == S.FAIL and killed.user_attrs["error"].startswith("worker died"), killed.user_attrs
    assert all(t.state == S.COMPLETE for t in owned if t is not killed)
    _no_trial_lost(study)
    done = sum(t.state == S.COMPLETE for t in trials)
    assert f"{len(trials)} trial(s): {done} complete, {len(trials) - done} failed" in text, text
