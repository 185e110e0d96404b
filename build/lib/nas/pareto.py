"""Pareto set, hypervolume and the HTML/PNG report of a study (Optuna's own functions underneath).

Hypervolume reference point (documented, reproducible): for each objective, the worst value among
the study's complete feasible trials, moved 10% of that objective's observed range further in the
bad direction (so the worst Pareto point still adds volume). Pass ``reference`` to fix it, e.g.
to compare two studies on one scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

__all__ = ["objective_names", "feasible_trials", "pareto_trials", "pareto_rows", "reference_point", "hypervolume",
           "hypervolume_history", "write_report", "study_summary", "load_study", "maximize_flags"]


def load_study(study: str, storage: Any = None) -> Any:
    """Load a study by name; the error lists the studies in that storage."""
    import optuna

    from .storage import get_storage

    st = get_storage(storage)
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        raise ValueError(f"no study {study!r} in this storage; studies there: {names or 'none'}") from None


def objective_names(study: Any) -> list[str]:
    return list(study.metric_names or study.user_attrs.get("objectives") or
                [f"objective_{i}" for i in range(len(study.directions))])


def maximize_flags(study: Any) -> list[bool]:
    """Per objective: True where the study maximises it."""
    import optuna

    return [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]


def feasible_trials(study: Any) -> list[Any]:
    import optuna

    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if all(v <= 0 for v in t.constraints.values()):
            out.append(t)
    return out


def pareto_trials(study: Any) -> list[Any]:
    """Optuna's Pareto set (constraints honoured), sorted by the first objective."""
    return sorted(study.best_trials, key=lambda t: t.values[0])


def reference_point(study: Any, trials: Optional[Sequence[Any]] = None) -> Optional[list[float]]:
    trials = feasible_trials(study) if trials is None else trials
    if not trials:
        return None
    ref = []
    for i, maximize in enumerate(maximize_flags(study)):
        vals = [t.values[i] for t in trials]
        lo, hi = min(vals), max(vals)
        margin = 0.1 * (hi - lo) if hi > lo else 0.1 * (abs(hi) or 1.0)
        ref.append(lo - margin if maximize else hi + margin)
    return ref


def _loss(values: Sequence[float], maximize: Sequence[bool]) -> list[float]:
    return [-v if m else v for v, m in zip(values, maximize)]


def hypervolume(study: Any, reference: Optional[Sequence[float]] = None,
                trials: Optional[Sequence[Any]] = None) -> Optional[float]:
    """Hypervolume of the feasible trials w.r.t. ``reference`` (default: ``reference_point``)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # Optuna's exact WFG implementation

    trials = feasible_trials(study) if trials is None else trials
    ref = list(reference) if reference is not None else reference_point(study, trials)
    if ref is None or not trials:
        return None
    maximize = maximize_flags(study)
    ref_loss = np.asarray(_loss(ref, maximize), dtype=float)
    pts = np.asarray([_loss(t.values, maximize) for t in trials], dtype=float)
    pts = pts[np.all(pts <= ref_loss, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(compute_hypervolume(pts, ref_loss))


def hypervolume_history(study: Any, reference: Optional[Sequence[float]] = None) -> list[tuple[int, float]]:
    """(trial number, hypervolume so far) after each complete feasible trial."""
    trials = sorted(feasible_trials(study), key=lambda t: t.number)
    ref = list(reference) if reference is not None else reference_point(study, trials)
    out = []
    for i in range(len(trials)):
        out.append((trials[i].number, hypervolume(study, ref, trials[: i + 1]) or 0.0))
    return out


def _row(t: Any, names: Sequence[str]) -> dict[str, Any]:
    row = dict(trial=t.number, preset=t.user_attrs.get("preset"), arch_id=t.user_attrs.get("arch_id"),
               summary=t.user_attrs.get("summary"), params=t.user_attrs.get("params"), flops=t.user_attrs.get("flops"))
    row.update(zip(names, t.values))
    return row


def pareto_rows(study: Any) -> list[dict[str, Any]]:
    names = objective_names(study)
    return [_row(t, names) for t in pareto_trials(study)]


def _presets(study: Any) -> list[Any]:
    return [t for t in feasible_trials(study) if t.user_attrs.get("preset")]


def dominates_presets(study: Any) -> dict[str, Any]:
    """For each reference preset trial: is it on the front, or which Pareto trials dominate it."""
    from optuna.study._multi_objective import _dominates

    front = pareto_trials(study)
    out = {}
    for p in _presets(study):
        by = [t.number for t in front if t.number != p.number and _dominates(t, p, study.directions)]
        out[p.user_attrs["preset"]] = dict(trial=p.number, on_front=any(t.number == p.number for t in front),
                                           dominated_by=by)
    return out


def study_summary(study: Any, reference: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """A JSON-ready summary: settings, counts, Pareto rows, hypervolume (+ reference), presets."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    ref = list(reference) if reference is not None else reference_point(study)
    return dict(
        study=study.study_name, objectives=objective_names(study),
        directions=["maximize" if m else "minimize" for m in maximize_flags(study)],
        settings=study.user_attrs.get("settings"), proxy=study.user_attrs.get("proxy"),
        n_trials=len(trials), n_complete=sum(t.state == states.COMPLETE for t in trials),
        n_failed=sum(t.state == states.FAIL for t in trials), n_pruned=sum(t.state == states.PRUNED for t in trials),
        n_feasible=len(feasible_trials(study)), reference_point=ref, hypervolume=hypervolume(study, ref),
        pareto=pareto_rows(study), presets=dominates_presets(study),
        devices=sorted({str(t.user_attrs.get("device")) for t in trials if t.user_attrs.get("device")}),
        failures=[dict(trial=t.number, error=t.user_attrs.get("error")) for t in trials if t.state == states.FAIL],
    )


def _label(t: Any) -> str:
    return t.user_attrs.get("preset") or f"#{t.number}"


def write_report(study: Any, path: Path | str, *, reference: Optional[Sequence[float]] = None,
                 png: bool = True, plotlyjs: str = "embed") -> Optional[Path]:
    """Write a self-contained HTML report (plotly) and, with ``png``, a PNG of the front.

    Contents: the Pareto front over all trials (Optuna's plot), FasterViT-0..3 trials labelled,
    the hypervolume history (Optuna's plot) with its reference point, the Pareto table, failures.
    ``plotlyjs="embed"`` makes the file self-contained (~5 MB, works offline); ``"cdn"`` links
    plotly.js instead (small, for committed reports). Returns None without a feasible trial.
    """
    if plotlyjs not in ("embed", "cdn"):
        raise ValueError(f"plotlyjs={plotlyjs!r} must be 'embed' or 'cdn'")
    import warnings

    import optuna
    import plotly.graph_objects as go

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feas = feasible_trials(study)
    if not feas:
        return None
    names = objective_names(study)
    ref = list(reference) if reference is not None else reference_point(study)
    front = optuna.visualization.plot_pareto_front(study, target_names=names, include_dominated_trials=True,
                                                   constraints_func=None)
    presets = _presets(study)
    if presets and len(names) in (2, 3):
        coords = {"x": [t.values[0] for t in presets], "y": [t.values[1] for t in presets]}
        cls = go.Scatter if len(names) == 2 else go.Scatter3d
        if len(names) == 3:
            coords["z"] = [t.values[2] for t in presets]
        front.add_trace(cls(**coords, mode="markers+text", text=[_label(t) for t in presets], textposition="top center",
                            marker=dict(symbol="diamond", size=12, color="black"), name="FasterViT presets"))
    front.update_layout(title=f"Pareto front — study {study.study_name}")
    hv_fig = optuna.visualization.plot_hypervolume_history(study, reference_point=ref)
    hv_fig.update_layout(title=f"Hypervolume history (reference point {', '.join(f'{n}={v:.4g}' for n, v in zip(names, ref))})")
    summary = study_summary(study, ref)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in ["trial", "preset", *names, "params", "flops", "summary"])
        + "</tr>" for r in summary["pareto"])
    header = "".join(f"<th>{k}</th>" for k in ["trial", "preset", *names, "params", "flops", "architecture"])
    fails = "".join(f"<li>#{f['trial']}: {f['error']}</li>" for f in summary["failures"]) or "<li>none</li>"
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>nas report {study.study_name}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style>
</head><body><h1>Study {study.study_name}</h1>
<p>objectives: {', '.join(f'{n} ({d})' for n, d in zip(names, summary['directions']))}; proxy: {summary['proxy']};
trials: {summary['n_trials']} ({summary['n_complete']} complete, {summary['n_failed']} failed, {summary['n_pruned']} pruned);
hypervolume: {_fmt(summary['hypervolume'])} w.r.t. reference point {ref} (worst feasible value per objective, 10% of the range further);
devices: {', '.join(summary['devices'])}</p>
{front.to_html(full_html=False, include_plotlyjs=True if plotlyjs == "embed" else "cdn")}
{hv_fig.to_html(full_html=False, include_plotlyjs=False)}
<h2>Pareto set</h2><table><tr>{header}</tr>{rows}</table>
<h2>Reference presets</h2><pre>{json.dumps(summary['presets'], indent=1)}</pre>
<h2>Failed trials</h2><ul>{fails}</ul></body></html>"""
    path.write_text(html)
    if png:
        _write_png(study, path.with_suffix(".png"), names, presets)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def _write_png(study: Any, path: Path, names: Sequence[str], presets: Sequence[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feas = feasible_trials(study)
    front = pareto_trials(study)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.scatter([t.values[0] for t in feas], [t.values[1] for t in feas], s=12, c="#bbb", label="trials")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", c="#1f77b4", ms=5, label="Pareto front")
    for t in presets:
        ax.scatter([t.values[0]], [t.values[1]], marker="D", c="k", s=30)
        ax.annotate(_label(t).replace("faster_vit_", "FV-").replace("_224", ""), (t.values[0], t.values[1]),
                    fontsize=8, xytext=(3, 3), textcoords="offset points")
    proxy = study.user_attrs.get("proxy")
    label = (lambda n: f"{n} (proxy: {proxy})" if n == "accuracy" and proxy else n)
    ax.set_xlabel(label(names[0]))
    ax.set_ylabel(label(names[1]))
    ax.legend(fontsize=8)
    ax.set_title(f"{study.study_name}: {names[0]} vs {names[1]}")
    hist = hypervolume_history(study)
    axes[1].plot([n for n, _ in hist], [h for _, h in hist], "-", c="#d62728")
    axes[1].set_xlabel("trial")
    axes[1].set_ylabel("hypervolume")
    axes[1].set_title("hypervolume history")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_json(study: Any, path: Path | str, reference: Optional[Mapping[str, float]] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(study_summary(study, None if reference is None else list(reference.values())),
                               indent=2, default=str))
    return path
