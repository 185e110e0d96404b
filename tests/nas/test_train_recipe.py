"""``nas search --proxy train --train-recipe JSON|FILE``: the train proxy trained with another recipe
(ground truth 2's, say), nothing overridden silently, and a resume with another recipe refused."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from evaluators.train import TrainRecipe
from nas.cli import app
from nas.estimators import build_estimator, read_train_recipe, with_train_recipe
from nas.settings import EstimatorOptions
from tests.spaces import tiny_space, write_space

GT2 = {"recipe": {"batch_size": 8, "lr": 3.5e-4, "lr_scaling": "sqrt", "weight_decay": 0.05, "warmup": 0.2,
                  "label_smoothing": 0.1, "grad_clip": 1.0, "drop_path_rate": 0.0,
                  "augment": {"crop": 0.0625, "flip": True}, "resolution": 32, "compile": "graph"},
       "gpu": "a summary file's other keys are ignored"}


def _options(**kw):
    return EstimatorOptions(proxy="train", data="fashion-mnist", train_epochs=0.25, train_subset=64,
                            train_batch_size=8, proxy_resolution=32, **kw)


def test_a_summary_file_gives_its_recipe(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(GT2))
    est = build_estimator(_options(train_recipe=str(path)))
    r = est.recipe
    assert r.grad_clip == 1.0 and r.augment is not None and r.augment.flip and r.compile == "graph"
    assert r.epochs == 0.25 and r.subset == 64  # the options' budget and subset stay
    assert est.identity["recipe"] == r.to_dict() != build_estimator(_options()).identity["recipe"]


def test_an_inline_object_sets_fields_and_the_rest_stay():
    r = with_train_recipe(TrainRecipe(epochs=2.0, batch_size=64), '{"ema_decay": 0.99, "warmup": 0.05}')
    assert (r.ema_decay, r.warmup, r.epochs, r.batch_size) == (0.99, 0.05, 2.0, 64)


@pytest.mark.parametrize("text, message", [
    ('{"batch_size": 512}', "--train-recipe sets batch_size 512 (the option --train-batch-size is 8)"),
    ('{"resolution": 64}', "resolution 64 (the option --proxy-resolution is 32)"),
    ('{"steps": 10}', "--train-recipe may not set steps"),
    ('{"lr": -1}', "--train-recipe: lr=-1"),
    ('{"learning_rate": 1e-3}', "--train-recipe: unknown recipe keys ['learning_rate']"),
    ('[1, 2]', "expected a JSON object of TrainRecipe fields"),
    ('{"lr": 1e-3, "lr": 2e-3}', "key 'lr' is given twice"),
    ("{lr: 1}", "--train-recipe: not JSON"),
    ("no-such-file.json", "no-such-file.json does not exist: expected a JSON file with a training recipe"),
])
def test_a_bad_recipe_is_one_clear_error(text, message):
    with pytest.raises((ValueError, FileNotFoundError), match=None) as info:
        build_estimator(_options(train_recipe=text))
    assert message in str(info.value)


def test_read_train_recipe_takes_a_plain_object_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"grad_clip": 0.5}')
    assert read_train_recipe(str(path)) == {"grad_clip": 0.5}


def test_a_search_records_it_and_a_resume_with_another_recipe_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    write_space(tmp_path / "tiny.yaml", tiny_space())
    runner = CliRunner()
    args = ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params", "--proxy", "train",
            "--data", "fashion-mnist", "--train-epochs", "0.25", "--train-subset", "64", "--train-batch-size", "8",
            "--train-val-subset", "32", "--proxy-resolution", "64", "--no-enqueue-presets", "--no-measure-references",
            "--study", "r", "--trials", "1", "-q"]
    r = runner.invoke(app, [*args, "--train-recipe", '{"grad_clip": 1.0}'])
    assert r.exit_code == 0, r.output
    st = optuna.load_study(study_name="r", storage="sqlite:///results/nas.db")
    done = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert len(done) == 1
    r = runner.invoke(app, [*args, "--train-recipe", '{"grad_clip": 0.5}'])
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "--train-recipe {\"grad_clip\": 1.0}, not {\"grad_clip\": 0.5}" in text
    assert len(optuna.load_study(study_name="r", storage="sqlite:///results/nas.db").trials) == 1


def test_it_is_refused_without_the_train_proxy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = CliRunner().invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params",
                                 "--proxy", "grad_norm", "--train-recipe", '{"grad_clip": 1.0}', "--trials", "1"])
    assert r.exit_code == 2 and "--train-recipe" in r.output


def test_the_committed_ground_truth_summary_is_a_recipe_with_its_budget_in_epochs():
    """groundtruth2-summary.json records steps and an evaluation cadence: the cadence is dropped, the
    steps come back as its epochs, which --train-epochs must then equal."""
    from pathlib import Path

    path = str(Path(__file__).resolve().parents[2] / "results" / "benchmarks" / "groundtruth2-summary.json")
    summary = json.loads(Path(path).read_text())
    assert "steps" in summary["recipe"] and "eval_every" in summary["recipe"]
    fields = read_train_recipe(path)
    assert "steps" not in fields and "eval_every" not in fields and fields["epochs"] == summary["epochs"]
    ok = TrainRecipe(epochs=summary["epochs"], batch_size=512, resolution=64)
    r = with_train_recipe(ok, path)
    assert (r.epochs, r.lr, r.warmup, r.grad_clip) == (summary["epochs"], 3.5e-4, 0.2, 1.0) and r.steps is None
    with pytest.raises(ValueError, match=r"epochs 16.0 \(the option --train-epochs is 4.0\)"):
        with_train_recipe(TrainRecipe(epochs=4.0, batch_size=512, resolution=64), path)


def test_a_summary_recording_steps_without_epochs_is_refused(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"recipe": {"lr": 1e-3, "steps": 100}}))
    with pytest.raises(ValueError, match="records a budget of 100 steps but the file has no 'epochs'"):
        read_train_recipe(str(path))
