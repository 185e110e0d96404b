"""``nas pareto`` in Python: a study's front and hypervolume (``nas.front``), its HTML/PNG report
(``nas.report``), and bringing an older study's labels up to date (``nas.migrate``).

    >>> from nas.pareto import load_study, pareto_rows, write_report
    >>> study = load_study("default", "sqlite:///results/nas.db")
    >>> write_report(study, "results/reports/default.html")
"""

from __future__ import annotations

from .front import (
                    REFERENCE_RULE,
                    ReferencePoint,
                    dominated_by,
                    dominates_presets,
                    failure_rows,
                    feasible_trials,
                    hypervolume,
                    hypervolume_history,
                    load_study,
                    maximize_flags,
                    objective_labels,
                    objective_names,
                    pareto_rows,
                    pareto_trials,
                    parse_reference,
                    reference_point,
                    reference_problem,
                    study_references,
                    study_summary,
)
from .migrate import label_study
from .report import front_noise, write_report

__all__ = ["load_study", "objective_names", "objective_labels", "maximize_flags", "feasible_trials", "pareto_trials",
           "reference_problem", "reference_point", "hypervolume", "hypervolume_history", "pareto_rows",
           "ReferencePoint", "study_references", "parse_reference", "dominates_presets", "dominated_by",
           "failure_rows", "study_summary", "REFERENCE_RULE", "write_report", "front_noise", "label_study"]
