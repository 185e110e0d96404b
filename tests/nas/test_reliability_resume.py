"""A resumed study never mixes incomparable numbers: every setting that changes what a stored value means is
refused before any trial runs (and before the data loads), naming the setting, the stored value and the new
one, and saying how to resume (the README's "Reliability" table counts these cases).

Settings that do not change a value's meaning (trials, seed, sampler) still resume.
"""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from nas import record as R
from nas.cli import app
from tests.nas.test_reliability import _one_line_error
from tests.spaces import tiny_space, write_space

runner = CliRunner()
BASE = ["search", "--space", "tiny.yaml", "--device", "cpu", "-q", "--trials", "1", "--no-enqueue-presets"]
ZERO_COST = [*BASE, "--objective", "accuracy,params", "--proxy", "grad_norm", "--data", "fashion-mnist",
             "--proxy-resolution", "64", "--proxy-batch-size", "8", "--study", "z"]
DB = "sqlite:///results/nas.db"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working folder holding the tiny space (tiny.yaml)."""
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    return tmp_path


def _trials(name: str) -> int:
    return len(optuna.load_study(study_name=name, storage=DB).trials)


def _refused(args: list[str], name: str, *needles: str) -> str:
    """Run ``args`` on the existing study ``name``: refused in one line, no trial added."""
    before = _trials(name)
    text = _one_line_error(runner.invoke(app, args), *needles)
    assert "this run's values would not compare with the ones it holds" in text
    assert _trials(name) == before
    return text


@pytest.mark.parametrize("change, message, resume", [
    (["--data", "fmnist-odd"], "--data fashion-mnist, not fmnist-odd", "--data fashion-mnist"),
    (["--proxy-resolution", "32"], "--proxy-resolution 64, not 32", "--proxy-resolution 64"),
    (["--proxy-batch-size", "16"], "--proxy-batch-size 8, not 16", "--proxy-batch-size 8"),
    (["--proxy", "synflow"], "--proxy grad_norm, not synflow", "--proxy grad_norm"),
    # refused before the data loads: the folder does not exist, and the refusal is what is said
    (["--data", "imagefolder:nowhere"], "--data fashion-mnist, not imagefolder:nowhere", "--data fashion-mnist"),
])
def test_another_accuracy_estimator_is_refused_before_any_trial(workdir, change, message, resume):
    assert runner.invoke(app, ZERO_COST).exit_code == 0
    stored = optuna.load_study(study_name="z", storage=DB).user_attrs
    text = _refused([*ZERO_COST, *change], "z", f"study 'z' was run with {message}")
    assert f"Resume with the stored settings ({resume}) or use another --study name" in text
    again = optuna.load_study(study_name="z", storage=DB).user_attrs
    assert again[R.STUDY_ESTIMATOR] == stored[R.STUDY_ESTIMATOR] and again[R.STUDY_SETTINGS] == stored[R.STUDY_SETTINGS]


def test_every_changed_setting_is_named_and_meaningless_ones_resume(workdir):
    assert runner.invoke(app, ZERO_COST).exit_code == 0
    _refused([*ZERO_COST, "--proxy-resolution", "32", "--data", "cifar10"], "z",
             "--proxy-resolution 64, not 32", "--data fashion-mnist, not cifar10",
             "(--data fashion-mnist --proxy-resolution 64)")
    r = runner.invoke(app, [*ZERO_COST, "--seed", "5", "--sampler", "random", "--trials", "2"])
    assert r.exit_code == 0, r.output  # another sample of the same estimator: comparable
    assert _trials("z") == 3


def test_another_space_is_refused_up_front(workdir):
    args = ["search", "--objective", "params,flops", "--device", "cpu", "-q", "--trials", "2", "--study", "s"]
    assert runner.invoke(app, [*args, "--space", "tiny.yaml"]).exit_code == 0
    write_space(workdir / "other.yaml", tiny_space(name="other", **{"dim": {"choices": [8, 32]}}))
    _refused([*args, "--space", "other.yaml"], "s", "--space tiny.yaml, not other.yaml",
             "knob dim: choices [8, 16, 24] stored, choices [8, 32] now", "(--space tiny.yaml)")
    # the same file, edited: another base builds other networks from the same parameters
    write_space(workdir / "tiny.yaml", tiny_space(base=dict(resolution=128)))
    text = _refused([*args, "--space", "tiny.yaml"], "s",
                    "--space tiny.yaml as it was then (it changed since: base resolution: 64 stored, 128 now)")
    assert "Resume with the stored settings or use another --study name" in text  # no option gives it back
    # a study made before the space was stored: the distributions its trials sampled are compared
    write_space(workdir / "tiny.yaml", tiny_space())
    optuna.load_study(study_name="s", storage=DB).set_user_attr(R.STUDY_SPACE, None)
    _refused([*args, "--space", "other.yaml"], "s", "knob dim: choices [8, 16, 24] stored, choices [8, 32] now")
    r = runner.invoke(app, [*args, "--space", "tiny.yaml"])
    assert r.exit_code == 0, r.output
    trials = optuna.load_study(study_name="s", storage=DB).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_another_profiler_protocol_or_task_is_refused(workdir):
    args = [*BASE, "--objective", "params,throughput", "--batch-size", "2", "--study", "t"]
    assert runner.invoke(app, args).exit_code == 0
    _refused([*args, "--batch-size", "4"], "t", "--batch-size 2, not 4")
    _refused([*args, "--dtype", "bf16"], "t", "--dtype fp16, not bf16")
    # no accuracy: the task still sets the head (params, FLOPs, throughput)
    _refused([*args, "--data", "fashion-mnist"], "t", "--data fmnist-odd, not fashion-mnist")


def test_other_objectives_are_another_study(workdir):
    assert runner.invoke(app, [*BASE, "--objective", "params,flops", "--study", "o"]).exit_code == 0
    _one_line_error(runner.invoke(app, [*BASE, "--objective", "params,latency", "--study", "o"]),
                    "study 'o' exists with objectives ['params', 'flops'], not ['params', 'latency']")
    assert runner.invoke(app, [*BASE, "--objective", "params,flops", "--study", "o"]).exit_code == 0


def test_pareto_warns_about_a_study_mixed_before_resumes_were_compared(workdir):
    from optuna.distributions import FloatDistribution

    (workdir / "results").mkdir()
    study = optuna.create_study(study_name="m", storage=DB, directions=["maximize", "minimize"])
    study.set_user_attr(R.STUDY_OBJECTIVES, ["accuracy", "params"])
    for number, (accuracy, resolution) in enumerate([(-0.263, 64), (0.251, 32), (0.1, 64)]):
        measured = dict(device="cpu", data="fmnist-odd", seed=number,
                        estimator=dict(kind="zero-cost", proxy="grad_norm", resolution=resolution))
        study.add_trial(optuna.trial.create_trial(
            params={"x": float(number)}, distributions={"x": FloatDistribution(0, 9)}, values=[accuracy, 1e6 + number],
            user_attrs={R.MEASURED_WITH: measured}))
    r = runner.invoke(app, ["pareto", "--study", "m", "--no-report", "--no-measure-references"])
    assert r.exit_code == 0, r.output
    assert ("warning: the complete trials were measured with different settings (estimator differ): trials [0, 2] vs "
            "[1]; their values do not compare") in " ".join(r.output.split())


def test_another_supernet_or_a_retrained_one_is_refused(workdir):
    import json
    import shutil

    from tests.nas.test_estimators import supernet_dir

    shutil.copytree(supernet_dir(), workdir / "sn")
    shutil.copytree(supernet_dir(), workdir / "sn2")
    args = [*BASE, "--objective", "accuracy,params", "--proxy", "supernet:sn", "--train-val-subset", "32",
            "--study", "n"]
    assert runner.invoke(app, args).exit_code == 0
    # a copy of the same trained supernet is the same estimator: the study goes on and records where it is now
    before = _trials("n")
    moved = runner.invoke(app, [a if a != "supernet:sn" else "supernet:sn2" for a in args])
    assert moved.exit_code == 0, moved.output
    assert _trials("n") > before
    study = optuna.load_study(study_name="n", storage=DB)
    assert study.user_attrs[R.STUDY_PROXY].endswith("sn2")
    args = [a if a != "supernet:sn" else "supernet:sn2" for a in args]
    meta = workdir / "sn2" / "supernet.json"
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps(dict(record, completed="2000-01-01T00:00:00+00:00")))  # another training
    _refused(args, "n", "accuracy estimator 'supernet' as it was then (it changed since:", "completed: ")
    meta.write_text(json.dumps(record))
    _refused([*args[:-2], "--train-val-subset", "16", "--study", "n"], "n", "--train-val-subset 32, not 16")
    # the same folder, trained again (more steps): another estimator behind the same option
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps(dict(record, steps_done=record["steps_done"] + 1)))
    text = _refused(args, "n", "accuracy estimator 'supernet' as it was then (it changed since:", "steps: ")
    assert "Resume with the stored settings or use another --study name" in text


def test_another_channel_padding_is_refused(workdir):
    """--pad-channels changes what a measured throughput means: recorded with each value, compared on resume."""
    args = [*BASE, "--objective", "params,throughput", "--batch-size", "2"]
    assert runner.invoke(app, [*args, "--study", "plain"]).exit_code == 0
    r = runner.invoke(app, [*args, "--study", "padded", "--pad-channels", "8"])
    assert r.exit_code == 0, r.output
    (padded,) = optuna.load_study(study_name="padded", storage=DB).trials
    (plain,) = optuna.load_study(study_name="plain", storage=DB).trials
    assert padded.user_attrs[R.PROFILE]["pad_channels"] == 8 and plain.user_attrs[R.PROFILE]["pad_channels"] is None
    assert padded.user_attrs[R.MEASURED_WITH] == dict(plain.user_attrs[R.MEASURED_WITH], pad_channels=8)
    assert optuna.load_study(study_name="padded", storage=DB).metric_names[1].endswith(", padded to 8)")
    _refused(args + ["--study", "padded"], "padded", "--pad-channels 8, not off", "(--pad-channels 8)")
    _refused([*args, "--study", "padded", "--pad-channels", "16"], "padded", "--pad-channels 8, not 16")
    _refused([*args, "--study", "plain", "--pad-channels", "8"], "plain", "--pad-channels off, not 8",
             "(drop --pad-channels)")
    # a study stored before the option existed has no key: it was unpadded
    study = optuna.load_study(study_name="plain", storage=DB)
    study.set_user_attr(R.STUDY_SETTINGS, {k: v for k, v in study.user_attrs[R.STUDY_SETTINGS].items()
                                           if k != "pad_channels"})
    _refused([*args, "--study", "plain", "--pad-channels", "8"], "plain", "--pad-channels off, not 8")
    r = runner.invoke(app, [*args, "--study", "plain"])
    assert r.exit_code == 0, r.output


def test_another_gelu_epilogue_is_refused(workdir):
    """--gelu-epilogue changes what a measured throughput means: recorded with each value, compared on resume."""
    args = [*BASE, "--objective", "params,throughput", "--batch-size", "2"]
    assert runner.invoke(app, [*args, "--study", "plain"]).exit_code == 0
    r = runner.invoke(app, [*args, "--study", "fused", "--gelu-epilogue"])
    assert r.exit_code == 0, r.output
    (fused,) = optuna.load_study(study_name="fused", storage=DB).trials
    (plain,) = optuna.load_study(study_name="plain", storage=DB).trials
    assert fused.user_attrs[R.PROFILE]["gelu_epilogue"] is True and fused.user_attrs[R.PROFILE]["gelu_fused"] > 0
    assert plain.user_attrs[R.PROFILE]["gelu_epilogue"] is False and plain.user_attrs[R.PROFILE]["gelu_fused"] is None
    assert fused.user_attrs[R.MEASURED_WITH] == dict(plain.user_attrs[R.MEASURED_WITH], gelu_epilogue=True)
    assert optuna.load_study(study_name="fused", storage=DB).metric_names[1].endswith(", GELU epilogue)")
    _refused(args + ["--study", "fused"], "fused", "--gelu-epilogue on, not off", "(--gelu-epilogue)")
    _refused([*args, "--study", "plain", "--gelu-epilogue"], "plain", "--gelu-epilogue off, not on",
             "(drop --gelu-epilogue)")
    # a study stored before the option existed has no key: it was unfused, and resumes as such
    study = optuna.load_study(study_name="plain", storage=DB)
    study.set_user_attr(R.STUDY_SETTINGS, {k: v for k, v in study.user_attrs[R.STUDY_SETTINGS].items()
                                           if k != "gelu_epilogue"})
    _refused([*args, "--study", "plain", "--gelu-epilogue"], "plain", "--gelu-epilogue off, not on")
    r = runner.invoke(app, [*args, "--study", "plain"])
    assert r.exit_code == 0, r.output
