"""Export constants, the error type and what a format writer receives (``_Context``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORT_SCHEMA_VERSION = 1
DEFAULT_FORMATS = ("safetensors", "onnx")
MIN_OPSET = 17
TOLERANCE = 1e-4  # max |y - y_ref| <= TOLERANCE * max(1, max |y_ref|), fp32
CHECK_BATCH_SIZES = (1, 3)  # verified batch sizes; the traced/exported graphs are built at batch 2
TRACE_BATCH = 2
PAD_MULTIPLE = 8  # the model card's deploy advice: search_spaces.pad_channels(model, 8) (fp16 tensor cores, SDPA)
EXPORT_FILE = "export.json"
CARD_FILE = "README.md"


class ExportError(ValueError):
    """Something the user asked for cannot be exported; the message says what and why."""


# ------------------------------------------------------------------------------------------ formats
@dataclass
class _Context:
    """What a format writer gets: the (eval, not deployed) model, its deployed copy, the folder."""

    model: Any
    folder: Path
    opset: int
    seed: int
    _deployed: Any = None

    @property
    def deployed(self) -> Any:
        """``deepcopy(model).switch_to_deploy(fuse_bn=True)``: biases as constants, BN folded (built once)."""
        if self._deployed is None:
            self._deployed = copy.deepcopy(self.model).switch_to_deploy(fuse_bn=True)
        return self._deployed

    def example(self, batch: int = TRACE_BATCH) -> Any:
        import torch

        cfg = self.model.config
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(batch, cfg.in_chans, *cfg.resolution, generator=g)

