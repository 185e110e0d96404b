"""The README's main command, exactly as written there: `nas search` with no options.

On this GPU-less machine it must say it runs on the CPU, finish with a Pareto table and a report
path, and leave the study in the default storage.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_commands() -> list[str]:
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no command block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_first_screen_has_exactly_the_two_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("nas search") and cmds[0].startswith("./setup.sh")
    assert "pytest" in cmds[1] and cmds[1].startswith("./setup.sh test")
    ci = (README.parent / ".ci" / "run").read_text()
    assert cmds[1] in ci  # CI runs the README's test command


def test_main_command_runs_on_cpu_and_ends_with_a_front(tmp_path):
    # the README runs `.venv/bin/nas`: the console script beside the interpreter running the tests
    nas = Path(sys.executable).parent / "nas"
    assert nas.is_file(), f"the `nas` console script is not installed beside {sys.executable}"
    r = subprocess.run([str(nas), "search"], cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "running on the CPU" in out
    assert "Pareto set" in out and "report: results/reports/default.html" in out
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{tmp_path}/results/nas.db")
    assert study.user_attrs["objectives"] == ["accuracy", "throughput"]
    assert len(study.trials) == 8
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 6
    html = (tmp_path / "results" / "reports" / "default.html").read_text()
    # FasterViT-0..3 on the main job's report, measured apart exactly as the trials were (cached in the study)
    flat = " ".join(out.split())
    assert "measuring 4 FasterViT preset(s) the study's way for the report" in flat
    assert "faster_vit_3_224 (4/4, ETA" in flat
    assert html.count("not part of the study (measured the same way)") == 4
    assert set(study.user_attrs["reference_points"]) == {f"faster_vit_{i}_224" for i in range(4)}
