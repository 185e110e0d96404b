"""Pareto set, hypervolume and the HTML/PNG report of a study (Optuna's public API underneath; the
hypervolume itself is ``nas.hypervolume``, exact, as Optuna has it only in a private module).

Hypervolume reference point (documented, reproducible): for each objective, the worst value among
the study's complete feasible trials, moved 10% of that objective's observed range further in the
bad direction (so the worst Pareto point still adds volume). Pass ``reference`` (``nas pareto
--reference v1,v2``) to fix it, e.g. to compare two studies on one scale; the point used is printed.
Without a range (one feasible trial, or every trial sharing an objective's value) there is no
default point and no hypervolume: ``reference_problem`` says why, and ``--reference`` gives one.

Axes and columns carry ``objective_labels`` (``nas.objectives.objective_label``): units, batch,
resolution, dtype, mode, and what the accuracy axis is (trained top-1 or a proxy's score).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

__all__ = ["objective_names", "objective_labels", "feasible_trials", "pareto_trials", "pareto_rows", "reference_point",
           "parse_reference", "hypervolume", "hypervolume_history", "write_report", "study_summary", "load_study",
           "maximize_flags", "study_references", "ReferencePoint", "reference_problem", "failure_rows"]


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
    """The objectives' short names (``accuracy``, ``throughput``...): keys of rows and JSON."""
    return list(study.user_attrs.get("objectives") or study.metric_names or
                [f"objective_{i}" for i in range(len(study.directions))])


def objective_labels(study: Any) -> list[str]:
    """What each objective is, with its unit: the study's metric names where they say more than the
    short names (studies made since labels exist), else built from its settings and first profile."""
    names = objective_names(study)
    metric = list(study.metric_names or [])
    if len(metric) == len(names) and metric != names:
        return metric
    from .objectives import metric_labels

    settings = dict(study.user_attrs.get("settings") or {})
    settings.setdefault("proxy", study.user_attrs.get("proxy"))
    return metric_labels(names, settings, resolution=_measured_resolution(study))


def _measured_resolution(study: Any) -> Optional[int]:
    """The input size the profiler used, when every profiled trial used the same square one."""
    seen = set()
    for t in feasible_trials(study):
        res = (t.user_attrs.get("profile") or {}).get("resolution")
        if res:
            seen.add(tuple(res))
    if len(seen) == 1:
        h, w = seen.pop()
        return h if h == w else None
    return None


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


def reference_problem(study: Any, trials: Optional[Sequence[Any]] = None) -> Optional[str]:
    """Why the default reference point cannot be placed (None when it can): it needs a range of
    values in every objective; a point made up from one value would give a meaningless hypervolume."""
    trials = feasible_trials(study) if trials is None else trials
    how = "pass --reference with one value per objective for a hypervolume"
    if not trials:
        return "no complete feasible trial"
    if len(trials) == 1:
        return f"one complete feasible trial (#{trials[0].number}) gives no range to place a reference point; {how}"
    flat = [n for i, n in enumerate(objective_names(study)) if len({t.values[i] for t in trials}) == 1]
    if flat:
        return (f"every feasible trial has the same {', '.join(flat)}: no range to place a reference point; {how}")
    return None


def reference_point(study: Any, trials: Optional[Sequence[Any]] = None) -> Optional[list[float]]:
    """The default reference point (module docstring); None when ``reference_problem`` names a reason."""
    trials = feasible_trials(study) if trials is None else trials
    if reference_problem(study, trials) is not None:
        return None
    ref = []
    for i, maximize in enumerate(maximize_flags(study)):
        vals = [t.values[i] for t in trials]
        lo, hi = min(vals), max(vals)
        margin = 0.1 * (hi - lo)
        ref.append(lo - margin if maximize else hi + margin)
    return ref


def _loss(values: Sequence[float], maximize: Sequence[bool]) -> list[float]:
    return [-v if m else v for v, m in zip(values, maximize)]


def hypervolume(study: Any, reference: Optional[Sequence[float]] = None,
                trials: Optional[Sequence[Any]] = None) -> Optional[float]:
    """Hypervolume of the feasible trials w.r.t. ``reference`` (default: ``reference_point``; None
    without one: ``reference_problem``)."""
    import numpy as np

    from .hypervolume import compute_hypervolume

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
    out: list[tuple[int, float]] = []
    if ref is None:
        return out
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


@dataclass
class ReferencePoint:
    """A FasterViT preset shown on a report: a trial of the study, or measured apart the same way
    (``in_study=False``: "not part of the study"), or not measurable here (``values=None``, ``note`` why)."""

    preset: str
    values: Optional[list[float]]
    in_study: bool
    trial: Optional[int] = None
    note: str = ""
    params: Optional[float] = None
    flops: Optional[float] = None

    @property
    def short(self) -> str:
        return self.preset.replace("faster_vit_", "FasterViT-").replace("_224", "")

    def to_dict(self) -> dict[str, Any]:
        return dict(preset=self.preset, values=self.values, in_study=self.in_study, trial=self.trial, note=self.note,
                    params=self.params, flops=self.flops)


def study_references(study: Any, extra: Sequence[ReferencePoint] = ()) -> list[ReferencePoint]:
    """The study's own preset trials, then ``extra`` (measured apart) for presets it lacks."""
    out = [ReferencePoint(t.user_attrs["preset"], list(t.values), True, t.number, "trial of the study",
                          t.user_attrs.get("params"), t.user_attrs.get("flops")) for t in _presets(study)]
    have = {r.preset for r in out}
    out += [r for r in extra if r.preset not in have]
    return out


def parse_reference(text: str, names: Sequence[str]) -> list[float]:
    """'v1,v2' -> floats, one per objective (errors name the objectives)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) != len(names):
        raise ValueError(f"--reference {text!r} has {len(parts)} value(s); this study has {len(names)} objectives "
                         f"({', '.join(names)}): give one value each, e.g. --reference={','.join('0' * len(names))}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--reference {text!r}: every value must be a number") from None


def dominates_presets(study: Any) -> dict[str, Any]:
    """For each reference preset trial: is it on the front, or which Pareto trials dominate it."""
    front = pareto_trials(study)
    out = {}
    for p in _presets(study):
        by = [n for n in _dominated_by(study, p.values, front) if n != p.number]
        out[p.user_attrs["preset"]] = dict(trial=p.number, on_front=any(t.number == p.number for t in front),
                                           dominated_by=by)
    return out


def _dominated_by(study: Any, values: Sequence[float], front: Optional[Sequence[Any]] = None) -> list[int]:
    """Pareto trials (of ``front``, default the study's) that dominate the point ``values``."""
    from .hypervolume import dominates

    maximize = maximize_flags(study)
    loss = _loss(values, maximize)
    front = pareto_trials(study) if front is None else front
    return [t.number for t in front if dominates(_loss(t.values, maximize), loss)]


def failure_rows(study: Any) -> list[dict[str, Any]]:
    """Every failed trial with its recorded reason (``nas.record.ERROR``; None when it has none)."""
    import optuna

    from .record import error_of

    return [dict(trial=t.number, error=error_of(t))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))]


def study_summary(study: Any, reference: Optional[Sequence[float]] = None,
                  references: Optional[Sequence[ReferencePoint]] = None) -> dict[str, Any]:
    """A JSON-ready summary: settings, counts, labels, Pareto rows, hypervolume and the reference
    point it was computed for, FasterViT reference points (``references``: from ``study_references``)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    names = objective_names(study)
    given = reference is not None
    ref = list(reference) if given else reference_point(study)
    refs = list(references) if references is not None else study_references(study)
    presets = dominates_presets(study)
    for r in refs:
        if not r.in_study and r.values is not None:
            presets[r.preset] = dict(trial=None, on_front=False, dominated_by=_dominated_by(study, r.values),
                                     not_part_of_study=True, values=dict(zip(names, r.values)))
        elif r.values is None:
            presets[r.preset] = dict(trial=None, on_front=None, dominated_by=[], not_measured=r.note)
    return dict(
        study=study.study_name, objectives=names, labels=dict(zip(names, objective_labels(study))),
        directions=["maximize" if m else "minimize" for m in maximize_flags(study)],
        settings=study.user_attrs.get("settings"), proxy=study.user_attrs.get("proxy"),
        n_trials=len(trials), n_complete=sum(t.state == states.COMPLETE for t in trials),
        n_failed=sum(t.state == states.FAIL for t in trials), n_pruned=sum(t.state == states.PRUNED for t in trials),
        n_feasible=len(feasible_trials(study)), reference_point=ref,
        reference_point_by_objective=dict(zip(names, ref)) if ref else None,
        reference_point_rule="given (--reference)" if given else REFERENCE_RULE,
        hypervolume=hypervolume(study, ref) if ref is not None else None,
        hypervolume_note=None if ref is not None else reference_problem(study), pareto=pareto_rows(study), presets=presets,
        reference_points=[r.to_dict() for r in refs],
        devices=sorted({str(t.user_attrs.get("device")) for t in trials if t.user_attrs.get("device")}),
        failures=failure_rows(study),
    )


REFERENCE_RULE = "worst feasible value per objective, moved 10% of its range further"


def _label(t: Any) -> str:
    return t.user_attrs.get("preset") or f"#{t.number}"


def _short(name: Optional[str]) -> str:
    return (name or "").replace("faster_vit_", "FasterViT-").replace("_224", "")


def write_report(study: Any, path: Path | str, *, reference: Optional[Sequence[float]] = None,
                 references: Optional[Sequence[ReferencePoint]] = None, png: bool = True,
                 plotlyjs: str = "embed") -> Optional[Path]:
    """Write a self-contained HTML report (plotly.js embedded, or beside it: ``nas.plots``) and a PNG.

    Contents: every feasible trial coloured by trial number, the Pareto front as a line, FasterViT
    reference points (``references``, default the study's own preset trials), the hypervolume
    history for the reference point used, the Pareto table (formatted), and failures (escaped).
    Returns None without a feasible trial.
    """
    from . import plots

    if plotlyjs not in plots.PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs={plotlyjs!r} must be one of {plots.PLOTLYJS_MODES}")
    feas = feasible_trials(study)
    if not feas:
        return None
    path = Path(path)
    refs = list(references) if references is not None else study_references(study)
    summary = study_summary(study, reference, refs)
    ref = summary["reference_point"]
    names, labels = summary["objectives"], list(summary["labels"].values())
    front_fig = _front_figure(study, feas, refs, names, labels)
    hv_figs = [] if ref is None else [plots.figure_html(_hv_figure(study, ref, names, labels), first=False,
                                                        plotlyjs=plotlyjs)]
    body = [f"<h1>Study {plots.esc(study.study_name)}</h1>", _intro_html(summary, names, labels),
            plots.figure_html(front_fig, first=True, plotlyjs=plotlyjs), *hv_figs,
            "<h2>Pareto set</h2>", _pareto_table_html(summary, names, labels, front_noise(study)),
            "<h2>FasterViT reference points</h2>", _references_html(summary, refs, names),
            "<h2>Failed trials</h2><ul>" + ("".join(f"<li>#{f['trial']}: {plots.esc(f['error'])}</li>"
                                                    for f in summary["failures"]) or "<li>none</li>") + "</ul>"]
    plots.write_page(path, f"nas report {study.study_name}", body, plotlyjs=plotlyjs)
    if png:
        _write_png(study, path.with_suffix(".png"), names, labels, refs, ref)
    return path


def _scaled(names: Sequence[str], labels: Sequence[str]) -> list[tuple[float, str]]:
    from .objectives import display_scale

    return [display_scale(n, lab) for n, lab in zip(names, labels)]


def _hover(t: Any) -> str:
    from .plots import esc

    p, f = t.user_attrs.get("params"), t.user_attrs.get("flops")
    cost = f"<br>{p / 1e6:.2f} M params" if p else ""
    cost += f", {f / 1e9:.2f} GFLOPs" if f else ""
    return f"trial #{t.number}{' (' + esc(_short(t.user_attrs.get('preset'))) + ')' if t.user_attrs.get('preset') else ''}" \
           f"<br>{esc(t.user_attrs.get('summary') or '')}{cost}"


def front_noise(study: Any) -> Optional[dict[str, Any]]:
    """Seed-noise marks for the front (``nas.confirm.noise_marks``) keyed by trial, for reports.

    ``{"axis": index of accuracy, "seed_noise": s, "by_trial": {number: {"retrained": [...],
    "within_noise": bool}}}``; None until ``nas confirm`` / ``--confirm`` re-trained front points.
    """
    from .confirm import noise_marks

    marks = noise_marks(study)
    if marks is None:
        return None
    return dict(axis=objective_names(study).index("accuracy"), seed_noise=marks["seed_noise"],
                by_trial={p["trial"]: p for p in marks["points"]})


def _retrained_values(front: Sequence[Any], noise: Mapping[str, Any]) -> list[list[float]]:
    """Front points with accuracy replaced by the mean of its re-trains (those that have one)."""
    out = []
    for t in front:
        again = noise["by_trial"].get(t.number, {}).get("retrained") or []
        if again:
            v = list(t.values)
            v[noise["axis"]] = sum(again) / len(again)
            out.append(v)
    return out


def _front_figure(study: Any, feas: Sequence[Any], refs: Sequence[ReferencePoint], names: Sequence[str],
                  labels: Sequence[str]) -> Any:
    import plotly.graph_objects as go

    from .plots import COLORS, base_layout

    sc = _scaled(names, labels)
    front = pareto_trials(study)
    three = len(names) == 3
    cls = go.Scatter3d if three else go.Scatter

    def xyz(points: Sequence[Sequence[float]]) -> dict[str, list[float]]:
        keys = ("x", "y", "z")[: len(names)]
        return {k: [p[i] / sc[i][0] for p in points] for i, k in enumerate(keys)}

    fig = go.Figure()
    fig.add_trace(cls(**xyz([t.values for t in feas]), mode="markers", name="trials (colour: trial number)",
                      text=[_hover(t) for t in feas], hoverinfo="text",
                      marker=dict(size=7 if not three else 4, color=[t.number for t in feas], colorscale="Viridis",
                                  opacity=0.85, line=dict(width=0.5, color="#333") if not three else None,
                                  colorbar=dict(title=dict(text="trial #"), x=1.02))))
    noise = front_noise(study)
    bars = {}
    if noise is not None:  # +-1 seed sd on the accuracy axis of every front point
        bars[f"error_{'xyz'[noise['axis']]}"] = dict(type="constant", value=noise["seed_noise"] / sc[noise["axis"]][0],
                                                      visible=True, color=COLORS["front"], thickness=1.2)
    fig.add_trace(cls(**xyz([t.values for t in front]), mode="lines+markers" if not three else "markers",
                      name=f"Pareto front ({len(front)} trials)" + (
                          f", error bars ±{noise['seed_noise']:.2f} (seed sd, nas confirm)" if noise else ""),
                      text=[_hover(t) for t in front], hoverinfo="text",
                      line=dict(color=COLORS["front"], width=2) if not three else None,
                      marker=dict(size=10 if not three else 6, color=COLORS["front"], symbol="circle-open" if not three
                                  else "circle", line=dict(width=2, color=COLORS["front"]) if not three else None),
                      **bars))
    again = _retrained_values(front, noise) if noise else []
    if again:
        fig.add_trace(cls(**xyz(again), mode="markers", name="re-trained with another seed (mean)", hoverinfo="x+y",
                          marker=dict(symbol="x", size=9 if not three else 4, color=COLORS["front"])))
    for in_study in (True, False):
        pts = [r for r in refs if r.values is not None and r.in_study == in_study]
        if not pts:
            continue
        name = "FasterViT presets (trials of the study)" if in_study else "FasterViT presets (not part of the study)"
        fig.add_trace(cls(**xyz([r.values for r in pts]), mode="markers+text", name=name,
                          text=[r.short for r in pts], textposition="top center", hoverinfo="text+x+y",
                          marker=dict(symbol="diamond" if in_study else "diamond-open", size=12 if not three else 6,
                                      color=COLORS["preset"] if in_study else COLORS["outside"],
                                      line=dict(width=2, color=COLORS["preset"] if in_study else COLORS["outside"]))))
    title = f"Pareto front — study {study.study_name}"
    if three:
        fig.update_layout(title=dict(text=title), template="plotly_white", height=650,
                          scene=dict(xaxis_title=sc[0][1], yaxis_title=sc[1][1], zaxis_title=sc[2][1]))
    else:
        fig.update_layout(**base_layout(title, sc[0][1], sc[1][1], height=620))
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.14, x=0), margin=dict(b=120))
    return fig


def _hv_figure(study: Any, ref: Sequence[float], names: Sequence[str], labels: Sequence[str]) -> Any:
    import plotly.graph_objects as go

    from .objectives import format_value
    from .plots import COLORS, base_layout

    hist = hypervolume_history(study, ref)
    units = _hv_units(names, labels)
    fig = go.Figure(go.Scatter(x=[n for n, _ in hist], y=[h for _, h in hist], mode="lines+markers", name="hypervolume",
                               line=dict(color=COLORS["front"], width=2), marker=dict(size=4)))
    point = ", ".join(f"{n}={format_value(n, v)}" for n, v in zip(names, ref))
    fig.update_layout(**base_layout(f"Hypervolume history (reference point {point})", "trial number (completed trials)",
                                    f"hypervolume ({units})", showlegend=True, height=420))
    return fig


def _hv_units(names: Sequence[str], labels: Sequence[str]) -> str:
    """The hypervolume's unit: the product of the objectives' units (e.g. "jacob_cov score × img/s")."""
    from .objectives import OBJECTIVES

    return " × ".join(lab.split(" (")[0] if n == "accuracy" else OBJECTIVES[n].unit if n in OBJECTIVES else n
                      for n, lab in zip(names, labels))


def _intro_html(summary: Mapping[str, Any], names: Sequence[str], labels: Sequence[str]) -> str:
    from .objectives import format_value
    from .plots import esc

    objs = "; ".join(f"<b>{esc(n)}</b>: {esc(lab)} ({d})" for n, lab, d in zip(names, labels, summary["directions"]))
    head = (f"<p>Objectives — {objs}.</p><p>Trials: {summary['n_trials']} ({summary['n_complete']} complete, "
            f"{summary['n_failed']} failed, {summary['n_pruned']} pruned, {summary['n_feasible']} feasible). "
            f"Devices: {esc(', '.join(summary['devices']) or '—')}.</p>")
    if summary["reference_point"] is None or summary["hypervolume"] is None:
        return head + f"<p>No hypervolume: {esc(summary.get('hypervolume_note') or 'no reference point')}.</p>"
    ref = ", ".join(f"{esc(n)} = {esc(format_value(n, v))}" for n, v in zip(names, summary["reference_point"]))
    hv = summary["hypervolume"]
    return (head +
            f"<p>Hypervolume <b>{hv:.6g}</b> w.r.t. the reference point ({ref}) — {esc(summary['reference_point_rule'])}; "
            f"reproduce with <code>nas pareto --study {esc(summary['study'])} --reference="
            f"{','.join(repr(float(v)) for v in summary['reference_point'])}</code>.</p>")


def _pareto_table_html(summary: Mapping[str, Any], names: Sequence[str], labels: Sequence[str],
                       noise: Optional[Mapping[str, Any]] = None) -> str:
    """The front as a table; with re-trains (``front_noise``) also each point's re-trained accuracies and
    whether it is within the seed noise of a front neighbour (not shown to differ from it)."""
    from .objectives import display_scale, format_value
    from .plots import esc, table_html

    header = ["trial", "preset", *(display_scale(n, lab)[1] for n, lab in zip(names, labels)), "params (M)", "GFLOPs",
              "architecture"]
    extra = ["re-trained accuracy (other seeds)", "not shown to differ from a neighbour (95 %)"] if noise else []
    rows = []
    for r in summary["pareto"]:
        row = [r["trial"], _short(r.get("preset")), *(format_value(n, r.get(n), suffix=False) for n in names),
               format_value("params", r.get("params"), suffix=False), format_value("flops", r.get("flops"), suffix=False),
               r.get("summary") or ""]
        if noise:
            mark = noise["by_trial"].get(r["trial"], {})
            row += [", ".join(f"{a:.2f}" for a in mark.get("retrained") or []) or "—",
                    "yes" if mark.get("within_noise") else "no"]
        rows.append(row)
    table = table_html(header + extra, rows, [True, False, *([True] * len(names)), True, True, False,
                                              *([False] * len(extra))])
    if not noise:
        return table
    return (f"<p class=\"note\">Seed noise {noise['seed_noise']:.2f} accuracy points (sd, from the re-trains of "
            f"<code>nas confirm</code>); error bars in the figure are ±1 sd. "
            + esc("Points marked yes differ from a front neighbour by less than the 95 % bound of a difference "
                  "of two seeds (1.96 x sqrt 2 x sd): they are not shown to differ.") + "</p>" + table)


def _references_html(summary: Mapping[str, Any], refs: Sequence[ReferencePoint], names: Sequence[str]) -> str:
    from .objectives import format_value
    from .plots import table_html

    rows = []
    for r in refs:
        p = summary["presets"].get(r.preset, {})
        if r.values is None:
            where = f"not measured: {r.note}"
        elif p.get("on_front"):
            where = "on the front"
        elif p.get("dominated_by"):
            where = f"dominated by trials {', '.join(map(str, p['dominated_by']))}"
        else:
            where = "not dominated"
        rows.append([r.short, f"trial #{r.trial}" if r.in_study else "not part of the study (measured the same way)",
                     *(format_value(n, v) for n, v in zip(names, r.values or [None] * len(names))), where])
    if not rows:
        return "<p>none</p>"
    return table_html(["preset", "source", *names, "front"], rows, [False, False, *([True] * len(names)), False])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def _write_png(study: Any, path: Path, names: Sequence[str], labels: Sequence[str], refs: Sequence[ReferencePoint],
               ref: Optional[Sequence[float]]) -> None:
    """The first two objectives (front as a line, presets labelled) and the hypervolume history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import COLORS

    sc = _scaled(names, labels)
    feas = feasible_trials(study)
    front = pareto_trials(study)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw=dict(width_ratios=[1.4, 1]))
    ax = axes[0]
    x = lambda vals: [v[0] / sc[0][0] for v in vals]  # noqa: E731
    y = lambda vals: [v[1] / sc[1][0] for v in vals]  # noqa: E731
    pts = ax.scatter(x([t.values for t in feas]), y([t.values for t in feas]), s=18, c=[t.number for t in feas],
                     cmap="viridis", edgecolors="#333", linewidths=0.3, label="trials (colour: trial number)")
    fig.colorbar(pts, ax=ax, label="trial #", pad=0.01)
    ax.plot(x([t.values for t in front]), y([t.values for t in front]), "-", c=COLORS["front"], lw=1.8)
    ax.scatter(x([t.values for t in front]), y([t.values for t in front]), s=45, facecolors="none",
               edgecolors=COLORS["front"], linewidths=1.6, label=f"Pareto front ({len(front)})")
    noise = front_noise(study)
    if noise is not None and noise["axis"] < 2:
        err = noise["seed_noise"] / sc[noise["axis"]][0]
        ax.errorbar(x([t.values for t in front]), y([t.values for t in front]), fmt="none", ecolor=COLORS["front"],
                    elinewidth=1.0, capsize=3, **{"xerr" if noise["axis"] == 0 else "yerr": err},
                    label=f"±{noise['seed_noise']:.2f} seed sd (nas confirm)")
        again = _retrained_values(front, noise)
        if again:
            ax.scatter(x(again), y(again), marker="x", s=30, c=COLORS["front"], label="re-trained (another seed)")
    for in_study in (True, False):
        rs = [r for r in refs if r.values is not None and r.in_study == in_study]
        if not rs:
            continue
        color = COLORS["preset"] if in_study else COLORS["outside"]
        ax.scatter(x([r.values for r in rs]), y([r.values for r in rs]), marker="D", s=40,
                   facecolors=color if in_study else "none", edgecolors=color, linewidths=1.5,
                   label="FasterViT presets" + ("" if in_study else " (not part of the study)"))
        for r in rs:
            ax.annotate(r.short.replace("FasterViT-", "FV-"), (r.values[0] / sc[0][0], r.values[1] / sc[1][0]),
                        fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(sc[0][1])
    ax.set_ylabel(sc[1][1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{study.study_name}: {names[0]} vs {names[1]}" + (" (first two of 3 objectives)" if len(names) == 3 else ""))
    if ref is None:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no hypervolume:\nno range to place a reference point\n(nas pareto --reference)",
                     ha="center", va="center", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    hist = hypervolume_history(study, ref)
    axes[1].plot([n for n, _ in hist], [h for _, h in hist], "-", c=COLORS["front"], label="hypervolume")
    axes[1].set_xlabel("trial number (completed trials)")
    axes[1].set_ylabel(f"hypervolume ({_hv_units(names, labels)})")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    axes[1].set_title("hypervolume history (reference point: " + ", ".join(f"{v:.4g}" for v in ref) + ")", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_json(study: Any, path: Path | str, reference: Optional[Mapping[str, float]] = None) -> Path:
    """The study summary as a JSON file (``reference``: objective name -> value)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(study_summary(study, None if reference is None else list(reference.values())),
                               indent=2, default=str))
    return path


def label_study(study: Any) -> Optional[list[str]]:
    """Give a study made before labels existed its metric names (what optuna-dashboard shows) and
    portable settings (no absolute paths); returns the labels set, or None when it had them."""
    from .objectives import portable_settings

    names = objective_names(study)
    metric = list(study.metric_names or [])
    changed = None
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", names)
    if not metric or metric == names:
        import warnings

        import optuna

        changed = objective_labels(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(changed)
    settings = study.user_attrs.get("settings")
    if isinstance(settings, dict):
        portable = portable_settings(settings)
        if portable != settings:
            study.set_user_attr("settings", portable)
            changed = changed or list(study.metric_names)
    return changed
