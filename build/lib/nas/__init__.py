"""How to search and what to hand out: studies, Pareto reports, dashboard, export, the ``nas`` CLI.

The top level imports nothing heavy: ``nas --help`` starts without torch, optuna or ray.
"""

__version__ = "0.1.0"
