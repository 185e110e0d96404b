"""The deploy-time steps a measurement was taken with, in the words every label uses (``padded to N``
for ``--pad-channels``, ``GELU epilogue`` for ``--gelu-epilogue``). Its own module, free of torch, so
that the study labels (``nas.labels``) and the compare report rendered without torch
(``nas.compare_report``) read the same words."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["deploy_steps"]


def deploy_steps(settings: Mapping[str, Any]) -> list[str]:
    """The deploy-time steps measured values were taken with, as labels read them: ``padded to N``
    (``--pad-channels``), ``GELU epilogue`` (``--gelu-epilogue``); none for settings made before them."""
    steps = [f"padded to {settings['pad_channels']}"] if settings.get("pad_channels") else []
    return steps + (["GELU epilogue"] if settings.get("gelu_epilogue") else [])
