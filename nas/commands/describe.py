"""``nas describe`` and ``nas presets``: what a network is and what it costs statically."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import check_buildable, console, load_config, print_json, user_errors

# Paper Table 1 (ImageNet-1K, 224²): params (M), FLOPs (G). FV-4's printed 424.6M matches no
# released code; the official code builds 365.6M (see README).
PAPER_TABLE1 = {
    "faster_vit_0_224": (31.4, 3.3),
    "faster_vit_1_224": (53.4, 5.3),
    "faster_vit_2_224": (75.9, 8.7),
    "faster_vit_3_224": (159.5, 18.2),
    "faster_vit_4_224": (424.6, 36.6),
    "faster_vit_5_224": (957.5, 113.0),
    "faster_vit_6_224": (1360.0, 142.0),
}


def describe(
    config: str = typer.Argument(..., metavar="NAME|CONFIG.json", help="Preset name or config JSON file."),
    resolution: Optional[int] = typer.Option(None, help="Override the config's (square) resolution."),
    fvcore: bool = typer.Option(False, "--fvcore", help="Count FLOPs by tracing with fvcore (slow) instead of "
                                "the analytic count (instant, equal by test)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON record instead of tables."),
) -> None:
    """Params, FLOPs (fvcore's count), per-stage shapes, tokens per window and carrier tokens of one network."""
    from rich.table import Table

    from evaluators.cost import CostRecord, analytic_flops, stage_table, static_cost

    cfg = load_config(config)
    with user_errors():
        if resolution is not None:
            cfg = cfg.replace(resolution=resolution)
        params = check_buildable(cfg)  # refuses what this machine cannot build, before any slow work
        if params is not None and not fvcore:  # deep: a meta build would take minutes; linear in depth
            cost = CostRecord(params, analytic_flops(cfg), tuple(cfg.resolution))
        else:
            cost = static_cost(cfg, method="fvcore" if fvcore else "analytic")
    stages = stage_table(cfg)
    if as_json:
        print_json(dict(name=config, arch_id=cfg.arch_id, config=cfg.to_dict(), **cost.to_dict(), stages=stages))
        return
    console.print(f"[bold]{config}[/]  arch_id {cfg.arch_id}")
    console.print(cfg.summary(), highlight=False)
    console.print(f"params {cost.params_m:.2f} M   FLOPs (MACs) {cost.gflops:.3f} G at "
                  f"{cfg.resolution[0]}x{cfg.resolution[1]}", highlight=False)
    t = Table("stage", "kind", "depth", "width", "heads", "feature", "padded", "win", "windows",
              "tok/win", "CT/win", "CTs")
    for r in stages:
        t.add_row(*("" if r[k] is None else str(r[k]) for k in (
            "stage", "kind", "depth", "width", "heads", "feature", "padded", "window", "windows",
            "tokens_per_window", "ct_per_window", "carrier_tokens")))
    console.print(t)


def presets(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the presets with params and FLOPs, beside the paper's Table 1."""
    from rich.table import Table

    from evaluators.cost import static_cost
    from search_spaces import PRESETS

    rows = []
    with user_errors():
        for name, cfg in PRESETS.items():
            c = static_cost(cfg)
            paper = PAPER_TABLE1.get(name)
            rows.append(dict(name=name, params_m=round(c.params_m, 2), gflops=round(c.gflops, 3),
                             resolution=list(cfg.resolution), paper_params_m=paper[0] if paper else None,
                             paper_gflops=paper[1] if paper else None, summary=cfg.summary()))
    if as_json:
        print_json(rows)
        return
    t = Table("preset", "params (M)", "paper", "FLOPs (G)", "paper")
    for r in rows:
        t.add_row(str(r["name"]), f"{r['params_m']:.2f}",
                  "" if r["paper_params_m"] is None else f"{r['paper_params_m']}", f"{r['gflops']:.2f}",
                  "" if r["paper_gflops"] is None else f"{r['paper_gflops']}")
    console.print(t)
