"""Accuracy estimators: one contract run against every registered estimator (as Optuna tests every sampler),
the registry by name, and a resumed study comparing the estimator's identity (another one is refused)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from evaluators.estimators import AccuracyEstimator, Estimate, ZeroCostEstimator
from nas import record as R
from nas.cli import app
from nas.estimators import ESTIMATORS, build_estimator, estimator_label, estimator_type, identity_change
from nas.settings import EstimatorOptions
from search_spaces import FasterViTConfig
from tests.spaces import tiny_space, write_space

TINY = dict(resolution=64, dim=16, in_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=(2, 2, 2, 2),
            ct_size=1, num_classes=10)
# the options each estimator is built from on a CPU in seconds; a newly registered estimator adds its case here
CASES: dict[str, dict] = {
    "zero-cost": dict(proxy="grad_norm", data="fashion-mnist", proxy_resolution=64, proxy_batch_size=8),
    "train": dict(proxy="train", data="fashion-mnist", proxy_resolution=64, train_epochs=2.0, train_subset=32,
                  train_batch_size=16, train_val_subset=32),
    "supernet": dict(data="fashion-mnist", train_val_subset=32),  # + proxy=supernet:DIR of a tiny trained supernet
}
# option changes that change what each estimator's number means (its identity must follow them)
MEANINGFUL: dict[str, list[dict]] = {
    "zero-cost": [dict(data="cifar10"), dict(proxy_resolution=32)],
    "train": [dict(data="cifar10"), dict(proxy_resolution=32)],
    "supernet": [dict(data="cifar10"), dict(train_val_subset=16)],  # it scores at the supernet's resolution
}
# (option changes, a config they cannot score, how the failure reads)
REFUSED: dict[str, tuple[dict, dict, str]] = {
    "zero-cost": (dict(proxy_resolution=32), dict(ct_size=2), "proxy resolution 32"),  # 2x2 CTs: no room at 32 px
    "train": (dict(proxy_resolution=32), dict(ct_size=2), "proxy resolution 32"),
    "supernet": ({}, dict(dim=32), "the supernet cannot run this config"),  # wider than the supernet's 24
}
_SUPERNET: list[str] = []


def supernet_dir() -> str:
    """A tiny supernet of ``tiny_space`` trained to the end (2 CPU steps), made once per test session."""
    if not _SUPERNET:
        from evaluators.supernet import train_supernet

        out = Path(tempfile.mkdtemp(prefix="nas-test-supernet-")) / "sn"
        r = train_supernet(tiny_space(), data="fashion-mnist", out=out, epochs=0.25, batch_size=8, subset=64,
                           val_subset=32, calib_images=16, device="cpu", progress=False)
        assert r.status == "done", r.reason
        _SUPERNET.append(str(out))
    return _SUPERNET[0]


def _kinds() -> list[str]:
    return ["zero-cost", *ESTIMATORS]


def _options(kind: str) -> dict:
    if kind not in CASES:
        pytest.fail(f"estimator {kind!r} is registered but has no case in CASES: add the options it is built from")
    return dict(CASES[kind], proxy=f"supernet:{supernet_dir()}") if kind == "supernet" else CASES[kind]


def _built(kind: str, **changes) -> AccuracyEstimator:
    return build_estimator(EstimatorOptions(**{**_options(kind), **changes}))


@pytest.fixture(scope="module")
def prepared() -> dict[str, AccuracyEstimator]:
    out = {}
    for kind in _kinds():
        est = _built(kind)
        est.prepare(device="cpu", seed=0)
        out[kind] = est
    return out


@pytest.mark.parametrize("kind", _kinds())
def test_identity_label_and_cost_say_what_the_number_is(kind):
    est = _built(kind)
    assert est.kind == estimator_type(_options(kind)["proxy"]).kind
    ident = est.identity
    assert json.loads(json.dumps(ident)) == ident and ident["kind"] == est.kind
    assert _built(kind).identity == ident  # built twice from the same options: the same meaning
    for change in MEANINGFUL[kind]:  # another task, resolution, subset... is another number
        assert _built(kind, **change).identity != ident, change
    assert isinstance(est.label, str) and est.label and isinstance(est.cost, str) and est.cost
    assert est.intermediate_reports >= 0 and (est.supports_rungs or est.intermediate_reports == 0)


@pytest.mark.parametrize("kind", _kinds())
def test_estimate_gives_a_finite_value_with_json_details(kind, prepared):
    est = prepared[kind]
    assert est.num_classes == 10
    r = est.estimate(FasterViTConfig(**TINY), seed=0)
    assert isinstance(r, Estimate) and r.status == "ok" and r.failure is None and not r.stopped
    assert math.isfinite(r.value) and r.seconds >= 0
    json.dumps(r.details, allow_nan=False)


@pytest.mark.parametrize("kind", _kinds())
def test_a_config_it_cannot_score_is_a_failed_estimate(kind):
    changes, config, reason = REFUSED[kind]
    est = _built(kind, **changes)
    est.prepare(device="cpu", seed=0)
    r = est.estimate(FasterViTConfig(**{**TINY, **config}), seed=0)
    assert r.status == "failed" and r.failure.startswith(reason) and math.isnan(r.value)


@pytest.mark.parametrize("kind", _kinds())
def test_report_stops_an_estimate_that_reports(kind, prepared):
    est = prepared[kind]
    calls: list[tuple[int, float]] = []

    def stop(step: int, value: float) -> bool:
        calls.append((step, value))
        return True

    r = est.estimate(FasterViTConfig(**TINY), seed=0, report=stop)
    if est.intermediate_reports == 0:
        assert calls == [] and r.status == "ok"
        return
    assert len(calls) == 1 and r.stopped and r.status == "stopped" and r.value == calls[0][1]


@pytest.mark.parametrize("kind", [k for k in _kinds() if estimator_type(CASES.get(k, {}).get("proxy", k)).retrains])
def test_an_estimator_that_retrains_gives_another_sample_per_seed(kind, prepared):
    est = prepared[kind]
    a, b, c = (est.estimate(FasterViTConfig(**TINY), seed=s) for s in (1, 1, 2))
    assert a.value == b.value  # the same seed: the same number (on the CPU)
    assert c.status == "ok" and math.isfinite(c.value)


def test_registry_by_name():
    assert estimator_type("train").supports_rungs and estimator_type("train").retrains
    assert estimator_type("grad_norm") is ZeroCostEstimator and not ZeroCostEstimator.supports_rungs
    with pytest.raises(ValueError, match="unknown proxy 'nope'"):
        build_estimator(EstimatorOptions(proxy="nope", proxy_resolution=64, proxy_batch_size=8))
    with pytest.raises(ValueError, match="takes no argument"):
        build_estimator(EstimatorOptions(proxy="train:x"))
    with pytest.raises(ValueError, match="proxy_resolution is chosen for the device"):
        build_estimator(EstimatorOptions(proxy="grad_norm"))
    assert estimator_label(dict(proxy="train", train_epochs=3, data="fashion-mnist")) == \
        "top-1 % (train, 3 epochs, fashion-mnist)"
    assert estimator_label(dict(proxy="since_removed")) == "since_removed score"


def test_identity_change_names_what_differs():
    assert identity_change(None, {"a": 1}) is None and identity_change({"a": 1}, {"a": 1}) is None
    assert identity_change({"a": 1, "b": 2}, {"a": 1, "b": 3}) == "b: 2 stored, 3 now"


def test_a_moved_supernet_keeps_its_identity_and_another_training_does_not(tmp_path):
    """A study resumed on another machine, or after the folder moved, finds the same supernet."""
    import shutil

    from evaluators.estimators import SupernetEstimator
    from evaluators.supernet_folder import SupernetFolder

    moved = tmp_path / "elsewhere"
    shutil.copytree(supernet_dir(), moved)
    assert SupernetEstimator(moved).identity == SupernetEstimator(supernet_dir()).identity
    meta_path = SupernetFolder(moved).meta_path
    meta = json.loads(meta_path.read_text())
    meta["completed"] = "2000-01-01T00:00:00+00:00"  # another training run of the same settings
    meta_path.write_text(json.dumps(meta))
    assert identity_change(SupernetEstimator(supernet_dir()).identity, SupernetEstimator(moved).identity)


def test_a_resumed_study_compares_the_estimator_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "300")
    write_space(tmp_path / "tiny.yaml", tiny_space())
    runner = CliRunner()
    args = ["search", "--space", "tiny.yaml", "--device", "cpu", "--objective", "accuracy,params", "--proxy",
            "grad_norm", "--data", "fashion-mnist", "--proxy-batch-size", "8", "--no-enqueue-presets",
            "--study", "e", "--trials", "1"]
    r = runner.invoke(app, [*args, "--proxy-resolution", "64"])
    assert r.exit_code == 0, r.output
    st = optuna.load_study(study_name="e", storage="sqlite:///results/nas.db")
    stored = st.user_attrs[R.STUDY_ESTIMATOR]
    assert stored == build_estimator(EstimatorOptions(**CASES["zero-cost"])).identity
    assert st.metric_names[0] == "grad_norm score"
    r = runner.invoke(app, [*args, "--proxy-resolution", "64"])  # the same estimator: resumed
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--proxy-resolution", "32"])  # another estimator: refused before any trial
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "study 'e' was run with --proxy-resolution 64, not 32: this run's values would not compare" in text
    assert "Resume with the stored settings (--proxy-resolution 64)" in text
    again = optuna.load_study(study_name="e", storage="sqlite:///results/nas.db")
    assert again.user_attrs[R.STUDY_ESTIMATOR] == stored and len(again.trials) == 2
