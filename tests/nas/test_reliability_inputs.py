"""Second round of fault injection (issue 33): options that cannot apply, repeated keys, files of the wrong kind,
a study in which nothing completed, `nas pareto`/`nas dashboard` on bad or read-only storage, a locked SQLite
file, reports on a full disk, and what `./setup.sh test` installs. Each case: one line saying what is wrong
and what to do (no traceback, nothing destroyed), or the run going on and saying so.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from nas import record as R
from nas.cli import app
from tests.nas.test_main_command import _readme_commands
from tests.nas.test_reliability import (
    _as_unprivileged,
    _assert_one_line,
    _cli,
    _fsize_limit,
    _make_read_only,
    _one_line_error,
    _run,
    _text,
    _tmpfs,
)
from tests.spaces import tiny_space, write_space

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
SEARCH = ["search", "--objective", "params,flops", "--space", "tiny.yaml", "--device", "cpu", "-q", "--trials", "1"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working folder holding the tiny space (tiny.yaml)."""
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    return tmp_path


def _params_study(name: str = "p", trials: int = 2, *extra: str) -> None:
    r = runner.invoke(app, [*SEARCH[:-1], str(trials), "--study", name, *extra])
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------------------ options that cannot apply
@pytest.mark.parametrize("args, message", [
    (["--eta", "4"], "--eta 4 only applies with --fidelity sh (this run: --fidelity full); drop it"),
    (["--min-budget", "1"], "--min-budget 1.0 only applies with --fidelity sh"),
    (["--gpus-per-trial", "0.5"], "--gpus-per-trial 0.5 only applies with --backend ray (this run: --backend optuna)"),
    (["--ray-address", "auto"], "--ray-address auto only applies with --backend ray"),
    (["--proxy", "grad_norm"], "--proxy grad_norm only applies when accuracy is an objective or constraint"),
    (["--proxy-resolution", "64"], "--proxy-resolution 64 only applies when accuracy is an objective"),
    (["--objective", "accuracy,params", "--proxy", "grad_norm", "--train-epochs", "3"],
     "--train-epochs 3.0 only applies to an accuracy estimator that trains (--proxy train) (this run: --proxy "
     "grad_norm)"),
    (["--objective", "accuracy,params", "--proxy", "train", "--proxy-batch-size", "8"],
     "--proxy-batch-size 8 only applies to a zero-cost proxy"),
    (["--batch-size", "4"], "--batch-size 4 only applies when a measured throughput, latency or memory is an "
                            "objective"),
    (["--dtype", "bf16"], "--dtype bf16 only applies when a measured throughput"),
    (["--throughput", "predicted:h100"], "--throughput predicted:h100 only applies when throughput is an objective"),
    (["--pad-channels", "8"], "--pad-channels 8 only applies when a measured throughput, latency or memory is an "
                              "objective or constraint (this run: --objective params,flops); drop it"),
    # the throughput predictors were fitted on unpadded measurements
    (["--objective", "params,throughput", "--throughput", "predicted:h100", "--pad-channels", "8"],
     "--pad-channels 8 with a predicted throughput/latency (predictor 'h100'): throughput predictors are fitted on "
     "unpadded measurements"),
    (["--gelu-epilogue"], "--gelu-epilogue only applies when a measured throughput, latency or memory is an "
                          "objective or constraint (this run: --objective params,flops); drop it"),
    (["--objective", "params,throughput", "--throughput", "predicted:h100", "--gelu-epilogue"],
     "--gelu-epilogue with a predicted throughput/latency (predictor 'h100'): throughput predictors are fitted on "
     "unfused measurements"),
    # values are checked whether or not they apply
    (["--eta", "1", "--min-budget", "-5"], "--eta=1 must be an integer >= 2"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial=-1.0 must be >= 0"),
    (["--pad-channels", "0"], "--pad-channels=0 must be an integer >= 1"),
])
def test_an_option_that_cannot_apply_is_refused_not_ignored(workdir, args, message):
    _one_line_error(runner.invoke(app, [*SEARCH, *args]), message)
    assert not (workdir / "results" / "nas.db").exists()


def test_pareto_refuses_report_options_with_no_report(workdir):
    _params_study()
    for args, message in ((["--report", "x.html"], "--report x.html does nothing with --no-report"),
                          (["--plotlyjs", "directory"], "--plotlyjs directory does nothing with --no-report")):
        _one_line_error(runner.invoke(app, ["pareto", "--study", "p", "--no-report", *args]), message)


# ------------------------------------------------------------------------------------------ nas pareto: check first
@pytest.mark.parametrize("args, message", [
    (["--reference=nan,nan"], "--reference 'nan,nan': params=nan, flops=nan are not finite"),
    (["--reference=inf,1"], "params=inf is not finite"),
    (["--plotlyjs", "bogus"], "--plotlyjs 'bogus' must be one of embed, directory"),
    (["--report", "reports"], "--report reports is a folder"),
    (["--report", "tiny.yaml/r.html"], "tiny.yaml is a file, not a folder"),
])
def test_pareto_checks_every_argument_before_measuring(workdir, args, message):
    _params_study()
    (workdir / "reports").mkdir()
    _one_line_error(runner.invoke(app, ["pareto", "--study", "p", *args]), message)
    assert R.STUDY_REFERENCES not in optuna.load_study(study_name="p", storage="sqlite:///results/nas.db").user_attrs


def test_pareto_shows_progress_and_an_eta_while_measuring_and_how_to_skip_it(workdir):
    _params_study()
    r = runner.invoke(app, ["pareto", "--study", "p", "--json", "--no-report"])
    assert r.exit_code == 0, r.output
    text = _text(r.stderr)
    assert "measuring 4 FasterViT preset(s) the study's way for the report" in text
    assert "--no-measure-references skips this" in text
    assert "faster_vit_0_224 (1/4)" in text and re.search(r"faster_vit_3_224 \(4/4, ETA \d+s\)", text), text
    r = runner.invoke(app, ["pareto", "--study", "p", "--json", "--no-report"])
    assert "measuring" not in r.stderr  # cached in the study


def test_unwritable_report_is_refused_before_measuring(workdir):
    ro = workdir / "ro"
    _params_study()
    with _tmpfs(ro, "1m") as mounted:
        if not mounted:
            os.chmod(workdir, 0o755)
            os.chmod(workdir / "results", 0o777)
            for p in (workdir / "results").rglob("*"):
                p.chmod(0o777)
        _make_read_only(ro, mounted)
        proc = _run(["pareto", "--study", "p", "--report", str(ro / "r.html")], workdir, _as_unprivileged(mounted))
        _assert_one_line(proc, f"--report {ro}/r.html: the folder {ro} is not writable")
        assert "measuring" not in proc.stderr


# ------------------------------------------------------------------------------------------ repeated keys, wrong files
def test_a_key_given_twice_is_refused_with_its_lines(workdir):
    (workdir / "dup.json").write_text('{\n  "dim": 64,\n  "in_dim": 32,\n  "dim": 32\n}\n')
    _one_line_error(runner.invoke(app, ["describe", "dup.json"]),
                    "dup.json: key 'dim' is given twice (lines 2 and 4); JSON keeps only the last one")
    _one_line_error(runner.invoke(app, ["export", "--config", "dup.json", "--out", "m"]), "key 'dim' is given twice")
    (workdir / "dup.yaml").write_text("name: d\nknobs:\n  dim: {choices: [8, 16]}\n  depths[2]: {choices: [1]}\n"
                                      "  dim: {choices: [8]}\n")
    _one_line_error(runner.invoke(app, ["space", "show", "dup.yaml"]),
                    "dup.yaml: knobs.dim is given twice (lines 3 and 5); YAML keeps only the last one")
    _one_line_error(runner.invoke(app, [*SEARCH, "--space", "dup.yaml"]), "knobs.dim is given twice (lines 3 and 5)")


def test_a_folder_or_binary_file_is_named_with_what_was_expected(workdir):
    (workdir / "folder").mkdir()
    (workdir / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (workdir / "blob.json").write_bytes((workdir / "blob.bin").read_bytes())
    binary = "is not a text file (byte 0 is binary data, not UTF-8)"
    for args, message in [
        (["describe", "folder"], "folder is a folder, not a config JSON file"),
        (["describe", "blob.bin"], f"blob.bin {binary}: expected a config JSON file"),
        (["space", "show", "folder"], "folder is a folder, not a search-space YAML file"),
        (["space", "show", "blob.bin"], f"blob.bin {binary}: expected a search-space YAML file"),
        ([*SEARCH, "--objective", "params,throughput", "--throughput", "predicted:blob.json"],
         f"cannot read predictor file blob.json: blob.json {binary}: expected a predictor JSON file"),
        ([*SEARCH, "--storage", "journal:"], "storage 'journal:' names no file: write journal:PATH"),
        ([*SEARCH, "--storage", "journal:folder"], "folder is a folder, not a file; name a file inside it, e.g. "
                                                   "journal:folder/nas.journal"),
        ([*SEARCH, "--storage", "sqlite:///folder"], "e.g. sqlite:///folder/nas.db"),
        (["pareto", "--storage", "journal:folder"], "folder is a folder, not a file"),
        (["predictor", "fit", "folder", "--name", "x"], "folder is a folder, not a dataset of profiler records"),
    ]:
        _one_line_error(runner.invoke(app, args), message)


def test_a_file_of_the_other_storage_kind_is_named_and_left_alone(workdir):
    _params_study("k", 2)
    db = Path("results/nas.db")  # relative: the one-line message is not wrapped
    before = db.read_bytes()
    for url, message in [(f"journal:{db}", f"journal {db}: the file is an SQLite database, not a journal; pass "
                                           f"--storage sqlite:///{db}"),
                         ("journal:tiny.yaml", "journal tiny.yaml: the file is not an Optuna journal")]:
        for cmd in (["pareto", "--study", "k"], [*SEARCH, "--study", "k"]):
            text = _one_line_error(runner.invoke(app, [*cmd, "--storage", url]), message)
            assert " mv " not in text and "head -n 0" not in text  # nothing that would empty the file
    assert db.read_bytes() == before and not list(workdir.glob("*.torn-*")) and not list(db.parent.glob("*.torn-*"))
    assert (workdir / "tiny.yaml").read_text().startswith("name: tiny")
    journal = Path("j.journal")
    _params_study("j", 2, "--storage", f"journal:{journal}")
    _one_line_error(runner.invoke(app, ["pareto", "--study", "j", "--storage", f"sqlite:///{journal}"]),
                    f"{journal} is an Optuna journal, not an SQLite database; pass --storage journal:{journal}")
    lines = journal.read_bytes().split(b"\n")
    lines[2] = b"{not json"
    journal.write_bytes(b"\n".join(lines))
    text = _one_line_error(runner.invoke(app, ["pareto", "--study", "j", "--storage", f"journal:{journal}"]),
                           "line 3 (byte", f"head -n 2 {journal} > {journal}.fixed, then pass --storage "
                                           f"journal:{journal}.fixed")
    assert " mv " not in text  # the damaged journal is never overwritten


# ------------------------------------------------------------------------------------------ nothing completed
def test_a_search_in_which_no_trial_completed_exits_non_zero_with_the_reasons(workdir):
    r = runner.invoke(app, [*SEARCH[:-1], "2", "--objective", "params,throughput", "--batch-size", "100000000",
                            "--study", "big"])
    text = _text(r.output)
    assert r.exit_code == 1, r.output
    assert "2 trial(s): 0 complete, 2 failed" in text and "no trial completed; the last failures:" in text
    assert "can't allocate memory" in text
    # a resumed study whose earlier trials completed, but this run's did not: it ran none before its timeout
    _params_study("mixed", 2)
    r = runner.invoke(app, [*SEARCH, "--study", "mixed", "--timeout", "1e-9"])
    assert r.exit_code == 1, r.output
    assert "no trial completed in this run: none ran (raise --timeout or --trials)" in _text(r.output)


# ------------------------------------------------------------------------------------------ tracebacks
def test_pareto_on_a_read_only_sqlite_file_shows_the_presets_without_caching(workdir):
    ro = workdir / "ro"
    with _tmpfs(ro, "8m") as mounted:
        made = _run([*SEARCH[:-1], "2", "--study", "s", "--storage", f"sqlite:///{ro}/nas.db"], workdir)
        assert made.returncode == 0, made.stdout + made.stderr  # another process: no file of it open here
        if not mounted:
            os.chmod(workdir, 0o755)
        _make_read_only(ro, mounted)
        proc = _run(["pareto", "--study", "s", "--storage", f"sqlite:///{ro}/nas.db", "--report",
                     str(workdir / "out" / "s.html")], workdir, _as_unprivileged(mounted))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Traceback" not in out, out
        assert "faster_vit_3_224 (4/4" in _text(proc.stderr)
        shown = re.findall(r"\(not part of the study: measured apart on cpu with the study's settings; not cached in "
                           r"the study \(storage of this study: the database is read-only", _text(proc.stdout))
        assert len(shown) == 4, proc.stdout
        html = (workdir / "out" / "s.html").read_text()
        assert html.count("not cached in the study") == 4 and "FasterViT-3" in html


def test_dashboard_on_a_bad_storage_is_one_line(workdir):
    _one_line_error(runner.invoke(app, ["dashboard", "--storage", "nonsense://x"]), "unknown database kind 'nonsense'")
    _one_line_error(runner.invoke(app, ["dashboard", "--storage", "journal:"]), "names no file")
    _one_line_error(runner.invoke(app, ["dashboard", "--storage", "sqlite:///typo.db"]), "no study database at typo.db")


# ------------------------------------------------------------------------------------------ a locked SQLite file
def test_a_locked_sqlite_file_says_it_is_waiting(workdir):
    _params_study("l", 1)
    lock = sqlite3.connect(workdir / "results" / "nas.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    proc = _cli(["pareto", "--study", "l", "--json", "--no-report", "--no-measure-references"], workdir)
    try:
        line, started = "", time.monotonic()
        while "waiting for the SQLite database" not in line and time.monotonic() - started < 50:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "pareto ended without saying it waits"
        assert "waiting for the SQLite database results/nas.db: another process holds its lock (up to 60 s" in line
    finally:
        lock.execute("COMMIT")
        lock.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and '"n_complete": 1' in out, out + err


# ------------------------------------------------------------------------------------------ reports: whole or none
def test_a_report_on_a_full_disk_leaves_no_truncated_file(workdir):
    disk = workdir / "disk"
    with _tmpfs(disk, "256k") as mounted:
        proc = _run([*SEARCH[:-1], "2", "--study", "rep", "--results-dir", str(disk / "res")], workdir,
                    None if mounted else _fsize_limit(256 * 1024))
        _assert_one_line(proc, f"report {disk}/res/reports/rep.html (--results-dir)", "disk is full")
        reports = disk / "res" / "reports"
        assert sorted(p.name for p in reports.iterdir()) == [], list(reports.iterdir())  # no torn page, no temp file
        # a report that fits replaces an older one only once it is whole
        (reports / "rep.html").write_text("old report")
        proc = _run(["pareto", "--study", "rep", "--report", str(reports / "rep.html"), "--no-measure-references"],
                    workdir, None if mounted else _fsize_limit(256 * 1024))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert (reports / "rep.html").read_text() == "old report" and len(list(reports.iterdir())) == 1


# ------------------------------------------------------------------------------------------ the README's test command
def test_setup_test_installs_what_the_tests_need_and_ci_is_the_readme_command():
    setup = (ROOT / "setup.sh").read_text()
    for package in ("chromium", "chromium-driver", "postgresql", "dataset-fashion-mnist"):
        assert re.search(rf"need\+=\([^)]*\b{re.escape(package)}\b", setup), package
    assert 'if [ "${1:-}" = "test" ]' in setup and "sudo" in setup and "apt-get install" in setup
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [_readme_commands()[1], ".venv/bin/ruff check search_spaces evaluators nas", ".venv/bin/mypy"], ci
    assert "apt-get" not in (ROOT / ".ci" / "run").read_text()
    r = subprocess.run(["bash", "-n", str(ROOT / "setup.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
