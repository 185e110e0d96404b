"""GELU in the GEMM epilogue: each MLP's fc1 -> GELU as one ``torch._addmm_activation`` call.

A deploy-time transform, run after ``switch_to_deploy`` (``fuse_gelu_epilogue(model)``), before or
after ``search_spaces.padding.pad_channels``. Why: best mode (``torch.compile`` without
max-autotune) leaves the MLP's fc1 GEMM to cuBLAS as an extern call that Inductor cannot fuse
into, so GELU runs as its own kernel that reads and writes the 4x-wide hidden activation once more
(FasterViT-2 at batch 128 on an H200: ~640 µs of ~8,300 µs per forward). ``_addmm_activation(bias,
x, W.t(), use_gelu=True)`` asks cuBLASLt for a bias+GELU epilogue instead, and Inductor keeps the
op as a fallback extern kernel (``make_fallback(aten._addmm_activation)``), so the pass goes.

What the op computes (PyTorch 2.14, checked in its source and on the CPU):

- CUDA: tanh-approximate GELU, in the cuBLASLt epilogue when the call qualifies (1-D contiguous
  bias, contiguous 2-D output, fp32/fp16/bf16, both matrices wider than one row and column;
  ``DISABLE_ADDMM_CUDA_LT=1`` turns it off) and otherwise as a GEMM followed by
  ``gelu_(approximate="tanh")``: the numerics are tanh-approximate either way.
- CPU: exact (erf) GELU, as ``nn.GELU()`` computes it, so a fused model's logits equal the
  unfused model's on the CPU.

So on CUDA the fused model is not bit-for-bit the deployed one: its MLPs use tanh-approximate
GELU (``bench/deploy_fusions.py`` states the tolerance and checks it on the GPU).

Autocast: ``_addmm_activation`` is on the CPU autocast list but has no CUDA autocast rule (it would
run in fp32, on the fp32 LayerNorm output and fp32 weights); ``GeluEpilogueMlp`` casts its
operands to the autocast dtype itself, as autocast does for ``nn.Linear``.

State dict: ``GeluEpilogueMlp`` keeps ``fc1``, ``act`` and ``fc2`` as they were, so the fused
model's ``state_dict`` has the same keys and tensors as the deployed one. As for any deployed model
(BatchNorm folded, positional tables in non-persistent buffers), what is saved is the weights from
before ``switch_to_deploy``; loading is build, ``load_state_dict``, deploy, fuse. Export
(``nas.export``) is not changed by this step.

Parts left as separate GELUs are listed with their reason in ``model.gelu_epilogue.kept``
(``GeluEpilogue``), for the profiler's record.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .fastervit import ConvStage, FasterViT, GeluEpilogue, Mlp

__all__ = ["fuse_gelu_epilogue", "GeluEpilogueMlp"]


class GeluEpilogueMlp(Mlp):
    """``Mlp`` whose fc1 -> GELU is one ``torch._addmm_activation`` (bias and GELU in the GEMM's epilogue).

    Shares the ``fc1``/``fc2`` layers of the ``Mlp`` it replaces (channel padding, before or after,
    pads them in place) and keeps its state-dict keys.
    """

    def __init__(self, mlp: Mlp):
        nn.Module.__init__(self)
        self.fc1, self.act, self.fc2 = mlp.fc1, mlp.act, mlp.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight: torch.Tensor = self.fc1.weight
        bias: Optional[torch.Tensor] = self.fc1.bias
        assert bias is not None  # fuse_gelu_epilogue fuses MLPs whose fc1 has a bias only
        device = x.device.type
        if torch.is_autocast_enabled(device):  # no CUDA autocast rule for this op: cast as autocast does for linear
            dtype = torch.get_autocast_dtype(device)
            x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
        lead = x.shape[:-1]
        h = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
        return self.fc2(h.view(*lead, h.shape[-1]))


@torch.no_grad()
def fuse_gelu_epilogue(model: FasterViT) -> GeluEpilogue:
    """Replace every MLP of a deployed ``model`` (in place) by a ``GeluEpilogueMlp``.

    Returns the names of the fused MLPs and every GELU kept as it is with its reason; the same
    record is left in ``model.gelu_epilogue``. Works before or after ``pad_channels``.

    Raises ``TypeError`` for a model other than a FasterViT and ``ValueError`` for a model that is
    not deployed or already fused.
    """
    if not isinstance(model, FasterViT):
        raise TypeError(f"fuse_gelu_epilogue needs a FasterViT, got {type(model).__name__}")
    if not model.deployed:
        raise ValueError("fuse_gelu_epilogue fuses a deployed model (an inference-only step): call "
                         "model.switch_to_deploy() first")
    if model.gelu_epilogue is not None:
        raise ValueError("this model's GELUs are already in the GEMM epilogue; build and deploy a fresh model "
                         "to fuse it again")
    record = GeluEpilogue()
    for i, stage in enumerate(model.stages):
        if isinstance(stage, ConvStage) and len(stage.blocks):
            record.kept.append((f"stages.{i} conv blocks", "GELU after a 3x3 convolution (cuDNN): no GEMM epilogue "
                                "carries it"))
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, Mlp) or isinstance(child, GeluEpilogueMlp):
                continue
            full = f"{name}.{child_name}" if name else child_name
            why = _why_not_fusable(child)
            if why:
                record.kept.append((full, why))
                continue
            setattr(parent, child_name, GeluEpilogueMlp(child))
            record.fused.append(full)
    model.gelu_epilogue = record
    return record


def _why_not_fusable(mlp: Mlp) -> str:
    """Why ``mlp`` keeps its separate GELU ('' when it can be fused)."""
    if type(mlp) is not Mlp:  # a subclass may change forward: no rule knows it
        return f"{type(mlp).__name__} is not the generator's Mlp"
    if type(mlp.act) is not nn.GELU or mlp.act.approximate != "none":
        return f"its activation is {mlp.act!r}, not exact nn.GELU()"
    if mlp.fc1.bias is None:
        return "fc1 has no bias (the epilogue adds one)"
    return ""
