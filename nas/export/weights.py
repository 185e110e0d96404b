"""The weights an export hands out: a file, a trained supernet, a fine-tuning run, or an initialisation.

``--weights`` takes a safetensors file or a torch checkpoint (official FasterViT keys are mapped by
``checkpoint_filter_fn``) or ``supernet:DIR`` (the point's weights extracted from a trained
weight-sharing supernet, BatchNorm recalibrated for it: ``evaluators.supernet.extract_weights``).
``Finetune`` then trains the point on a dataset from those weights (or from scratch), fully or
head-only, with the trainer (``evaluators.supernet_finetune.finetune``). The description returned
with the model goes into ``export.json`` and the model card: where the weights come from, and for
a fine-tuning run its recipe and validation top-1.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from evaluators.checks import check_int, check_number
from evaluators.proxies import init_model
from evaluators.supernet import extract_weights
from evaluators.supernet_finetune import finetune
from evaluators.supernet_folder import SupernetFolder
from search_spaces import FasterViT, FasterViTConfig, checkpoint_filter_fn

from .base import ExportError

__all__ = ["Finetune", "build_export_model", "SUPERNET_PREFIX"]

SUPERNET_PREFIX = "supernet:"


@dataclass(frozen=True)
class Finetune:
    """Fine-tune the exported point on ``data`` for ``epochs`` before writing it (``nas export --finetune``)."""

    epochs: float
    data: str
    head_only: bool = False
    lr: float = 1e-4
    batch_size: int = 128
    resolution: Optional[int] = None  # training resolution (None: the config's)
    subset: Optional[int] = None
    device: Optional[str] = None
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check_number("--finetune", self.epochs, minimum=0, low_open=True)
        check_number("--finetune-lr", self.lr, minimum=0, low_open=True)
        check_int("--finetune-batch-size", self.batch_size, minimum=1)
        check_int("--finetune-resolution", self.resolution, minimum=16, optional=True)
        check_int("--finetune-subset", self.subset, minimum=1, optional=True)
        if not isinstance(self.data, str) or not self.data:
            raise ExportError("--finetune needs --data NAME (the dataset to fine-tune on)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_weights(model: Any, path: Path) -> None:
    """Load a safetensors file or a torch checkpoint (official keys accepted), strictly."""
    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist" + (" (a folder)" if path.is_dir() else ""))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling, truncated files, safetensors header errors: one line, no traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"weights {path} are not a safetensors file or a torch state dict "
                          f"({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise ExportError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        msg = str(e).strip().splitlines()
        raise ExportError(f"weights {path} do not fit {model.config.summary()}: {msg[0] if msg else e}") from None


def _supernet_weights(cfg: FasterViTConfig, spec: str) -> tuple[FasterViT, dict[str, Any]]:
    directory = spec[len(SUPERNET_PREFIX):]
    folder = SupernetFolder(directory)
    if not directory or not folder.exists():
        raise ExportError(f"--weights {spec}: no trained supernet there "
                          f"(train one with `nas supernet train --out DIR`)")
    meta = folder.read()
    try:
        model = extract_weights(cfg, folder.path)
    except ValueError as e:  # not finished, another space, a config it cannot run
        raise ExportError(f"--weights {spec}: {e}") from None
    info = {"kind": "supernet", "source": str(folder.path.resolve()),
            "supernet": dict(space=meta["space"]["name"], data=meta["data"], epochs=meta["recipe"]["epochs"],
                             resolution=meta["resolution"], completed=meta.get("completed")),
            "note": f"inherited from a weight-sharing supernet trained {meta['recipe']['epochs']:g} epochs on "
                    f"{meta['data']} at {meta['resolution'][0]} px; BatchNorm statistics recalibrated for this "
                    f"architecture on its training images"}
    return model, info


def _initial(cfg: FasterViTConfig, weights: Union[None, str, Path], seed: int) -> tuple[FasterViT, dict[str, Any]]:
    """The point with ``weights`` (a file or ``supernet:DIR``), or a seeded initialisation when None."""
    if weights is None:
        return init_model(cfg, seed), {
            "kind": "initialised", "seed": seed,
            "note": "random initialisation (the FasterViT init under torch.manual_seed(seed)); NOT trained"}
    if str(weights).startswith(SUPERNET_PREFIX):
        return _supernet_weights(cfg, str(weights))
    model = init_model(cfg, seed)
    path = Path(weights)
    _load_weights(model, path)
    return model, {"kind": "trained", "source": str(path), "sha256": _sha256(path)}


def _finetuned(cfg: FasterViTConfig, weights: Union[None, str, Path], spec: Finetune, seed: int
               ) -> tuple[FasterViT, dict[str, Any]]:
    """``cfg`` fine-tuned from ``weights`` (None: scratch) on ``spec.data``; the model at ``cfg``'s resolution."""
    init = "scratch" if weights is None else str(weights)
    if weights is not None and not init.startswith(SUPERNET_PREFIX) and not Path(init).is_file():
        raise ExportError(f"weights file {init} does not exist")
    try:
        model, r = finetune(cfg, data=spec.data, init=init, epochs=spec.epochs, head_only=spec.head_only, lr=spec.lr,
                            batch_size=spec.batch_size, resolution=spec.resolution, subset=spec.subset, seed=seed,
                            device=spec.device, data_dir=spec.data_dir, progress=True)
    except (ValueError, FileNotFoundError) as e:
        raise ExportError(f"--finetune: {e}") from None
    if r.status != "ok":
        raise ExportError(f"--finetune stopped: {r.reason}")
    out = FasterViT(cfg.replace(num_classes=model.num_classes))  # back at the exported resolution
    out.load_state_dict(model.state_dict(), strict=True)
    info = {"kind": "fine-tuned", "init": init, "source": init, "data": spec.data, "head_only": spec.head_only,
            "val_top1": r.top1, "init_top1": r.init_top1, "top1_history": r.top1_history, "steps": r.steps,
            "seconds": round(r.seconds, 1), "images_per_s": r.images_per_s, "recipe": r.recipe,
            "finetune": asdict(spec)}
    return out.eval(), info


def build_export_model(cfg: FasterViTConfig, *, weights: Union[None, str, Path] = None, seed: int = 0,
                       finetune_spec: Optional[Finetune] = None) -> tuple[FasterViT, dict[str, Any]]:
    """The model to export (eval mode) and a description of its weights.

    ``weights``: a file, ``supernet:DIR`` or None (a fresh initialisation under
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``: ``evaluators.proxies.init_model``,
    the one seeded builder, so an export under seed S has the weights the zero-cost proxies scored
    under seed S). ``finetune_spec``: then fine-tune from them (None weights: from scratch); the
    model's class count follows the fine-tuning data.
    """
    if finetune_spec is not None:
        return _finetuned(cfg, weights, finetune_spec, seed)
    model, info = _initial(cfg, weights, seed)
    return model.eval(), info
