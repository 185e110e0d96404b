"""The `nas compare` report: top-1 against this GPU's throughput (the paper's Figure 1, re-measured)
as a self-contained HTML page and a PNG, from the JSON ``nas.compare`` writes (so a run measured on
one machine can be rendered on another: ``nas compare --render FILE.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from evaluators.jsonfile import atomic_write_bytes

from .deploy_steps import deploy_steps
from .plots import COLORS, base_layout, esc, figure_html, table_html, write_page

__all__ = ["write_compare_html", "write_compare_png", "axis_titles", "table_header", "table_rows", "reading",
           "padded_label", "TABLE_HEADER"]

FAMILY_STYLE = {"conv": ("ConvNets", "square", "#0072B2"), "transformer": ("Transformers", "triangle-up", "#56B4E9"),
                "hybrid": ("Hybrids", "star", "#CC79A7")}
TABLE_HEADER = ["model", "code / timm id", "px", "params M here / paper", "GMACs here / GFLOPs paper",
                "img/s here", "img/s paper A100", "ratio here / A100", "top-1 % (paper)", "on front"]


def _where(d: Mapping[str, Any]) -> str:
    return d.get("gpu") or f"CPU ({d['environment'].get('cpu')})"


def padded_label(d: Mapping[str, Any]) -> str:
    """The suffix ``(padded to N)`` when ``nas compare --pad-channels N`` padded our FasterViT rows,
    ``(GELU epilogue)`` when ``--gelu-epilogue`` fused their MLPs (both: ``(padded to N, GELU epilogue)``);
    empty otherwise, also for a JSON written before the options existed."""
    steps = deploy_steps(d["settings"])
    return f" ({', '.join(steps)})" if steps else ""


def axis_titles(d: Mapping[str, Any], mode: Optional[str] = None) -> tuple[str, str]:
    """(x, y) titles with units: img/s at batch, dtype, mode on this device; top-1 % from the paper."""
    s = d["settings"]
    mode = mode or s["modes"][0]
    x = (f"throughput on {_where(d)}, img/s (batch {s['batch_size']}, Table 1 resolution, {s['dtype']}, {mode}; "
         f"log scale)")
    return x, "ImageNet-1K top-1 % (paper, Table 1)"


def _primary(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    mode = d["settings"]["modes"][0]
    return [r for r in d["rows"] if r["mode"] == mode]


def _ok(r: Mapping[str, Any]) -> bool:
    return r.get("img_s") is not None and not r.get("error")


def _fmt(v: Optional[float], spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _img(v: Optional[float]) -> str:
    """img/s: thousands separated; 3 significant digits below 100 (CPU checks)."""
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")


def table_header(d: Mapping[str, Any]) -> list[str]:
    """``TABLE_HEADER``, plus the accuracy estimate's column when ``nas compare --proxy`` scored our rows."""
    label = d.get("estimate_label")
    return [*TABLE_HEADER, label] if label else list(TABLE_HEADER)


def table_rows(d: Mapping[str, Any]) -> list[list[str]]:
    """One formatted row per model and mode (the CLI table and the HTML table)."""
    front = set(d["front"])
    rows = []
    for r in d["rows"]:
        code = r["model_id"] if r["code"] == "timm" else f"{r['code']}: {r['model_id']}"
        if r["code"] == "nas":
            code += padded_label(d)
        if len(d["settings"]["modes"]) > 1:
            code += f" [{r['mode']}]"
        here = _img(r.get("img_s")) if _ok(r) else f"skipped: {r.get('error')}"
        on = "yes" if r["name"] in front and r["code"] != "official" and r["mode"] == d["settings"]["modes"][0] else ""
        rows.append([r["name"], code, str(r["resolution"]),
                     f"{_fmt(r.get('params_m'), '.1f')} / {_fmt(r.get('paper_params_m'), '.1f')}",
                     f"{_fmt(r.get('gmacs'), '.2f')} / {_fmt(r.get('paper_gflops'), '.1f')}", here,
                     _fmt(r.get("paper_a100_img_s"), ",.0f"), _fmt(r.get("ratio"), ".3g") if _ok(r) else "—",
                     _fmt(r.get("top1"), ".1f"), on])
        if d.get("estimate_label"):
            rows[-1].append(_fmt(r.get("estimate"), ".2f") if r.get("estimate") is not None
                            else ("—" if r["code"] != "nas" else f"not scored: {r.get('estimate_error')}"))
    return rows


def reading(d: Mapping[str, Any]) -> list[str]:
    """Sentences: which models are on this card's front, which FasterViT is dominated and by what."""
    lines = [f"On {_where(d)}'s front of throughput and top-1: {', '.join(d['front']) or 'nothing measured'}."]
    fv = [r for r in _primary(d) if r["family"] == "fastervit"]
    off = {n: by for n, by in d["dominated"].items()}
    if fv and not off:
        lines.append("No FasterViT of our generator is dominated.")
    for name, by in off.items():
        lines.append(f"{name} is dominated by {', '.join(by)}.")
    skipped = d.get("skipped") or []
    if skipped:
        reasons = "; ".join(f"{s['name']} ({s['code']}): {s['reason']}" for s in skipped)
        lines.append(f"Skipped ({len(skipped)}): {reasons}")
    return lines


def _figure(d: Mapping[str, Any]) -> Any:
    import plotly.graph_objects as go

    rows = [r for r in _primary(d) if _ok(r)]
    x_title, y_title = axis_titles(d)
    fig = go.Figure()
    for code, name, color, dash in (("nas", f"FasterViT-0..6 (our generator){padded_label(d)}", COLORS["fastervit"],
                                     "solid"),
                                    ("official", "FasterViT-0..6 (official code)", COLORS["official"], "dot")):
        fv = sorted([r for r in rows if r["code"] == code], key=lambda r: r["name"])
        if fv:
            fig.add_trace(go.Scatter(x=[r["img_s"] for r in fv], y=[r["top1"] for r in fv], mode="lines+markers+text",
                                     name=name, text=[r["name"].replace("FasterViT-", "FV-") for r in fv],
                                     textposition="top left", line=dict(color=color, width=2.5, dash=dash),
                                     marker=dict(size=10, color=color), hovertemplate="%{text}: %{x:,.0f} img/s, "
                                                                                       "%{y:.1f}%<extra></extra>"))
    for fam, (label, symbol, color) in FAMILY_STYLE.items():
        pts = [r for r in rows if r["family"] == fam]
        if pts:
            fig.add_trace(go.Scatter(x=[r["img_s"] for r in pts], y=[r["top1"] for r in pts], mode="markers+text",
                                     name=label, text=[r["name"] for r in pts], textposition="bottom center",
                                     textfont=dict(size=10), marker=dict(size=11, symbol=symbol, color=color,
                                                                         line=dict(width=1, color="#333")),
                                     hovertemplate="%{text}: %{x:,.0f} img/s, %{y:.1f}%<extra></extra>"))
    front = sorted([r for r in rows if r["name"] in d["front"] and r["code"] != "official"], key=lambda r: r["img_s"])
    if front:
        fig.add_trace(go.Scatter(x=[r["img_s"] for r in front], y=[r["top1"] for r in front], mode="lines+markers",
                                 name="Pareto front on this device", hoverinfo="skip",
                                 line=dict(color=COLORS["front"], width=1.5, dash="dash", shape="vh"),
                                 marker=dict(size=18, symbol="circle-open", color=COLORS["front"], line=dict(width=2))))
    paper = sorted([r for r in rows if r["code"] == "nas"], key=lambda r: r["name"])
    if paper:
        fig.add_trace(go.Scatter(x=[r["paper_a100_img_s"] for r in paper], y=[r["top1"] for r in paper],
                                 mode="lines+markers", name="FasterViT on the paper's A100 (Table 1)",
                                 visible="legendonly",
                                 line=dict(color=COLORS["muted"], dash="dot"), marker=dict(color=COLORS["muted"])))
    fig.update_layout(**base_layout(f"Top-1 vs throughput on {_where(d)} (the paper's Figure 1, re-measured)",
                                    x_title, y_title, height=650))
    fig.update_xaxes(type="log")
    return fig


def _tables_html(tables: Optional[Mapping[str, Any]]) -> str:
    if not tables:
        return "<p class=\"note\">Tables S.2 / S.3 not measured (pass <code>--tables</code>).</p>"
    out = []
    for t in tables.values():
        codes = [c for c in ("nas", "official") if any(f"{c}_ratio" in r for r in t["rows"])]
        header = ["variant", "paper ratio", *(f"ratio here ({c})" for c in codes),
                  *(f"img/s here ({c})" for c in codes), "note"]
        rows = []
        for r in t["rows"]:
            notes = [r.get("why"), r.get("note"), *(f"{c}: {r.get(f'{c}_error')}" for c in codes if r.get(f"{c}_error")
                                                       and r.get(f"{c}_error") != "not expressible")]
            rows.append([r["name"], f"{r['paper_ratio']:.2f}", *(_fmt(r.get(f"{c}_ratio"), ".2f") for c in codes),
                         *(_img(r.get(f"{c}_img_s")) for c in codes), "; ".join(n for n in notes if n)])
        out.append(f"<h3>{esc(t['title'])} ({esc(t['model'])}, mode {esc(t['mode'])})</h3>"
                   f"<p class=\"note\">Ratio: {esc(t['ratio'])}. {esc(t.get('note') or '')} "
                   f"Source: {esc(t['source'])}.</p>"
                   + table_html(header, rows, [False, True, *([True] * 2 * len(codes)), False]))
    return "".join(out)


def write_compare_html(d: Mapping[str, Any], path: Path | str, *, plotlyjs: str = "embed") -> Path:
    """The figure, the reading, the table, Tables S.2/S.3, and the conditions of the run."""
    s, env = d["settings"], d["environment"]
    pad = (f"; ours padded to {s['pad_channels']}: widths and head dims zero-padded to multiples of "
           f"{s['pad_channels']}, the official code as it is" if s.get("pad_channels") else "")
    if s.get("gelu_epilogue"):
        pad += ("; ours with the GELU epilogue: each MLP's fc1 -> GELU as one GEMM with a bias+GELU epilogue "
                "(search_spaces.fuse_gelu_epilogue; tanh-approximate GELU on CUDA), the official code as it is")
    cond = (f"Measured {esc(d['created'])} on {esc(_where(d))} (torch {esc(env.get('torch'))}, "
            f"timm {esc(env.get('timm'))}, CUDA {esc(env.get('cuda'))}): batch {s['batch_size']}, "
            f"{esc(s['dtype'])}, modes {esc(', '.join(s['modes']))}, "
            f"channels-last, {s['warmup']} warm-up passes, {s['repeats']} timed samples (median); random weights; "
            f"FasterViT deployed (positional biases precomputed{pad}), peers as timm builds them. Top-1 and the A100 "
            f"numbers: {esc(d['published_source'])}, Table 1. MACs: {esc(d['flops_method'])}. Wall {d['wall_s']} s.")
    body = [f"<h1>FasterViT and its peers on {esc(_where(d))}</h1>", f"<p class=\"note\">{cond}</p>",
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in reading(d)) + "</ul>",
            figure_html(_figure(d), first=True, plotlyjs=plotlyjs),
            "<h2>Models</h2>",
            table_html(table_header(d), table_rows(d),
                       [False, False, True, True, True, True, True, True, True, False, True][:len(table_header(d))]),
            "<h2>Throughput ratios of Tables S.2 and S.3</h2>", _tables_html(d.get("tables"))]
    return write_page(path, f"nas compare — {_where(d)}", body, plotlyjs=plotlyjs)


def _stacked_label_offsets(points: Sequence[Mapping[str, Any]], pts_per_top1: float, pts_per_decade: float,
                           char_width: float = 4.8, height: float = 9.0, step: int = 9) -> list[int]:
    """Vertical label offsets (typographic points) so that peer labels do not print over each other.

    Each label starts right of its point; a label whose box (name length x ``char_width`` wide,
    ``height`` tall, on the figure's scale given by ``pts_per_top1`` / ``pts_per_decade``) would
    overlap one already placed moves down by ``step`` until it is free. Higher points go first.
    """
    import math

    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) in points
    offsets: dict[int, int] = {}
    for i in sorted(range(len(points)), key=lambda i: -points[i]["top1"]):
        r = points[i]
        left = math.log10(r["img_s"]) * pts_per_decade
        right = left + char_width * len(r["name"])
        dy = -step
        while any(left < pr and pl < right and abs(pb - (r["top1"] * pts_per_top1 + dy)) < height
                  for pl, pr, pb in placed):
            dy -= step
        placed.append((left, right, r["top1"] * pts_per_top1 + dy))
        offsets[i] = dy
    return [offsets[i] for i in range(len(points))]


def write_compare_png(d: Mapping[str, Any], path: Path | str) -> Path:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    rows = [r for r in _primary(d) if _ok(r)]
    fig, ax = plt.subplots(figsize=(11, 7))
    for code, name, color, ls in (("nas", f"FasterViT-0..6 (our generator){padded_label(d)}", COLORS["fastervit"],
                                   "-"),
                                  ("official", "FasterViT-0..6 (official code)", COLORS["official"], ":")):
        fv = sorted([r for r in rows if r["code"] == code], key=lambda r: r["name"])
        if fv:
            ax.plot([r["img_s"] for r in fv], [r["top1"] for r in fv], ls, marker="o", c=color, lw=2, label=name)
            if code == "nas":
                for r in fv:
                    ax.annotate(r["name"].replace("FasterViT-", "FV-"), (r["img_s"], r["top1"]), fontsize=9,
                                xytext=(-4, 6), textcoords="offset points", ha="right", color=color)
    markers = {"square": "s", "triangle-up": "^", "star": "*"}
    for fam, (label, symbol, color) in FAMILY_STYLE.items():
        pts = [r for r in rows if r["family"] == fam]
        if pts:
            ax.scatter([r["img_s"] for r in pts], [r["top1"] for r in pts], marker=markers[symbol], s=60, c=color,
                       edgecolors="#333", linewidths=0.6, label=label, zorder=3)
    peers = [r for r in rows if r["family"] in FAMILY_STYLE]
    ax.margins(0.12)
    ax.set_xscale("log")
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    box = ax.get_position()
    pts_per_top1 = fig.get_figheight() * 72 * box.height / max(y1 - y0, 1e-9)
    pts_per_decade = fig.get_figwidth() * 72 * box.width / max(math.log10(x1 / x0), 1e-9)
    for r, dy in zip(peers, _stacked_label_offsets(peers, pts_per_top1, pts_per_decade)):
        ax.annotate(r["name"], (r["img_s"], r["top1"]), fontsize=8, xytext=(4, dy), textcoords="offset points")
    front = sorted([r for r in rows if r["name"] in d["front"] and r["code"] != "official"], key=lambda r: r["img_s"])
    if front:
        ax.plot([r["img_s"] for r in front], [r["top1"] for r in front], "--", c=COLORS["front"], lw=1.2,
                drawstyle="steps-pre", label="Pareto front on this device")
        ax.scatter([r["img_s"] for r in front], [r["top1"] for r in front], s=220, facecolors="none",
                   edgecolors=COLORS["front"], linewidths=1.5, zorder=4)
    x_title, y_title = axis_titles(d)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(0.12)
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="best")
    ax.set_title(f"Top-1 vs throughput on {_where(d)} (the paper's Figure 1, re-measured)")
    fig.tight_layout()
    try:  # whole or not at all
        atomic_write_bytes(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120))
    finally:
        plt.close(fig)
    return path

