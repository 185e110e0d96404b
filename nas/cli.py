"""The ``nas`` command: a table of subcommands, each a thin layer over the Python API.

Every subcommand module imports its heavy dependencies (torch, optuna, ray) inside the command,
so ``nas --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="nas",
    help="Design-space explorer for FasterViT: generate, profile, score, search, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (command name, module under nas.commands, function) — one row per subcommand.
COMMANDS: list[tuple[str, str, str]] = [
    ("describe", "describe", "describe"),
    ("presets", "describe", "presets"),
    ("profile", "profile", "profile"),
    ("proxies", "proxies", "proxies"),
    ("search", "search", "search"),
    ("pareto", "pareto", "pareto"),
    ("confirm", "confirm", "confirm"),
    ("dashboard", "dashboard", "dashboard"),
    ("export", "export", "export"),
    ("finetune", "finetune", "finetune"),
    ("compare", "compare", "compare"),
    ("worker", "search", "worker"),
]
# (group name, module) — subcommand groups that bring their own typer.Typer as `app`.
GROUPS: list[tuple[str, str, str]] = [
    ("space", "space", "Show and check search-space files."),
    ("predictor", "predictor", "Fit, list and show throughput predictors (GPU-less search)."),
    ("supernet", "supernet", "Train a once-for-all supernet of a space; inherited-weight accuracy."),
]


def _register() -> None:
    for name, module, func in COMMANDS:
        try:
            mod = importlib.import_module(f"nas.commands.{module}")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"nas.commands.{module}":
                raise
            continue
        fn = getattr(mod, func, None)
        if fn is not None:
            app.command(name, hidden=name == "worker")(fn)
    for name, module, help_ in GROUPS:
        try:
            mod = importlib.import_module(f"nas.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"nas.commands.{module}":
                raise
            continue
        app.add_typer(mod.app, name=name, help=help_)


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
