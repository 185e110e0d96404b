"""The two places where ``nas`` needs more than Optuna's public API, and why (nowhere else may).

- ``storage_of(study)``: the storage a ``Study`` writes to. Heartbeats, stale-trial checks and the
  Ray driver write trial system attributes and read trials by id through the public
  ``BaseStorage`` API, but Optuna 5 has no public accessor from a study to its storage
  (``Study._storage``); every study here is opened by ``nas.storage.get_storage``, so the object is
  always one of ours.
- ``trial_of(study, trial_id)``: an ``optuna.trial.Trial`` for a trial another process asked for. A
  Ray actor evaluates the trial the driver's sampler created (``study.ask()`` there): replaying its
  ``suggest_*`` calls needs the trial object, and Optuna's only way to build one for an existing
  trial id is the ``Trial(study, trial_id)`` constructor, public but documented "not recommended for
  direct use".

Ray Tune is used through its public API only (a ``ray.tune.search.Searcher`` subclass, ``tune.report``,
``Stopper``, ``Callback``: ``nas.ray_tune``).
"""

from __future__ import annotations

from typing import Any

import optuna

__all__ = ["storage_of", "trial_of"]


def storage_of(study: Any) -> Any:
    """The storage ``study`` writes to (see the module docstring)."""
    return study._storage


def trial_of(study: Any, trial_id: int) -> optuna.trial.Trial:
    """The ``Trial`` of an existing RUNNING trial id of ``study``, as the driver asked it (module docstring)."""
    return optuna.trial.Trial(study, trial_id)
