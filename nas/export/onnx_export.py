"""ONNX export of a (deployed) FasterViT with a dynamic batch axis; quiet tracing."""

from __future__ import annotations

import copy
import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

from .base import MIN_OPSET, TRACE_BATCH, ExportError

__all__ = ["export_onnx"]


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """The tracer warns where Python branches on spatial sizes (window padding): the resolution is
    fixed in an export, only the batch axis is dynamic, so those warnings do not apply. The legacy
    ONNX exporter's deprecation notice is silenced too (see ``export_onnx``)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*", category=FutureWarning)
        yield



def export_onnx(model: Any, path: Union[str, Path], *, opset: int = MIN_OPSET, example: Any = None,
                exporter: str = "auto") -> dict[str, Any]:
    """Write ``model`` (a FasterViT; deployed first if it is not) as ONNX with a dynamic batch axis.

    ``exporter``: ``"torchscript"`` (torch's TorchScript-based exporter, ``dynamo=False``; needs
    nothing beyond onnx), ``"dynamo"`` (the torch.export-based exporter; needs ``onnxscript`` and
    writes opset >= 18), or ``"auto"``: torchscript while this torch still has it, else dynamo.
    SDPA with the float bias mask is decomposed into MatMul/Softmax at opset 17.
    Returns metadata: exporter, opset (read back from the file), input/output names, dynamic axes.
    """
    import inspect

    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset={opset} must be >= {MIN_OPSET}")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ExportError(f"exporter={exporter!r} must be 'auto', 'torchscript' or 'dynamo'")
    if not getattr(model, "deployed", False):
        model = copy.deepcopy(model).switch_to_deploy(fuse_bn=True)
    cfg = model.config
    if example is None:
        example = torch.zeros(TRACE_BATCH, cfg.in_chans, *cfg.resolution)
    in_name, out_name = "pixel_values", "logits" if cfg.num_classes > 0 else "features"
    has_legacy = "dynamo" in inspect.signature(torch.onnx.export).parameters
    if exporter == "auto":
        exporter = "torchscript" if has_legacy else "dynamo"
    path = Path(path)
    with _quiet_tracing(), torch.no_grad():
        if exporter == "torchscript":
            if not has_legacy:
                raise ExportError(f"torch {torch.__version__} has no TorchScript-based ONNX exporter; "
                                  f"use the dynamo exporter (pip install onnxscript)")
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[in_name], output_names=[out_name], do_constant_folding=True,
                              dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}})
        else:
            if importlib.util.find_spec("onnxscript") is None:
                raise ExportError("the dynamo ONNX exporter needs onnxscript: pip install onnxscript")
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=max(opset, 18),
                              input_names=[in_name], output_names=[out_name], dynamic_shapes=({0: batch},),
                              external_data=_param_bytes(model) > 1_800_000_000, verbose=False)
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path))
    real_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"exporter": exporter, "opset": real_opset, "input": in_name, "output": out_name,
            "input_shape": ["batch", cfg.in_chans, *cfg.resolution], "dynamic_axes": {in_name: [0], out_name: [0]},
            "deployed": True, "fuse_bn": True}


def _param_bytes(model: Any) -> int:
    """Bytes of parameters and buffers: above ~2 GB an ONNX file needs external data (protobuf limit)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if t is not None)

