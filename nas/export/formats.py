"""Export formats by name (``--formats``): a writer ``(ctx, path) -> metadata`` and a runner that
loads the file back for the checks. Add one: a runner plus ``@register_format``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import timm
import torch

from search_spaces import FasterViT, FasterViTConfig, load_model
from search_spaces.io import save_weights

from .base import TRACE_BATCH, ExportError, _Context
from .onnx_export import _quiet_tracing, export_onnx

__all__ = ["ExportFormat", "FORMATS", "register_format", "parse_formats"]


@dataclass(frozen=True)
class ExportFormat:
    """One file format: ``write`` writes ``filename`` into the folder and returns metadata;
    ``runner`` loads it back as a function ``numpy (B, C, H, W) float32 -> numpy outputs``."""

    name: str
    filename: str
    description: str
    write: Callable[[_Context, Path], dict[str, Any]]
    runner: Callable[[Path], dict[str, Callable[[Any], Any]]]


FORMATS: dict[str, ExportFormat] = {}


def register_format(name: str, filename: str, description: str,
                    runner: Callable[[Path], dict[str, Callable[[Any], Any]]]) -> Callable:
    """Decorator registering a writer ``(ctx, path) -> metadata`` as format ``name``."""
    def deco(write: Callable[[_Context, Path], dict[str, Any]]) -> Callable:
        if name in FORMATS:
            raise ValueError(f"export format {name!r} is already registered")
        FORMATS[name] = ExportFormat(name, filename, description, write, runner)
        return write

    return deco


def parse_formats(formats: Union[str, Sequence[str]]) -> list[str]:
    """'onnx,pt' -> ['safetensors', 'onnx', 'pt'] (safetensors always comes first; unknown names refused)."""
    names = [s.strip() for s in (formats.split(",") if isinstance(formats, str) else formats) if s.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {sorted(FORMATS)}")
    out = ["safetensors"]
    for n in names:
        if n not in out:
            out.append(n)
    return out


def _torch_runner(module: Any) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def _safetensors_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    via_timm = timm.create_model("nas_faster_vit", config=str(folder / "config.json"), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    return {"search_spaces.load_model": _torch_runner(load_model(folder).eval()),
            "timm.create_model": _torch_runner(via_timm.eval())}


@register_format("safetensors", "model.safetensors", "state dict (safetensors): search_spaces.load_model / timm",
                 _safetensors_runner)
def _write_safetensors(ctx: _Context, path: Path) -> dict[str, Any]:
    save_weights(ctx.model, path)
    return {}


def _pt_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    model = FasterViT(FasterViTConfig.load(folder / "config.json"))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True), strict=True)
    return {"torch.load + load_state_dict": _torch_runner(model.eval())}


@register_format("pt", "model.pt", "state dict (torch.save; load with torch.load(weights_only=True))", _pt_runner)
def _write_pt(ctx: _Context, path: Path) -> dict[str, Any]:
    torch.save({k: v.detach().cpu().contiguous() for k, v in ctx.model.state_dict().items()}, path)
    return {}



def _torchscript_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    with _quiet_tracing():
        module = torch.jit.load(str(folder / "model.torchscript.pt"), map_location="cpu")
    return {"torch.jit.load": _torch_runner(module)}


@register_format("torchscript", "model.torchscript.pt",
                 "torch.jit.trace of the deployed model (dynamic batch; TorchScript is deprecated, prefer ONNX)",
                 _torchscript_runner)
def _write_torchscript(ctx: _Context, path: Path) -> dict[str, Any]:
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(ctx.deployed, ctx.example(), check_trace=False)
    traced.save(str(path))
    return {"traced_batch": TRACE_BATCH, "deployed": True}


def _onnx_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return {"onnxruntime (CPU)": lambda x: sess.run(None, {name: x})[0]}


@register_format("onnx", "model.onnx", "ONNX of the deployed model (dynamic batch axis)", _onnx_runner)
def _write_onnx(ctx: _Context, path: Path) -> dict[str, Any]:
    return export_onnx(ctx.deployed, path, opset=ctx.opset, example=ctx.example())

