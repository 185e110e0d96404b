"""Bringing older studies up to date: metric names (what optuna-dashboard shows) and portable settings."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import optuna

from . import record as R
from .front import objective_labels, objective_names
from .settings import settings_for_study

__all__ = ["label_study"]


def label_study(study: Any) -> Optional[list[str]]:
    """Give a study made before labels existed its metric names (what optuna-dashboard shows) and
    portable settings (no absolute paths); returns the labels set, or None when it had them."""
    names = objective_names(study)
    metric = list(study.metric_names or [])
    changed = None
    if R.STUDY_OBJECTIVES not in study.user_attrs:
        study.set_user_attr(R.STUDY_OBJECTIVES, names)
    if not metric or metric == names:
        changed = objective_labels(study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(changed)
    settings = study.user_attrs.get(R.STUDY_SETTINGS)
    if isinstance(settings, dict):
        portable = settings_for_study(settings)
        if portable != settings:
            study.set_user_attr(R.STUDY_SETTINGS, portable)
            changed = changed or list(study.metric_names)
    return changed
