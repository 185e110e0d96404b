"""``nas pareto``: the Pareto set and hypervolume of a study, and its HTML report."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import typer

from ._common import console, err_console, print_json, refuse_typed, user_errors


def print_pareto_rows(rows: Sequence[dict[str, Any]], hv: Optional[float], names: Sequence[str],
                      labels: Optional[Sequence[str]] = None, reference: Optional[Sequence[float]] = None,
                      rule: str = "", note: Optional[str] = None) -> None:
    """The Pareto table: objective columns (labelled with units), params/FLOPs, architecture; then the
    hypervolume and the reference point it was computed for."""
    from rich.table import Table

    from nas.labels import display_scale, format_value

    if not rows:
        console.print("no complete feasible trial yet: empty Pareto set")
        return
    labels = [display_scale(n, lab)[1] for n, lab in zip(names, labels or names)]
    t = Table("trial", *labels, "params (M)", "GFLOPs", "architecture", title="Pareto set")
    for r in rows:
        preset = f" ({r['preset'].replace('faster_vit_', 'FV-').replace('_224', '')})" if r.get("preset") else ""
        t.add_row(f"{r['trial']}{preset}", *(format_value(n, r[n], suffix=False) for n in names),
                  format_value("params", r.get("params"), suffix=False),
                  format_value("flops", r.get("flops"), suffix=False), str(r.get("summary") or ""))
    console.print(t)
    if hv is not None and reference is not None:
        point = ", ".join(f"{n}={v!r}" for n, v in zip(names, reference))
        console.print(f"hypervolume {hv:.6g} w.r.t. reference point ({point}) — {rule}", highlight=False)
    elif hv is not None:
        console.print(f"hypervolume {hv:.6g} (reference: worst feasible value per objective, 10% of its range "
                      f"further; `nas pareto` prints it)", highlight=False)
    elif note:
        console.print(f"no hypervolume: {note}", highlight=False)


FAILURES_SHOWN = 10


def print_failures(failures: Sequence[Mapping[str, Any]]) -> None:
    """Each failed trial's number and recorded reason (the first ``FAILURES_SHOWN``; --json has all)."""
    if not failures:
        return
    console.print(f"{len(failures)} failed trial(s):", highlight=False)
    for f in failures[:FAILURES_SHOWN]:
        console.print(f"  #{f['trial']}: {f.get('error') or 'no reason recorded'}", highlight=False, markup=False)
    if len(failures) > FAILURES_SHOWN:
        console.print(f"  … and {len(failures) - FAILURES_SHOWN} more (`nas pareto --json` lists all)", highlight=False)


def _print_references(presets: Mapping[str, Any]) -> None:
    from nas.front import preset_place  # optuna: imported when the command runs

    for name, p in presets.items():
        where = preset_place(p)
        src = (f"trial {p['trial']}" if p.get("trial") is not None else "not part of the study" if p.get("not_measured")
               else f"not part of the study: {p['note']}" if p.get("note")
               else "not part of the study, measured the same way")
        console.print(f"  {name} ({src}): {where}", highlight=False)


def pareto(
    ctx: typer.Context,
    study: str = typer.Option("default", help="Study name."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    report: Optional[str] = typer.Option(None, help="HTML report path (default results/reports/STUDY.html)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML report."),
    as_json: bool = typer.Option(False, "--json", help="Print the study summary as JSON."),
    reference: Optional[str] = typer.Option(
        None, help="Hypervolume reference point, one value per objective in study order, e.g. "
                   "--reference=-141.5,1988.8 (default: worst feasible value per objective, 10% of its range "
                   "further)."),
    measure_references: bool = typer.Option(
        True, "--measure-references/--no-measure-references",
        help="Measure FasterViT-0..3 the study's way when it lacks them (cached in the study), shown as "
             "'not part of the study'."),
    plotlyjs: str = typer.Option("embed", help="embed: plotly.js inside the HTML (one file, offline); directory: "
                                               "plotly.min.js written beside it (shared by reports of one folder)."),
) -> None:
    """Print the Pareto set (config summary, objectives, trial number) and hypervolume; write the report.

    Every argument is checked before FasterViT-0..3 are measured (minutes on a CPU; progress and an ETA
    on stderr; --no-measure-references skips it)."""
    from pathlib import Path

    from nas.pareto import load_study, objective_names, parse_reference, study_summary, write_report
    from nas.plots import PLOTLYJS_MODES
    from nas.references import MeasureProgress, presets_to_measure, report_references
    from nas.storage import writable_file

    with user_errors():
        if no_report:
            refuse_typed(ctx, ("report", "plotlyjs"), "--no-report")
        if plotlyjs not in PLOTLYJS_MODES:
            raise ValueError(f"--plotlyjs {plotlyjs!r} must be one of {', '.join(PLOTLYJS_MODES)}")
        target = None if no_report else writable_file(Path(report) if report else Path("results") / "reports" /
                                                      f"{study}.html", "--report")
        st = load_study(study, storage)
        ref = parse_reference(reference, objective_names(st)) if reference is not None else None
        progress = (MeasureProgress(presets_to_measure(st), lambda line: err_console.print(line, highlight=False))
                    if measure_references else None)
        refs = report_references(st, measure=measure_references, on_progress=progress)
        summary = study_summary(st, ref, refs)
        path = None
        if target is not None:
            path = write_report(st, target, reference=ref, references=refs, plotlyjs=plotlyjs)
    from nas.confirm import DIFFERENCE_BOUND_SDS, noise_marks

    noise = noise_marks(st)  # None until `nas confirm` re-trained front points
    if as_json:
        summary["report"] = str(path) if path else None
        summary["noise"] = noise
        print_json(summary)
        return
    console.print(f"study [bold]{study}[/]: {summary['n_complete']} complete, {summary['n_failed']} failed, "
                  f"{summary['n_pruned']} pruned; objectives: "
                  f"{'; '.join(f'{n} = {lab}' for n, lab in summary['labels'].items())}", highlight=False)
    mixed = summary["mixed_measurements"]
    if mixed:
        err_console.print(f"[bold yellow]warning: the complete trials were measured with different settings "
                          f"({', '.join(mixed['differ'])} differ): trials {' vs '.join(map(str, mixed['groups']))}; "
                          f"their values do not compare, and neither does this front[/]", highlight=False)
    print_pareto_rows(summary["pareto"], summary["hypervolume"], summary["objectives"],
                      list(summary["labels"].values()), summary["reference_point"], summary["reference_point_rule"],
                      summary.get("hypervolume_note"))
    if not summary["pareto"]:
        print_failures(summary["failures"])
    _print_references(summary["presets"])
    if noise is not None:
        close = [p["trial"] for p in noise["points"] if p["within_noise"]]
        console.print(f"seed noise {noise['seed_noise']:.2f} accuracy points (nas confirm): "
                      + (f"trials {close} differ from a front neighbour by less than "
                         f"{DIFFERENCE_BOUND_SDS * noise['seed_noise']:.2f}, the 95 % bound of two seeds "
                         "(1.96 x sqrt(2) x it): not shown to differ" if close else
                         f"every front neighbour differs by more than {DIFFERENCE_BOUND_SDS * noise['seed_noise']:.2f}"
                         " (the 95 % bound of two seeds)"), highlight=False)
    if path:
        console.print(f"report: {path}", highlight=False)
