"""``nas pareto``: the Pareto set and hypervolume of a study, and its HTML report."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import typer

from ._common import console, print_json, user_errors


def print_pareto_rows(rows: Sequence[dict[str, Any]], hv: Optional[float], names: Sequence[str]) -> None:
    """The Pareto table: objective columns, then params/FLOPs and the architecture summary."""
    from rich.table import Table

    if not rows:
        console.print("no complete feasible trial yet: empty Pareto set")
        return
    t = Table("trial", *names, "params (M)", "GFLOPs", "architecture", title="Pareto set")
    for r in rows:
        label = f"{r['trial']}" + (f" ({r['preset'].replace('faster_vit_', 'FV-').replace('_224', '')})" if r.get("preset") else "")
        t.add_row(label, *(f"{r[n]:.4g}" for n in names), f"{(r.get('params') or 0) / 1e6:.2f}",
                  f"{(r.get('flops') or 0) / 1e9:.2f}", str(r.get("summary") or ""))
    console.print(t)
    if hv is not None:
        console.print(f"hypervolume {hv:.6g} (reference: worst feasible value per objective, 10% of its range "
                      f"further; see `nas pareto --json`)", highlight=False)


def pareto(
    study: str = typer.Option("default", help="Study name."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///results/nas.db)."),
    report: Optional[str] = typer.Option(None, help="HTML report path (default results/reports/STUDY.html)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML report."),
    as_json: bool = typer.Option(False, "--json", help="Print the study summary as JSON."),
) -> None:
    """Print the Pareto set (config summary, objectives, trial number) and hypervolume; write the report."""
    from pathlib import Path

    from nas.pareto import load_study, study_summary, write_report

    with user_errors():
        st = load_study(study, storage)
        summary = study_summary(st)
    path = None
    if not no_report:
        path = write_report(st, Path(report) if report else Path("results") / "reports" / f"{study}.html")
    from nas.confirm import noise_marks

    noise = noise_marks(st)  # None until `nas confirm` re-trained front points
    if as_json:
        summary["report"] = str(path) if path else None
        summary["noise"] = noise
        print_json(summary)
        return
    console.print(f"study [bold]{study}[/]: {summary['n_complete']} complete, {summary['n_failed']} failed, "
                  f"{summary['n_pruned']} pruned; objectives {', '.join(summary['objectives'])}", highlight=False)
    print_pareto_rows(summary["pareto"], summary["hypervolume"], summary["objectives"])
    for name, p in summary["presets"].items():
        where = "on the front" if p["on_front"] else f"dominated by trials {p['dominated_by']}" if p["dominated_by"] else "not dominated by the front (infeasible?)"
        console.print(f"  {name} (trial {p['trial']}): {where}", highlight=False)
    if noise is not None:
        close = [p["trial"] for p in noise["points"] if p["within_noise"]]
        console.print(f"seed noise {noise['seed_noise']:.2f} accuracy points (nas confirm): "
                      + (f"trials {close} are within it of a front neighbour (not shown to differ)" if close
                         else "every front neighbour differs by more"), highlight=False)
    if path:
        console.print(f"report: {path}", highlight=False)
