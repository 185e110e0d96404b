"""A search on a supernet's inherited accuracy, end to end on the CPU (tiny space, a supernet of 2 steps):
``--proxy supernet:DIR``, its refusals, export with the supernet's weights, stand-alone confirmation,
and fine-tuning into a model folder."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from nas import record as R
from nas.cli import app
from nas.confirm import confirmations, seed_noise
from search_spaces import FasterViTConfig, load_model
from tests.nas.test_estimators import supernet_dir
from tests.spaces import TINY_BASE, tiny_space, write_space

runner = CliRunner()
STORAGE = "sqlite:///results/nas.db"


def _search(*args: str):
    return runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params",
                               "--proxy", f"supernet:{supernet_dir()}", "--train-val-subset", "32",
                               "--no-enqueue-presets", "--study", "sn", *args])


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = _search("--trials", "4")
    assert r.exit_code == 0, r.output
    return optuna.load_study(study_name="sn", storage=STORAGE)


def test_a_search_scores_every_trial_with_the_supernet(study):
    ident = study.user_attrs[R.STUDY_ESTIMATOR]
    assert ident["kind"] == "supernet" and ident["space"] == "tiny" and ident["trained_on"] == "fashion-mnist"
    assert study.metric_names[0] == "top-1 % (supernet, 0.25 epochs, fashion-mnist)"
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and all(0.0 <= t.values[0] <= 100.0 for t in done)
    details = done[0].user_attrs[R.PROXY]["supernet"]
    assert details["path"] == supernet_dir() or details["path"].endswith("/sn")
    assert R.WEIGHTS_PATH not in done[0].user_attrs  # no weights written per trial


def test_a_space_the_supernet_was_not_trained_on_is_refused_before_the_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space(name="other", **{"dim": {"choices": [8, 16]}}))
    r = _search("--trials", "1")
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "--space 'other' is not the space the supernet" in text
    assert not (tmp_path / "results" / "nas.db").exists() or "sn" not in optuna.get_all_study_names(STORAGE)


def test_the_default_data_typed_for_a_supernet_of_other_data_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    r = _search("--trials", "1", "--data", "fmnist-odd")
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "that supernet was trained on 'fashion-mnist'" in text and "drop --data" in text
    assert not (tmp_path / "results" / "nas.db").exists()


def test_an_unfinished_supernet_is_refused(tmp_path, monkeypatch):
    from evaluators.supernet import train_supernet

    monkeypatch.chdir(tmp_path)
    write_space(tmp_path / "tiny.yaml", tiny_space())
    train_supernet(tiny_space(), data="fashion-mnist", out=tmp_path / "half", epochs=1.0, max_steps=1, batch_size=8,
                   subset=64, val_subset=32, calib_images=16, device="cpu", progress=False)
    r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params",
                            "--proxy", "supernet:half", "--trials", "1"])
    assert r.exit_code == 2 and "the supernet is not trained to the end" in " ".join(r.output.split())


def test_export_hands_out_the_supernet_weights_and_confirm_trains_stand_alone(study, tmp_path):
    first = next(t for t in study.trials if t.state.name == "COMPLETE")
    r = runner.invoke(app, ["export", "--study", "sn", "--trial", str(first.number), "--out", "ex", "--format",
                            "safetensors"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ex" / "export.json").read_text())
    assert meta["weights"]["kind"] == "supernet" and meta["weights"]["supernet"]["epochs"] == 0.25
    assert "inherited from a supernet" in (tmp_path / "ex" / "README.md").read_text()
    load_model(tmp_path / "ex")  # the folder loads
    r = runner.invoke(app, ["confirm", "--study", "sn", "--top", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    st = optuna.load_study(study_name="sn", storage=STORAGE)
    (entries,) = confirmations(st).values()
    assert [e["kind"] for e in entries] == ["standalone", "standalone"] and [e["seed"] for e in entries] == [1, 2]
    assert all(e["status"] == "ok" and e["epochs"] == 0.25 for e in entries)
    assert "trained stand-alone" in r.output and seed_noise(st) is not None


def test_finetune_writes_a_model_folder_with_its_recipe_and_top1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = FasterViTConfig(**{**TINY_BASE, "depths": (1, 1, 1, 1)})
    cfg.save(tmp_path / "cfg.json")
    r = runner.invoke(app, ["finetune", "--config", "cfg.json", "--init", f"supernet:{supernet_dir()}", "--data",
                            "fashion-mnist", "--epochs", "0.01", "--batch-size", "16", "--device", "cpu", "--out", "ft",
                            "--format", "safetensors"])
    assert r.exit_code == 0, r.output
    w = json.loads((tmp_path / "ft" / "export.json").read_text())["weights"]
    assert w["kind"] == "fine-tuned" and w["init"].startswith("supernet:") and w["data"] == "fashion-mnist"
    assert 0 <= w["val_top1"] <= 100 and w["recipe"]["steps"] >= 1
    assert "Weights: fine-tuned" in (tmp_path / "ft" / "README.md").read_text()
    r = runner.invoke(app, ["export", "--config", "cfg.json", "--data", "fashion-mnist", "--out", "x"])
    assert r.exit_code == 2 and "give --finetune too" in " ".join(r.output.split())


def test_garbage_weights_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.bin").write_bytes(b"\x80\x04not a pickle at all")
    r = runner.invoke(app, ["export", "--config", "faster_vit_0_224", "--weights", "garbage.bin", "--out", "x"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "are not a safetensors file or a torch state dict" in text
    assert "Traceback" not in r.output


def test_proxies_and_compare_score_with_a_supernet(tmp_path, monkeypatch):
    import nas.compare as cmp

    monkeypatch.chdir(tmp_path)
    cfg = FasterViTConfig(**{**TINY_BASE, "depths": (1, 1, 1, 1)})
    cfg.save(tmp_path / "cfg.json")
    proxy = f"supernet:{supernet_dir()}"
    r = runner.invoke(app, ["proxies", "--config", "cfg.json", "--proxy", proxy, "--proxy", "params", "--device",
                            "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)["proxies"]
    assert out["params"]["value"] > 0 and out[proxy]["error"] is None and 0 <= out[proxy]["value"] <= 100
    # compare: our FasterViT rows get the estimator's column; FasterViT-0 is no point of the tiny supernet's space
    monkeypatch.setattr(cmp, "_measure_one", lambda p, code, s: [cmp.ModelRow(
        name=p.name, family=p.family, code=code, model_id=str(p.preset if code == "nas" else p.timm_id),
        resolution=p.resolution, mode="eager", img_s=100.0, top1=p.top1)])
    s = cmp.CompareSettings(models=["FasterViT-0", "Swin-T"], device="cpu", proxy=proxy).resolved()
    d = cmp.run_compare(s).to_dict()
    assert d["estimate_label"] == "top-1 % (supernet, 0.25 epochs, fashion-mnist)"
    fv0 = next(r for r in d["rows"] if r["code"] == "nas")
    assert fv0["estimate"] is None and fv0["estimate_error"].startswith("the supernet cannot run this config")
    from nas.compare_report import table_header, table_rows

    assert table_header(d)[-1] == d["estimate_label"]
    rows = {r[0]: r for r in table_rows(d)}
    assert rows["FasterViT-0"][-1].startswith("not scored: the supernet cannot run") and rows["Swin-T"][-1] == "—"
