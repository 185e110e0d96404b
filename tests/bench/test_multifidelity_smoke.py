"""bench/multifidelity.py --smoke on the CPU: the summary keys automation reads, one finite truth
hypervolume per seed and method, a resume that repeats nothing, and the refused resumes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
REQUIRED = {"gpu", "dataset", "seeds", "gpu_seconds_per_study", "hv", "hv_ratio_sh_vs_full",
            "presets_dominated_beyond_noise"}


@pytest.fixture(scope="module")
def mf():
    sys.path.insert(0, str(BENCH))
    import multifidelity

    yield multifidelity
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def smoke_dir(mf, tmp_path_factory):
    out = tmp_path_factory.mktemp("mf")
    assert mf.main(["--smoke", "--out-dir", str(out)]) == 0  # two sessions inside: 4 units, then the rest
    return out


def _units(data):
    return [u for s in data["sessions"] for u in s["units"]]


def test_summary_has_the_keys_and_one_finite_hv_per_seed(smoke_dir):
    summary = json.loads((smoke_dir / "multifidelity-summary.json").read_text())
    assert REQUIRED <= set(summary)
    assert summary["seeds"] == 2 and summary["dataset"] == "fashion-mnist" and summary["gpu"] == "cpu"
    assert set(summary["hv"]) == {"sh", "full", "random"}
    for method, values in summary["hv"].items():
        assert len(values) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in values), (method, values)
    assert summary["hv_ratio_sh_vs_full"] is not None and math.isfinite(summary["hv_ratio_sh_vs_full"])
    assert isinstance(summary["presets_dominated_beyond_noise"], list)
    assert summary["reference_point"] == {"accuracy": 10.0, "throughput": 0.0}
    assert (smoke_dir / "multifidelity.png").is_file()


def test_the_results_file_records_each_unit_once(smoke_dir):
    data = json.loads((smoke_dir / "multifidelity.json").read_text())
    units = _units(data)
    assert len(units) == len(set(units))
    assert len(data["sessions"]) == 2 and len(data["sessions"][0]["units"]) == 4  # stopped, then resumed
    assert {u for u in units if u.startswith("study:")} == {f"study:{m}:{k}" for m in ("sh", "full", "random")
                                                           for k in (0, 1)}
    assert {u for u in units if u.startswith("preset:")} == {f"preset:tiny_{x}:{s}" for x in "ab" for s in (0, 1)}
    for key, rec in data["studies"].items():
        assert rec["history"] and rec["front"] and len(data["confirmations"][key]) == len(rec["front"])
    # successive halving stopped some trials; which ones (and in a seed, whether any) hangs on CPU-timed
    # throughput, the second objective of the rung ranking, so the test asks it of the two seeds together
    assert data["studies"]["sh:0"]["n_pruned"] + data["studies"]["sh:1"]["n_pruned"] > 0
    assert not data["failures"]


def test_a_second_run_repeats_nothing(mf, smoke_dir):
    storage = f"sqlite:///{smoke_dir / 'multifidelity' / 'studies.db'}"
    before = mf.study_trial_counts(storage)
    summary = (smoke_dir / "multifidelity-summary.json").read_text()
    assert mf.main(["--smoke", "--out-dir", str(smoke_dir)]) == 0
    assert mf.study_trial_counts(storage) == before and len(before) == 6
    data = json.loads((smoke_dir / "multifidelity.json").read_text())
    assert [s["units"] for s in data["sessions"][2:]] == [[], []]
    assert json.loads((smoke_dir / "multifidelity-summary.json").read_text()) == json.loads(summary)
    assert mf.main(["--analyze-only", "--out-dir", str(smoke_dir)]) == 0
    assert json.loads((smoke_dir / "multifidelity-summary.json").read_text()) == json.loads(summary)


def test_a_resume_with_other_settings_is_refused_naming_the_key(mf, smoke_dir):
    with pytest.raises(SystemExit, match="gpu_seconds: file 600.0 vs now 123.0"):
        mf.main(["--smoke", "--out-dir", str(smoke_dir), "--gpu-seconds", "123"])
    with pytest.raises(SystemExit, match="eta: file 2 vs now 3"):
        mf.main(["--smoke", "--out-dir", str(smoke_dir), "--eta", "3"])


@pytest.mark.parametrize("args, message", [
    (["--methods", "sh,nope"], "unknown method 'nope'; known: sh, full, random"),
    (["--seeds", "0"], "--seeds '0' must be the number of seeds"),
    (["--seeds", "two"], "--seeds 'two' must be the number of seeds"),
    (["--reference", "10"], "--reference '10' must be two numbers"),
    (["--sh-sampler", "nsga2"], "--sh-sampler 'nsga2': only 'random'"),
])
def test_bad_options_are_refused(mf, tmp_path, args, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        mf.main(["--smoke", "--out-dir", str(tmp_path), *args])
    assert not (tmp_path / "multifidelity.json").exists()


def test_without_a_gpu_the_full_run_says_so(mf, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="no CUDA GPU here.*--smoke"):
        mf.main(["--out-dir", str(tmp_path)])
    assert not (tmp_path / "multifidelity.json").exists()


def test_presets_are_the_spaces_configs(mf):
    from search_spaces import PRESETS

    cfg = mf.preset_config("faster_vit_3_224", "default", False)
    assert cfg.arch_id == PRESETS["faster_vit_3_224"].arch_id and cfg.drop_path_rate == 0.2  # the space's, not 0.3


def test_a_unit_that_can_never_fit_the_time_budget_is_an_error(mf, tmp_path):
    with pytest.raises(SystemExit, match=r"nothing fits: preset tiny_a:0 needs ~\d+ s, -?\d+ s of --time-budget 20"):
        mf.main(["--smoke", "--out-dir", str(tmp_path), "--time-budget", "20"])


def _hv_2d(points, ref):
    """Hypervolume of maximised (accuracy, throughput) points above ``ref``, by a sweep (no library)."""
    pts = sorted((p for p in points if p[0] > ref[0] and p[1] > ref[1]), key=lambda p: -p[1])
    area, best_acc = 0.0, ref[0]
    for i, (acc, thr) in enumerate(pts):
        nxt = pts[i + 1][1] if i + 1 < len(pts) else ref[1]
        best_acc = max(best_acc, acc)
        area += (best_acc - ref[0]) * (thr - nxt)
    return area


def test_hv_is_of_the_re_trained_fronts(smoke_dir):
    data = json.loads((smoke_dir / "multifidelity.json").read_text())
    summary = json.loads((smoke_dir / "multifidelity-summary.json").read_text())
    ref = data["settings"]["reference"]
    for key, rec in data["studies"].items():
        conf = data["confirmations"][key]
        truth = [[conf[str(p["source"])]["accuracy"], p["throughput"]] for p in rec["front"]
                 if conf[str(p["source"])]["accuracy"] is not None]
        method, seed = key.split(":")
        assert summary["hv"][method][int(seed)] == pytest.approx(_hv_2d(truth, ref), rel=1e-9), key


def test_an_architecture_is_re_trained_once_per_seed(smoke_dir):
    data = json.loads((smoke_dir / "multifidelity.json").read_text())
    trained: dict = {}
    for key, entries in data["confirmations"].items():
        for e in entries.values():
            if not e.get("shared_from"):
                trained[(e["arch_id"], e["seed"])] = trained.get((e["arch_id"], e["seed"]), 0) + 1
            else:
                assert e["shared_from"] in data["confirmations"] and e["shared_from"] != key
    assert trained and max(trained.values()) == 1, trained


def _copy(smoke_dir, tmp_path):
    import shutil

    shutil.copytree(smoke_dir, tmp_path / "copy")
    return tmp_path / "copy"


def test_a_database_of_another_run_is_refused(mf, smoke_dir, tmp_path):
    copy = _copy(smoke_dir, tmp_path)
    path = copy / "multifidelity.json"
    data = json.loads(path.read_text())
    data["studies"]["full:1"]["n_trials"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=r"mf-full-seed1 .* has \d+ trials, the JSON recorded \d+.*must come from the"):
        mf.main(["--smoke", "--out-dir", str(copy)])


def test_a_re_train_lost_from_the_json_is_adopted_from_the_study(mf, smoke_dir, tmp_path):
    import time

    copy = _copy(smoke_dir, tmp_path)
    path = copy / "multifidelity.json"
    data = json.loads(path.read_text())
    key, source, entry = next((k, s, e) for k, es in data["confirmations"].items() for s, e in es.items()
                              if not e.get("shared_from"))
    del data["confirmations"][key][source]
    path.write_text(json.dumps(data))
    storage = f"sqlite:///{copy / 'multifidelity' / 'studies.db'}"
    before = mf.study_trial_counts(storage)
    bench = mf.Bench(mf.Store.open(path, None), copy / "multifidelity", methods=list(mf.METHODS), seeds=2)
    bench.check_storage()
    done = mf.run_session(bench, t0=time.time(), time_budget=None, max_units=None,
                          summary_path=copy / "multifidelity-summary.json")
    assert done == [f"confirm:{key}:{source}"]
    again = json.loads(path.read_text())["confirmations"][key][source]
    assert again["accuracy"] == entry["accuracy"] and again["seconds"] == entry["seconds"]  # not re-trained
    assert mf.study_trial_counts(storage) == before


def test_only_trials_completed_within_the_time_count(mf):
    import datetime as dt

    import optuna

    t0 = dt.datetime(2026, 1, 1)

    def trial(number, start, end, state=optuna.trial.TrialState.COMPLETE):
        return optuna.trial.FrozenTrial(
            number=number, state=state, value=None, values=[50.0, 100.0] if state == optuna.trial.TrialState.COMPLETE else None,
            datetime_start=t0 + dt.timedelta(seconds=start), datetime_complete=t0 + dt.timedelta(seconds=end),
            params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number)

    class Study:
        trials = [trial(0, 0, 100), trial(1, 100, 419.9), trial(2, 420, 421),
                  trial(3, 50, 60, optuna.trial.TrialState.PRUNED)]

        def get_trials(self, deepcopy=False):
            return self.trials

    done, start = mf.completed_in_time(Study(), 420.0)
    assert [t.number for _, t in done] == [0, 1] and start == t0.timestamp()


def test_the_extra_sh_nsga2_method_runs_apart_from_the_issue_keys(mf, tmp_path):
    assert mf.main(["--smoke", "--methods", "sh_nsga2,full", "--seeds", "1", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "multifidelity-summary.json").read_text())
    assert set(summary["hv"]) == {"sh", "full", "random"} and summary["hv"]["sh"] == [None]
    (extra,) = summary["hv_extra"]["sh_nsga2"]
    assert math.isfinite(extra) and math.isfinite(summary["hv"]["full"][0])
    assert summary["hv_ratio_vs_full_extra"]["sh_nsga2"] == pytest.approx(extra / summary["hv"]["full"][0])
    import optuna

    study = optuna.load_study(study_name="mf-sh_nsga2-seed0",
                              storage=f"sqlite:///{tmp_path / 'multifidelity' / 'studies.db'}")
    # NSGA-II marks each trial it samples with its generation (Optuna's GA samplers' system attribute)
    assert all(any(k.endswith(":generation") for k in t.system_attrs) for t in study.trials), "not NSGA-II"
    data = json.loads((tmp_path / "multifidelity.json").read_text())
    assert data["studies"]["sh_nsga2:0"]["rungs_reached"], "sh_nsga2 ran without rungs"


def test_an_extra_method_leaves_the_issue_keys_as_they_were(mf):
    """An sh_nsga2 study on another GPU, with re-trains of another spread, changes none of the keys
    automation reads, nor the seed noise behind the preset verdict."""
    import copy

    data = json.loads((ROOT / "results" / "benchmarks" / "multifidelity.json").read_text())
    before = mf.summarize(data)
    extra = copy.deepcopy(data)
    extra["settings"]["methods"].append("sh_nsga2")
    rec = dict(copy.deepcopy(data["studies"]["sh:0"]), method="sh_nsga2", study="mf-sh_nsga2-seed0",
               devices=["Another GPU"])
    extra["studies"]["sh_nsga2:0"] = rec
    conf = copy.deepcopy(data["confirmations"]["sh:0"])
    for i, e in enumerate(conf.values()):
        e["accuracy"] += 3.0 if i % 2 else -3.0  # a spread that would move the pooled noise if it counted
        e.pop(mf.SHARED_FROM, None)
    extra["confirmations"]["sh_nsga2:0"] = conf
    after = mf.summarize(extra)
    for key in mf.SUMMARY_KEYS:
        assert after[key] == before[key], key
    assert after["seed_noise"] == before["seed_noise"] and after["complete"] == before["complete"]
    assert math.isfinite(after["hv_extra"]["sh_nsga2"][0]) and after["hv_extra"]["sh_nsga2"][1:] == [None, None]
    assert after["hv_ratio_per_seed_extra"]["sh_nsga2"][0] == pytest.approx(
        after["hv_extra"]["sh_nsga2"][0] / after["hv"]["full"][0])
    assert after["hv_ratio_vs_full_extra"]["sh_nsga2"] is None  # seeds 1 and 2 not run
    assert "sh_nsga2" in after["presets"]["faster_vit_1_224"]["dominated_on_seeds"]


def test_a_resume_defaults_to_the_methods_of_its_file(mf, tmp_path):
    out = tmp_path / "multifidelity.json"
    out.write_text(json.dumps({"benchmark": "multifidelity", "settings": {"methods": ["sh", "full", "random",
                                                                                      "sh_nsga2"]}}))
    assert mf.resolve_args(mf.parse_args(["--out", str(out)])).methods == ["sh", "full", "random", "sh_nsga2"]
    assert mf.resolve_args(mf.parse_args(["--out", str(out), "--methods", "sh"])).methods == ["sh"]
    assert mf.resolve_args(mf.parse_args(["--out", str(tmp_path / "new.json")])).methods == list(mf.METHODS)


def test_ratio_rows_cover_the_seeds_with_all_three_studies(mf):
    hv = {"sh": [2.0, 4.0, 5.0], "full": [1.0, 2.0, None], "random": [2.0, 2.0, 1.0]}
    rows = mf.ratio_rows({"seeds": 3, "hv": hv})
    assert rows[2:] == ["| 0 | 2.000 | 1.000 | 0.500 |", "| 1 | 2.000 | 2.000 | 1.000 |",
                        "| mean of seeds 0, 1 | 2.000 | 1.500 | 0.750 |"]  # seed 2 lacks full: left out


def test_ratio_rows_show_a_dash_where_a_front_is_empty(mf):
    hv = {"sh": [0.0, 4.0], "full": [0.0, 2.0], "random": [0.0, 0.0]}
    rows = mf.ratio_rows({"seeds": 2, "hv": hv})
    assert rows[2:] == ["| 0 | - | - | - |", "| 1 | 2.000 | - | - |", "| mean of seeds 0, 1 | 2.000 | - | - |"]


def test_preset_rows_name_the_seeds_each_method_beat(mf):
    preset = dict(accuracies=[70.0, 71.0], throughput=1234.4, bar=72.5,
                  dominated_on_seeds={"sh": [0, 2], "full": [], "random": [1]})
    rows = mf.preset_rows({"presets": {"p": preset}})
    assert rows[-1] == "| p | 70.00 / 71.00 | 1,234 | 72.50 | 0, 2 / none / 1 |"


def test_search_hv_over_time_reads_the_history(mf):
    history = [[10.0, 1.0, 0], [50.0, 3.0, 4], [90.0, 3.99, 9], [200.0, 4.0, 20]]
    assert [mf.search_hv_at(history, t) for t in (5, 10, 89.9, 1e9)] == [0.0, 1.0, 3.0, 4.0]
    assert mf.seconds_to_reach(history, 0.99) == 90.0 and mf.seconds_to_reach(history, 0.5) == 50.0
    assert mf.seconds_to_reach([], 0.99) is None


def test_anytime_rows_skip_a_seed_without_both_studies(mf):
    by_time = {"seconds": [50.0, 100.0], "hv": {"sh": [[2.0, 3.0], [1.0, 1.0]], "full": [[0.0, 2.0], None],
                                                 "random": [[1.0, 3.0], [2.0, 4.0]]}}
    rows = mf.anytime_rows({"seeds": 2, "hv_search_by_time": by_time})
    assert rows[0] == "| search-value HV ratio, after | 50 s | 100 s |"
    assert rows[2:] == ["| sh / full, seed 0 | - | 1.500 |", "| sh / random, seed 0 | 2.000 | 1.000 |",
                        "| sh / random, seed 1 | 0.500 | 0.250 |"]
