"""``nas space show [FILE]``: print a search space and its size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import typer

from ._common import console, print_json, user_errors

app = typer.Typer(no_args_is_help=True)

EXHAUSTIVE_LIMIT = 20_000  # knob assignments checked one by one; larger spaces are estimated by sampling
SAMPLES = 2_000


@dataclass
class Buildable:
    """How many knob assignments the generator accepts: exact (``checked`` = all) or estimated."""

    checked: int
    buildable: Optional[int]  # accepted among the checked ones
    exact: bool
    first_refusal: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dict(checked=self.checked, buildable=self.buildable, exact=self.exact, first_refusal=self.first_refusal)

    def line(self, size: float) -> str:
        if self.exact:
            if self.buildable == self.checked:
                return f"size: {self.buildable:,} architectures (every knob assignment builds)"
            why = f"; e.g. {self.first_refusal}" if self.first_refusal else ""
            if self.buildable == 0:
                return (f"size: 0 buildable architectures: the generator refuses all {self.checked:,} knob "
                        f"assignments{why}")
            return (f"size: {self.buildable:,} buildable architectures of {self.checked:,} knob assignments "
                    f"({self.checked - (self.buildable or 0):,} refused by the generator{why})")
        total = "infinite (continuous knobs)" if not math.isfinite(size) else f"{size:,.0f} knob assignments"
        share = (self.buildable or 0) / max(1, self.checked)
        why = f"; e.g. {self.first_refusal}" if self.first_refusal else ""
        return (f"size: {total}; too many to check one by one: {100 * share:.1f}% of {self.checked:,} random points "
                f"build (an estimate{why})")


def count_buildable(sp: Any, *, limit: int = EXHAUSTIVE_LIMIT, samples: int = SAMPLES) -> Buildable:
    """Count the knob assignments the generator builds: all of them when there are at most ``limit``."""
    import numpy as np

    size = sp.size()
    refusal: list[str] = []

    def ok(values: dict[str, Any]) -> bool:
        try:
            sp.apply(values)
            return True
        except ValueError as e:
            if not refusal:
                refusal.append(str(e))
            return False

    if math.isfinite(size) and size <= limit:
        n = good = 0
        for values in _assignments(sp, 0, {}):
            n += 1
            good += ok(values)
        return Buildable(n, good, True, refusal[0] if refusal else None)
    rng = np.random.default_rng(0)
    good = 0
    for _ in range(samples):
        try:
            sp.sample_random(rng)
            good += 1
        except ValueError as e:
            if not refusal:
                refusal.append(str(e))
    return Buildable(samples, good, False, refusal[0] if refusal else None)


def _assignments(sp: Any, i: int, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if i == len(sp.knobs):
        yield dict(values)
        return
    k = sp.knobs[i]
    if not sp.active(k, values):
        yield from _assignments(sp, i + 1, values)
        return
    for v in k.values():
        values[k.name] = v
        yield from _assignments(sp, i + 1, values)
        del values[k.name]


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
        count = count_buildable(sp)
    if as_json:
        print_json(dict(sp.to_dict(), size=size if math.isfinite(size) else "inf", source=sp.source,
                        buildable=count.to_dict()))
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
    console.print(count.line(size), highlight=False)
    if count.buildable == 0:
        raise typer.Exit(1)
