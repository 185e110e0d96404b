"""Small helpers shared by the subcommands: clean errors, config resolution, JSON output."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn, Optional, Sequence

import typer
from rich.console import Console

from nas.storage import os_message

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line and exit non-zero (no traceback)."""
    from rich.markup import escape  # messages are text: "nas-fastervit[ray]" must not be read as a style tag

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad config, missing file or dataset) into one message."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    except OSError as e:  # read-only folder, full disk...: the file and the reason, no traceback
        fail(os_message(e, str(e.filename) if e.filename else "a file"))


def typed(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or from the environment), not its default."""
    source = ctx.get_parameter_source(name)  # typer's own click: its enum, compared by name
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def refuse_typed(ctx: typer.Context, names: Sequence[str], because: str) -> None:
    """Refuse (ValueError) options the user typed that ``because`` makes meaningless."""
    for name in names:
        if typed(ctx, name):
            raise ValueError(f"--{name.replace('_', '-')} {ctx.params[name]} does nothing with {because}; drop one")


def load_config(spec: str) -> Any:
    """A FasterViTConfig from a preset name or a config JSON path (errors as messages)."""
    from search_spaces import resolve_config

    with user_errors():
        return resolve_config(spec)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------ machine limits
BIG_DEPTH = 64  # above this many blocks, params are extrapolated from one block per stage (a meta build is slow)


def machine_memory() -> int:
    """Physical memory in bytes (Linux sysconf; 16 GiB when it cannot tell)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def extrapolated_params(cfg: Any) -> tuple[int, list[int]]:
    """Params of ``cfg`` from configs of depth 1 and 2 per stage (params are linear in each stage's
    depth: its blocks are alike), and the params of one block of each stage."""
    from evaluators.cost import analytic_params

    n = len(cfg.depths)
    one = cfg.replace(depths=(1,) * n)
    p1 = analytic_params(one)
    per = [analytic_params(one.replace(depths=tuple(2 if j == i else 1 for j in range(n)))) - p1 for i in range(n)]
    return p1 + sum((d - 1) * b for d, b in zip(cfg.depths, per)), per


def check_buildable(cfg: Any, *, memory: Optional[int] = None) -> Optional[int]:
    """Refuse (ValueError naming the knob and the estimate) a config whose fp32 weights or one image's
    first feature map would not fit in this machine's memory. Returns the params when it had to
    extrapolate them (a deep config), else None."""
    memory = machine_memory() if memory is None else memory
    gib = 1 << 30
    h, w = cfg.resolution
    first = cfg.stages[0]
    act = first.feature[0] * first.feature[1] * first.width * 4
    if act > memory:
        raise ValueError(f"resolution={h}x{w}: one image's first-stage feature map alone needs ~{act / gib:.3g} GiB "
                         f"(fp32, batch 1), more than this machine's {memory / gib:.3g} GiB; use a smaller resolution")
    if sum(cfg.depths) <= BIG_DEPTH:
        return None
    params, per = extrapolated_params(cfg)
    if params * 4 > memory:
        i = max(range(len(per)), key=lambda j: per[j] * cfg.depths[j])
        raise ValueError(f"depths[{i}]={cfg.depths[i]}: the network would have ~{params / 1e9:.3g} G parameters "
                         f"(~{params * 4 / gib:.3g} GiB in fp32; {per[i]:,} per block of stage {i}), more than this "
                         f"machine's {memory / gib:.3g} GiB of memory; use fewer blocks")
    return params
