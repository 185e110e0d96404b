"""``nas space show [FILE]``: print a search space and its size."""

from __future__ import annotations

import math
from typing import Optional

import typer

from ._common import console, print_json, user_errors

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(
    space: Optional[str] = typer.Argument(None, help="Built-in space name or YAML file (default: the default space)."),
    as_json: bool = typer.Option(False, "--json", help="Print the space as JSON."),
) -> None:
    """Print the knobs, their choices/ranges and conditions, fixed values, constraints and the space size."""
    from rich.table import Table

    from search_spaces.space import load_space

    with user_errors():
        sp = load_space(space)
        size = sp.size()
    if as_json:
        print_json(dict(sp.to_dict(), size=size if math.isfinite(size) else "inf", source=sp.source))
        return
    for line in sp.describe():
        console.print(line, highlight=False)
    t = Table("knob", "values", "when")
    for k in sp.knobs:
        vals = ", ".join(map(str, k.choices)) if k.choices is not None else \
            f"[{k.low}, {k.high}]" + (f" step {k.step}" if k.step else "") + (" log" if k.log else "")
        t.add_row(k.name, vals, ", ".join(f"{c}={v}" for c, v in k.when))
    console.print(t)
    if sp.constraints:
        console.print("constraints: " + ", ".join(sp.constraints), highlight=False)
    console.print(f"size: {size:,.0f} architectures" if math.isfinite(size) else "size: infinite (continuous knobs)",
                  highlight=False)
