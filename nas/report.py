"""The HTML/PNG report of a study: front figure, hypervolume history, Pareto table, FasterViT references.

The page is self-contained (``nas.plots``); the numbers come from ``nas.front``; the front's seed
noise (``nas confirm``) is drawn as error bars and marks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib
import plotly.graph_objects as go

from evaluators.jsonfile import atomic_write_bytes

from . import plots, record as R
from .confirm import confirmations, noise_marks
from .front import (
    ReferencePoint,
    feasible_trials,
    hypervolume_history,
    objective_names,
    pareto_trials,
    preset_place,
    short_preset,
    study_references,
    study_summary,
)
from .labels import display_scale, format_value
from .objectives import OBJECTIVES
from .plots import COLORS, base_layout, esc, table_html

__all__ = ["write_report", "front_noise"]


def write_report(study: Any, path: Path | str, *, reference: Optional[Sequence[float]] = None,
                 references: Optional[Sequence[ReferencePoint]] = None, png: bool = True,
                 plotlyjs: str = "embed") -> Optional[Path]:
    """Write a self-contained HTML report (plotly.js embedded, or beside it: ``nas.plots``) and a PNG.

    Contents: every feasible trial coloured by trial number, the Pareto front as a line, FasterViT
    reference points (``references``, default the study's own preset trials), the hypervolume
    history for the reference point used, the Pareto table (formatted), and failures (escaped).
    Returns None without a feasible trial.
    """
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
    return [display_scale(n, lab) for n, lab in zip(names, labels)]


def _hover(t: Any) -> str:
    p, f = t.user_attrs.get(R.PARAMS), t.user_attrs.get(R.FLOPS)
    cost = f"<br>{p / 1e6:.2f} M params" if p else ""
    cost += f", {f / 1e9:.2f} GFLOPs" if f else ""
    preset = t.user_attrs.get(R.PRESET)
    named = f" ({esc(short_preset(preset))})" if preset else ""
    return f"trial #{t.number}{named}<br>{esc(t.user_attrs.get(R.SUMMARY) or '')}{cost}"


def front_noise(study: Any) -> Optional[dict[str, Any]]:
    """Seed-noise marks for the front (``nas.confirm.noise_marks``) keyed by trial, for reports.

    ``{"axis": index of accuracy, "seed_noise": s, "by_trial": {number: {"retrained": [...],
    "within_noise": bool}}}``; None until ``nas confirm`` / ``--confirm`` re-trained front points.
    """
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


def _confirmed_label(study: Any) -> str:
    """Legend of the confirmed points: re-trained with another seed, or trained stand-alone (a supernet study)."""
    kinds = {e.get("kind", "retrain") for entries in confirmations(study).values() for e in entries}
    if kinds == {"standalone"}:
        return "confirmed: trained stand-alone (mean of seeds)"
    return "re-trained with another seed (mean)"


def _front_figure(study: Any, feas: Sequence[Any], refs: Sequence[ReferencePoint], names: Sequence[str],
                  labels: Sequence[str]) -> Any:
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
        fig.add_trace(cls(**xyz(again), mode="markers", name=_confirmed_label(study), hoverinfo="x+y",
                          marker=dict(symbol="x", size=9 if not three else 4, color=COLORS["front"])))
    for in_study in (True, False):
        pts = [r for r in refs if r.values is not None and r.in_study == in_study]
        if not pts:
            continue
        name = "FasterViT presets (trials of the study)" if in_study else "FasterViT presets (not part of the study)"
        fig.add_trace(cls(**xyz([r.values or [] for r in pts]), mode="markers+text", name=name,
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
    return " × ".join(lab.split(" (")[0] if n == "accuracy" else OBJECTIVES[n].unit if n in OBJECTIVES else n
                      for n, lab in zip(names, labels))


def _intro_html(summary: Mapping[str, Any], names: Sequence[str], labels: Sequence[str]) -> str:
    objs = "; ".join(f"<b>{esc(n)}</b>: {esc(lab)} ({d})" for n, lab, d in zip(names, labels, summary["directions"]))
    head = (f"<p>Objectives — {objs}.</p><p>Trials: {summary['n_trials']} ({summary['n_complete']} complete, "
            f"{summary['n_failed']} failed, {summary['n_pruned']} pruned, {summary['n_feasible']} feasible). "
            f"Devices: {esc(', '.join(summary['devices']) or '—')}.</p>")
    if summary["reference_point"] is None or summary["hypervolume"] is None:
        return head + f"<p>No hypervolume: {esc(summary.get('hypervolume_note') or 'no reference point')}.</p>"
    ref = ", ".join(f"{esc(n)} = {esc(format_value(n, v))}" for n, v in zip(names, summary["reference_point"]))
    hv = summary["hypervolume"]
    return (head +
            f"<p>Hypervolume <b>{hv:.6g}</b> w.r.t. the reference point ({ref}) — "
            f"{esc(summary['reference_point_rule'])}; "
            f"reproduce with <code>nas pareto --study {esc(summary['study'])} --reference="
            f"{','.join(repr(float(v)) for v in summary['reference_point'])}</code>.</p>")


def _pareto_table_html(summary: Mapping[str, Any], names: Sequence[str], labels: Sequence[str],
                       noise: Optional[Mapping[str, Any]] = None) -> str:
    """The front as a table; with re-trains (``front_noise``) also each point's re-trained accuracies and
    whether it is within the seed noise of a front neighbour (not shown to differ from it)."""
    header = ["trial", "preset", *(display_scale(n, lab)[1] for n, lab in zip(names, labels)), "params (M)", "GFLOPs",
              "architecture"]
    extra = ["re-trained accuracy (other seeds)", "not shown to differ from a neighbour (95 %)"] if noise else []
    rows = []
    for r in summary["pareto"]:
        row = [r["trial"], short_preset(r.get("preset")), *(format_value(n, r.get(n), suffix=False) for n in names),
               format_value("params", r.get("params"), suffix=False),
               format_value("flops", r.get("flops"), suffix=False), r.get("summary") or ""]
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
    rows = []
    for r in refs:
        where = preset_place(summary["presets"].get(r.preset, {}) if r.values is not None else {"not_measured": r.note})
        unsaved = r.note.partition("; ")[2]  # a note is "how it was measured[; why it is not cached]"
        source = (f"trial #{r.trial}" if r.in_study else
                  f"not part of the study (measured the same way{'; ' + unsaved if unsaved else ''})")
        rows.append([r.short, source,
                     *(format_value(n, v) for n, v in zip(names, _or_none(r.values, len(names)))), where])
    if not rows:
        return "<p>none</p>"
    return table_html(["preset", "source", *names, "front"], rows, [False, False, *([True] * len(names)), False])


def _or_none(values: Optional[Sequence[float]], n: int) -> list[Optional[float]]:
    return list(values) if values is not None else [None] * n


def _write_png(study: Any, path: Path, names: Sequence[str], labels: Sequence[str], refs: Sequence[ReferencePoint],
               ref: Optional[Sequence[float]]) -> None:
    """The first two objectives (front as a line, presets labelled) and the hypervolume history."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            v = r.values or [0.0, 0.0]  # rs: only presets with values
            ax.annotate(r.short.replace("FasterViT-", "FV-"), (v[0] / sc[0][0], v[1] / sc[1][0]),
                        fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(sc[0][1])
    ax.set_ylabel(sc[1][1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{study.study_name}: {names[0]} vs {names[1]}"
                 + (" (first two of 3 objectives)" if len(names) == 3 else ""))
    if ref is None:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no hypervolume:\nno range to place a reference point\n(nas pareto --reference)",
                     ha="center", va="center", fontsize=10)
        fig.tight_layout()
        _save(fig, path)
        return
    hist = hypervolume_history(study, ref)
    axes[1].plot([n for n, _ in hist], [h for _, h in hist], "-", c=COLORS["front"], label="hypervolume")
    axes[1].set_xlabel("trial number (completed trials)")
    axes[1].set_ylabel(f"hypervolume ({_hv_units(names, labels)})")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    axes[1].set_title("hypervolume history (reference point: " + ", ".join(f"{v:.4g}" for v in ref) + ")", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Save and close a matplotlib figure, whole or not at all."""
    import matplotlib.pyplot as plt

    try:
        atomic_write_bytes(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110))
    finally:
        plt.close(fig)
