"""`nas pareto` and its report: labelled axes, self-contained HTML, --reference, FasterViT reference
points measured apart, escaped errors, portable study attributes, the README's hypervolumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.labels import format_value, objective_label
from nas.settings import settings_for_study
from nas.pareto import hypervolume, parse_reference, study_summary, write_report
from tests.spaces import tiny_space, write_space

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "results" / "benchmarks" / "search" / "studies.db"


@pytest.fixture(scope="module")
def cheap_study(tmp_path_factory):
    """A 4-trial CPU study on params x flops (instant to measure: no presets enqueued on the CPU)."""
    d = tmp_path_factory.mktemp("pareto")
    write_space(d / "tiny.yaml", tiny_space())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        r = runner.invoke(app, ["search", "--space", "tiny.yaml", "--device", "cpu", "--quiet", "--objective",
                                "params,flops", "--trials", "4", "--study", "cheap", "--seed", "1"])
        assert r.exit_code == 0, r.output
    return d


def _pareto(d: Path, *args: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        return runner.invoke(app, ["pareto", "--study", "cheap", *args])


def test_labels_say_what_each_axis_is():
    train = dict(proxy="train", train_epochs=3, data="fashion-mnist")
    assert objective_label("accuracy", train) == "top-1 % (train, 3 epochs, fashion-mnist)"
    assert objective_label("accuracy", dict(proxy="jacob_cov")) == "jacob_cov score"
    thr = objective_label("throughput", dict(batch_size=128, dtype="fp16", profile_mode="cudagraph", space="default"))
    assert thr == "throughput, img/s (batch 128, 224 px, fp16, cudagraph)"
    assert format_value("params", 31.4e6) == "31.40 M" and format_value("flops", 3.3e9) == "3.30 G"
    assert format_value("throughput", 5802.4) == "5,802"


def test_study_attributes_carry_no_absolute_paths(tmp_path):
    s = settings_for_study(dict(storage="sqlite:////tmp/svr/studies.db", results_dir="/tmp/svr",
                               data_dir=str(tmp_path / "data"), proxy="jacob_cov"), cwd=str(tmp_path))
    assert s == dict(storage="sqlite:///…/studies.db", results_dir="…/svr", data_dir="data", proxy="jacob_cov")


def test_new_study_names_its_metrics_and_stores_no_absolute_path(cheap_study):
    st = optuna.load_study(study_name="cheap", storage=f"sqlite:///{cheap_study}/results/nas.db")
    assert st.user_attrs["objectives"] == ["params", "flops"]
    assert st.metric_names == ["params (count)", "FLOPs (fvcore MACs, 1 image, 64 px)"]
    text = json.dumps(st.user_attrs)
    assert str(cheap_study) not in text and "/tmp" not in text


def test_pareto_report_is_labelled_self_contained_and_shows_fastervit(cheap_study):
    r = _pareto(cheap_study, "--report", "rep.html", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["labels"] == {"params": "params (count)", "flops": "FLOPs (fvcore MACs, 1 image, 64 px)"}
    refs = {p["preset"]: p for p in summary["reference_points"]}
    assert sorted(refs) == ["faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224", "faster_vit_3_224"]
    assert all(not p["in_study"] and p["values"] for p in refs.values())
    assert refs["faster_vit_0_224"]["values"][0] == pytest.approx(31.4e6, rel=0.02)  # measured, not looked up
    html = (cheap_study / "rep.html").read_text()
    assert re.findall(r"<script[^>]*\ssrc=", html) == []  # nothing loaded from anywhere (no CDN)
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # plotly.js inside the page
    assert "params (M)" in html and "GFLOPs (fvcore GMACs, 1 image, 64 px)" in html
    assert "not part of the study" in html and "Pareto front" in html
    assert (cheap_study / "rep.png").stat().st_size > 10_000
    st = optuna.load_study(study_name="cheap", storage=f"sqlite:///{cheap_study}/results/nas.db")
    assert set(st.user_attrs["reference_points"]) == set(refs)  # measured once: cached in the study


def test_reference_flag_sets_the_point_and_is_printed(cheap_study):
    st = optuna.load_study(study_name="cheap", storage=f"sqlite:///{cheap_study}/results/nas.db")
    worst = [max(t.values[i] for t in st.best_trials) for i in range(2)]
    ref = [2 * worst[0], 2 * worst[1]]
    r = _pareto(cheap_study, "--no-report", "--no-measure-references", f"--reference={ref[0]},{ref[1]}")
    assert r.exit_code == 0, r.output
    printed = re.search(r"hypervolume (\S+) w\.r\.t\. reference point \(params=(\S+), flops=(\S+)\)",
                        " ".join(r.output.split()))
    assert printed, r.output
    assert float(printed.group(1)) == pytest.approx(hypervolume(st, ref), rel=1e-5)
    assert [float(printed.group(2).rstrip(",")), float(printed.group(3))] == ref
    default = study_summary(st)
    assert default["reference_point"] != ref and default["hypervolume"] != pytest.approx(hypervolume(st, ref))
    bad = _pareto(cheap_study, "--no-report", "--reference=1")
    assert bad.exit_code == 2 and "2 objectives (params, flops)" in " ".join(bad.output.split())
    with pytest.raises(ValueError, match="must be a number"):
        parse_reference("a,b", ["x", "y"])


def test_error_text_is_escaped_in_the_report(tmp_path):
    st = optuna.create_study(directions=["minimize", "minimize"], study_name="esc")
    st.set_user_attr("objectives", ["params", "flops"])
    for i in range(3):
        st.add_trial(optuna.trial.create_trial(values=[float(i + 1), float(3 - i)], user_attrs={"summary": "<b>x</b>"}))
    st.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                           user_attrs={"error": "<script>alert(1)</script> & more"}))
    html = write_report(st, tmp_path / "r.html", png=False).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<b>x</b>" not in html


def _readme_hypervolumes() -> list[tuple[str, str, str, float]]:
    """(study, storage, reference, quoted hypervolume) for every `nas pareto ... --reference=` the README cites."""
    text = (ROOT / "README.md").read_text()
    cmds = re.findall(r"nas pareto --study (\S+) --storage (\S+) --reference=(\S+)", text)
    out = []
    for study, storage, ref in cmds:
        row = re.search(rf"^\|[^\n]*`{re.escape(study)}`[^\n]*?\| ([0-9.]+e[0-9]+) \|", text, re.M)
        assert row, f"README cites {study} but quotes no hypervolume for it in a table row"
        out.append((study, storage.strip("`"), ref.strip("`"), float(row.group(1))))
    return out


def test_readme_hypervolumes_are_what_the_cited_commands_print(monkeypatch):
    cited = _readme_hypervolumes()
    assert len(cited) >= 2, "the README's search evidence should cite its commands"
    monkeypatch.chdir(ROOT)
    for study, storage, ref, quoted in cited:
        assert storage == "sqlite:///results/benchmarks/search/studies.db"
        r = runner.invoke(app, ["pareto", "--study", study, "--storage", storage, f"--reference={ref}", "--json",
                                "--no-report", "--no-measure-references"])
        assert r.exit_code == 0, r.output
        hv = json.loads(r.stdout)["hypervolume"]
        digits = len(f"{quoted:e}".split("e")[0].replace(".", "").rstrip("0"))
        assert f"{hv:.{max(digits, 2) - 1}e}".replace("e+0", "e") == f"{quoted:.{max(digits, 2) - 1}e}".replace("e+0", "e")


def _old_style_study(tmp_path: Path):
    """A study as `nas search` made them before labels: metric names = short names, absolute paths."""
    st = optuna.create_study(directions=["maximize", "maximize"], study_name="old", storage=f"sqlite:///{tmp_path}/o.db")
    st.set_metric_names(["accuracy", "throughput"])
    st.set_user_attr("proxy", "train")
    st.set_user_attr("settings", dict(proxy="train", train_epochs=2, data="fashion-mnist", batch_size=64, dtype="bf16",
                                      profile_mode="eager", space="default", storage="sqlite:////srv/x/nas.db",
                                      results_dir="/srv/x"))
    st.add_trial(optuna.trial.create_trial(values=[85.0, 1000.0], user_attrs={"profile": {"resolution": [224, 224]}}))
    return st


def test_dashboard_names_the_metrics_of_an_older_study(tmp_path, capsys):
    from nas.commands.dashboard import _label_studies

    _old_style_study(tmp_path)
    _label_studies(f"sqlite:///{tmp_path}/o.db")
    assert "metric names set to top-1 % (train, 2 epochs, fashion-mnist)" in " ".join(capsys.readouterr().out.split())
    st = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/o.db")
    assert st.metric_names == ["top-1 % (train, 2 epochs, fashion-mnist)",
                               "throughput, img/s (batch 64, 224 px, bf16, eager)"]
    assert st.user_attrs["objectives"] == ["accuracy", "throughput"]
    assert "/srv" not in json.dumps(st.user_attrs)
    _label_studies(f"sqlite:///{tmp_path}/o.db")
    assert capsys.readouterr().out == ""  # once


def test_export_card_source_carries_the_labels(tmp_path):
    from nas.export import _trial_source

    st = _old_style_study(tmp_path)
    src = _trial_source(st, st.trials[0], f"sqlite:///{tmp_path}/o.db", None)
    assert src["labels"] == {"accuracy": "top-1 % (train, 2 epochs, fashion-mnist)",
                             "throughput": "throughput, img/s (batch 64, 224 px, bf16, eager)"}


def _made_study(tmp_path: Path, trials: list) -> str:
    """A params x flops study in a fresh SQLite file holding ``trials``; returns the storage URL."""
    url = f"sqlite:///{tmp_path}/made.db"
    st = optuna.create_study(directions=["minimize", "minimize"], study_name="made", storage=url)
    st.set_user_attr("objectives", ["params", "flops"])
    for t in trials:
        st.add_trial(t)
    return url


def _pareto_cli(url: str, *args: str):
    r = runner.invoke(app, ["pareto", "--study", "made", "--storage", url, "--no-measure-references", *args])
    assert r.exit_code == 0, r.output
    return r


def test_one_trial_gives_no_hypervolume_and_says_why(tmp_path):
    url = _made_study(tmp_path, [optuna.trial.create_trial(values=[2e6, 3e8])])
    text = " ".join(_pareto_cli(url, "--no-report").output.split())
    assert not re.search(r"hypervolume [0-9]", text) and "w.r.t. reference point" not in text
    assert "no hypervolume: one complete feasible trial (#0) gives no range" in text and "--reference" in text
    summary = json.loads(_pareto_cli(url, "--no-report", "--json").output)
    assert summary["hypervolume"] is None and summary["reference_point"] is None
    assert "one complete feasible trial" in summary["hypervolume_note"]
    given = json.loads(_pareto_cli(url, "--no-report", "--json", "--reference=4e6,4e8").output)
    assert given["hypervolume"] == pytest.approx(2e6 * 1e8) and given["hypervolume_note"] is None
    st = optuna.load_study(study_name="made", storage=url)
    html = write_report(st, tmp_path / "one.html", png=True, plotlyjs="directory").read_text()
    assert "No hypervolume: one complete feasible trial" in html and (tmp_path / "one.png").exists()


def test_flat_objective_gives_no_default_reference(tmp_path):
    url = _made_study(tmp_path, [optuna.trial.create_trial(values=[1e6, v]) for v in (3e8, 2e8)])
    st = optuna.load_study(study_name="made", storage=url)
    assert hypervolume(st) is None
    assert "same params" in study_summary(st)["hypervolume_note"]


def test_all_failed_study_lists_each_failure_and_its_reason(tmp_path):
    from nas import record as R

    fail = optuna.trial.TrialState.FAIL
    url = _made_study(tmp_path, [optuna.trial.create_trial(state=fail, user_attrs={R.ERROR: "CUDA out of memory [x]"}),
                                 optuna.trial.create_trial(state=fail, user_attrs={R.ERROR: "NaN proxy score"}),
                                 optuna.trial.create_trial(state=fail)])
    text = " ".join(_pareto_cli(url, "--no-report").output.split())
    assert "empty Pareto set" in text and "3 failed trial(s)" in text
    assert "#0: CUDA out of memory [x]" in text and "#1: NaN proxy score" in text and "#2: no reason recorded" in text
    summary = json.loads(_pareto_cli(url, "--no-report", "--json").output)
    assert summary["failures"] == [dict(trial=0, error="CUDA out of memory [x]"), dict(trial=1, error="NaN proxy score"),
                                   dict(trial=2, error=None)]


def test_confirmed_front_shows_seed_noise_error_bars_and_retrained_values(tmp_path):
    """After `nas confirm`, the report draws +-1 seed sd on the accuracy axis, the re-trained points,
    and says per front point whether it is within the noise of a neighbour."""
    from nas import record as R

    url = f"sqlite:///{tmp_path}/conf.db"
    st = optuna.create_study(directions=["maximize", "maximize"], study_name="conf", storage=url)
    st.set_user_attr("objectives", ["accuracy", "throughput"])
    st.set_user_attr(R.STUDY_PROXY, "train")
    for acc, thr in ((70.0, 1000.0), (70.5, 900.0), (75.0, 500.0)):
        st.add_trial(optuna.trial.create_trial(values=[acc, thr]))
    st.set_user_attr(R.STUDY_CONFIRMATIONS, {
        "0": [dict(seed=1, accuracy=71.0, search_accuracy=70.0)],
        "2": [dict(seed=1, accuracy=74.0, search_accuracy=75.0)]})
    html = write_report(st, tmp_path / "conf.html", png=True, plotlyjs="directory").read_text()
    # seed noise: sd of the (re-trained - search) differences (+1, -1) / sqrt(2) = 1.00
    assert "Seed noise 1.00 accuracy points" in html
    assert "error bars ±1.00" in html.replace("\\u00b1", "±")  # the legend (plotly's JSON escapes ±)
    assert '"error_x":' in html and "re-trained with another seed (mean)" in html
    table = html[html.index("<h2>Pareto set</h2>"):html.index("<h2>FasterViT reference points</h2>")]
    assert "71.00" in table and "74.00" in table and "not shown to differ from a neighbour (95 %)" in table
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]
    marks = [re.findall(r"<td[^>]*>([^<]*)</td>", r)[-1] for r in rows]
    assert marks.count("yes") == 2 and marks.count("no") == 1  # 70.0 vs 70.5 < 2.77 (1.96 sqrt2 sd); 75.0 is 4.5 away
    assert (tmp_path / "conf.png").stat().st_size > 0


def test_presets_are_not_measured_on_another_device_than_the_trials(cheap_study):
    from nas import record as R
    from nas.references import measure_references

    src = optuna.load_study(study_name="cheap", storage=f"sqlite:///{cheap_study}/results/nas.db")

    def on_an_h100(objectives):
        other = optuna.create_study(directions=src.directions)
        for k, v in src.user_attrs.items():
            if k != R.STUDY_REFERENCES:
                other.set_user_attr(k, v)
        other.set_user_attr("objectives", objectives)
        for t in src.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
            other.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, values=t.values,
                user_attrs=dict(t.user_attrs, **{R.DEVICE: "NVIDIA H100 80GB HBM3"})))
        return other

    points = measure_references(on_an_h100(["throughput", "params"]))  # a measured throughput: not here
    assert len(points) == 4 and all(p.values is None for p in points)
    assert all("measured on NVIDIA H100 80GB HBM3, this machine is cpu" in p.note for p in points)
    points = measure_references(on_an_h100(["params", "flops"]))  # the same on every device: measured here
    assert len(points) == 4 and all(p.values for p in points)


@pytest.mark.parametrize("flag, measured", [("--measure-references", True), ("--no-measure-references", False)])
def test_search_measures_the_presets_for_its_report_unless_told_not_to(tmp_path, monkeypatch, flag, measured):
    from nas import record as R

    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["search", "--space", "default", "--device", "cpu", "--objective",
                            "params,flops", "--trials", "2", "--study", "refs", "--seed", "1", flag])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert ("measuring 4 FasterViT preset(s)" in text and "faster_vit_3_224 (4/4, ETA" in text) is measured
    st = optuna.load_study(study_name="refs", storage=f"sqlite:///{tmp_path}/results/nas.db")
    assert bool(st.user_attrs.get(R.STUDY_REFERENCES)) is measured
    assert st.user_attrs[R.STUDY_SETTINGS]["measure_references"] is measured
