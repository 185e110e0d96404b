"""HTML pages with plotly figures that work offline, shared by every report (`nas pareto`, `nas compare`).

A page is self-contained: plotly.js is embedded in it (``plotlyjs="embed"``, ~4.7 MB, one file that
works anywhere), or written once as ``plotly.min.js`` beside it (``"directory"``: the folder is
self-contained; for committed reports several pages share one copy). It never links a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence

from evaluators.jsonfile import atomic_write_text

__all__ = ["PLOTLYJS_MODES", "figure_html", "page", "write_page", "base_layout", "COLORS", "esc"]

PLOTLYJS_MODES = ("embed", "directory")
# Okabe-Ito: readable for colour-blind readers and on white
COLORS = {"front": "#D55E00", "trials": "#0072B2", "preset": "#000000", "outside": "#E69F00", "fastervit": "#009E73",
          "peer": "#0072B2", "official": "#CC79A7", "muted": "#999999"}


def esc(value: Any) -> str:
    """Text for HTML (error messages and names may hold <, >, &)."""
    return html.escape("" if value is None else str(value))


def base_layout(title: str, x_title: str, y_title: str, **kw: Any) -> dict[str, Any]:
    """A white layout with titled axes, grid lines and a legend (every axis title carries its unit)."""
    axis = dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, showline=True, linecolor="#444", ticks="outside")
    layout = dict(title=dict(text=title), template="plotly_white", xaxis=dict(title=dict(text=x_title), **axis),
                  yaxis=dict(title=dict(text=y_title), **axis),
                  legend=dict(bgcolor="rgba(255,255,255,0.85)", bordercolor="#ccc", borderwidth=1),
                  margin=dict(l=70, r=30, t=60, b=60), height=560)
    layout.update(kw)
    return layout


def figure_html(fig: Any, *, first: bool, plotlyjs: str = "embed") -> str:
    """A figure as an HTML fragment; the first figure of a page carries (or links) plotly.js."""
    if plotlyjs not in PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs={plotlyjs!r} must be one of {PLOTLYJS_MODES}")
    include: Any = False
    if first:
        include = True if plotlyjs == "embed" else "directory"
    return fig.to_html(full_html=False, include_plotlyjs=include, config={"displaylogo": False, "responsive": True})


def page(title: str, body: Sequence[str]) -> str:
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
           "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
           ".note{color:#555;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title><style>{css}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def write_page(path: Path | str, title: str, body: Sequence[str], *, plotlyjs: str = "embed") -> Path:
    """Write the page (whole or not at all); in ``directory`` mode also plotly.min.js beside it (the version plotly
    ships)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "directory":
        from plotly.offline import get_plotlyjs

        js = path.parent / "plotly.min.js"
        text = get_plotlyjs()
        if not js.is_file() or js.read_text() != text:
            atomic_write_text(js, text)
    return atomic_write_text(path, page(title, body))


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Optional[Sequence[bool]] = None) -> str:
    """An HTML table; every cell escaped; ``numeric`` columns right-aligned."""
    numeric = list(numeric or [False] * len(header))
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{esc(c)}</td>" if numeric[i] else f"<td>{esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
