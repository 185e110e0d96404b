"""``nas compare``: FasterViT-0..6 against the paper's Table 1 peers, measured here (table, HTML, PNG, JSON)."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import console, fail, user_errors


def _print(d: dict) -> None:
    from rich.table import Table

    from nas.compare_report import reading, table_header, table_rows

    t = Table(*table_header(d), title=f"FasterViT and Table 1 peers on {d.get('gpu') or 'CPU'}")
    for r in table_rows(d):
        t.add_row(*r)
    console.print(t)
    for line in reading(d):
        console.print(line, highlight=False)
    for tab in (d.get("tables") or {}).values():
        tt = Table("variant", "paper ratio", *(f"ratio here ({c})" for c in ("nas", "official")
                                              if any(f"{c}_ratio" in r for r in tab["rows"])), title=tab["title"])
        for r in tab["rows"]:
            cells = [f"{r[f'{c}_ratio']:.2f}" if r.get(f"{c}_ratio") is not None else (r.get(f"{c}_error") or "—")
                     for c in ("nas", "official") if f"{c}_ratio" in r]
            tt.add_row(r["name"], f"{r['paper_ratio']:.2f}", *cells)
        console.print(tt)


def compare(
    models: Optional[str] = typer.Option(
        None, help="Comma-separated: names (Swin-T), presets (faster_vit_0_224), timm ids, or the groups "
                   "fastervit / peers / all (default: FasterViT-0..6 and 19 Table 1 peers)."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: cuda if present; cpu: tiny batch, for "
                                                    "checks)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch (default 128 on a GPU as Table 1, 2 on the CPU)."),
    dtype: Optional[str] = typer.Option(None, help="fp16 (default on a GPU: AMP as the paper), bf16 or fp32 (CPU "
                                                   "default)."),
    mode: Optional[str] = typer.Option(None, help="Profiler mode(s), comma-separated: cudagraph (GPU default, the "
                                                  "search's), eager (the paper's; CPU default), compile."),
    warmup: Optional[int] = typer.Option(None, help="Warm-up passes (default 3 on a GPU)."),
    repeats: Optional[int] = typer.Option(None, help="Timed samples (default 10 on a GPU)."),
    official: bool = typer.Option(False, "--official",
                                  help="Also measure NVIDIA's FasterViT code (fastervit package)."),
    tables: bool = typer.Option(False, "--tables", help="Also the throughput ratios of Tables S.2 and S.3 (both codes "
                                                        "with --official)."),
    out: str = typer.Option("results/compare/compare", help="Output prefix: writes OUT.json, OUT.html, OUT.png."),
    render: Optional[str] = typer.Option(None, help="Only render OUT.html/.png and the table from a JSON written "
                                                    "earlier (e.g. measured on another machine)."),
    plotlyjs: str = typer.Option("embed", help="embed (one offline file) or directory (plotly.min.js beside it)."),
    proxy: Optional[str] = typer.Option(None, help="Also score our FasterViT rows with this accuracy estimator, e.g. "
                                        "supernet:DIR (a supernet of the default space: FasterViT-0..3)."),
    pad_channels: Optional[int] = typer.Option(
        None, "--pad-channels", metavar="N", help="Measure our FasterViT rows with their widths and head dims "
        "zero-padded to multiples of N after the deploy step (8: tensor cores; same outputs). The official code "
        "and the timm peers are measured as they are. Default: off."),
    gelu_epilogue: bool = typer.Option(
        False, "--gelu-epilogue", help="Measure our FasterViT rows with each MLP's fc1 -> GELU as one GEMM with a "
        "bias+GELU epilogue after the deploy step (search_spaces.fuse_gelu_epilogue; tanh-approximate GELU on "
        "CUDA). The official code and the timm peers are measured as they are. Default: off."),
) -> None:
    """Measure FasterViT-0..6 and the paper's Table 1 peers with our profiler; table, figure, JSON, front."""
    import json
    from pathlib import Path

    prefix = Path(out)
    missing = _missing_report_deps()
    if missing and not render:
        console.print(f"note: {missing} not installed: the JSON will be written, the HTML/PNG not (render them "
                      f"elsewhere with --render)", highlight=False)
    if render:
        if pad_channels is not None:
            fail(f"--pad-channels {pad_channels} chooses how models are measured; --render draws a JSON measured "
                 "earlier (its settings say whether it was padded): drop one")
        if gelu_epilogue:
            fail("--gelu-epilogue chooses how models are measured; --render draws a JSON measured earlier (its "
                 "settings say whether the GELU epilogue was on): drop one")
        with user_errors():
            d = json.loads(Path(render).read_text())
    else:
        from nas.compare import CompareSettings, resolve_models, run_compare, save_json

        split = (lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None)  # noqa: E731
        settings = CompareSettings(models=split(models), device=device, batch_size=batch_size, dtype=dtype,
                                   modes=split(mode), warmup=warmup, repeats=repeats, official=official, tables=tables,
                                   proxy=proxy, pad_channels=pad_channels,
                                   gelu_epilogue=gelu_epilogue)
        with user_errors():
            settings = settings.resolved()
            resolve_models(settings.models)
        d = _run(settings, run_compare)
        path = save_json(d, prefix.with_suffix(".json"))
        console.print(f"json: {path}", highlight=False)
    _print(d)
    if missing:
        fail(f"cannot write the HTML/PNG figure: {missing} not installed; render the JSON where they are: "
             f"`nas compare --render {prefix.with_suffix('.json')} --out {prefix}`", code=1)
    from nas.compare_report import write_compare_html, write_compare_png

    with user_errors():
        html = write_compare_html(d, prefix.with_suffix(".html"), plotlyjs=plotlyjs)
    png = write_compare_png(d, prefix.with_suffix(".png"))
    console.print(f"report: {html}\nfigure: {png}", highlight=False)


def _run(settings, run_compare) -> dict:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None)

        def step(label: str, done: int, total: int) -> None:
            bar.update(task, description=f"measuring {label}", completed=done, total=total)

        result = run_compare(settings, on_step=step)
    return result.to_dict()


def _missing_report_deps() -> str:
    """'' when plotly and matplotlib import, else their names (the figure needs both)."""
    import importlib

    missing = []
    for mod in ("plotly.graph_objects", "matplotlib"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod.split(".")[0])
    return " and ".join(missing)
