"""Hand out one point of a study (or any config) as a model folder people can load.

    >>> from nas.export import export_model
    >>> res = export_model("exports/knee", study="default", pick="knee", formats=("safetensors", "onnx"))
    >>> from search_spaces import load_model
    >>> model = load_model(res.out)

The folder holds ``config.json`` (the FasterViTConfig JSON), ``model.safetensors`` (always: it is
what ``search_spaces.load_model`` and timm read), the requested extra formats (``model.onnx``,
``model.pt``, ``model.torchscript.pt``), ``export.json`` (where it came from, when, which weights,
what was checked) and ``README.md`` (a model card with every measurement of the trial).

Choosing a trial (``select_trial``; ``--pick`` on the command line, repeatable):

- ``knee``: the Pareto trial closest (Euclidean) to the ideal point after min-max normalising each
  objective over the Pareto set: ``n_i = (v_i - best_i) / (worst_i - best_i)`` (0 when an
  objective is constant on the front); the knee minimises ``sqrt(sum n_i^2)``. (A front of two
  points has no knee: both lie at distance 1, which is reported as ambiguous.)
- ``max-<objective>`` / ``min-<objective>``: the complete feasible trial best on that objective of
  the study (e.g. ``max-accuracy``, ``min-latency``); an objective the study lacks is an error.
- a condition such as ``throughput>=8000`` (``NAME op NUMBER``, op in ``<= >= < >``, parsed by
  ``nas.objectives.parse_constraint``) keeps the Pareto trials satisfying it. Conditions may be
  repeated (all must hold) and may name a study objective or another recorded quantity (``params``,
  ``flops``; ``throughput``/``latency``/``memory`` from the profiler record). With conditions
  alone: one trial left -> that one; else, when exactly one study objective is not named by a
  condition (a 2-objective study), the trial best on it; else ambiguous ("add --pick
  max-<objective>"). With one ``knee`` / ``max-`` / ``min-`` added, that chooses among the Pareto
  trials satisfying every condition. Nothing satisfying is an error naming the best value of each
  condition on the front.

Ties between different architectures are an error listing the tied trial numbers; trials that
sampled the same config are one candidate (the lowest trial number is exported).

Everything is written into a temporary folder next to ``out`` and moved into place once complete;
with ``force`` an existing folder is replaced only then. Before the move every written format is
loaded again and run on random inputs of two batch sizes, and must match the PyTorch model.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import tempfile
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

__all__ = ["ExportError", "ExportFormat", "ExportResult", "FORMATS", "register_format", "parse_formats", "Pick",
           "parse_pick", "select_trial", "knee_trial", "export_model", "export_onnx", "build_export_model",
           "model_card", "EXPORT_SCHEMA_VERSION", "DEFAULT_FORMATS", "TOLERANCE", "CHECK_BATCH_SIZES"]

EXPORT_SCHEMA_VERSION = 1
DEFAULT_FORMATS = ("safetensors", "onnx")
MIN_OPSET = 17
TOLERANCE = 1e-4  # max |y - y_ref| <= TOLERANCE * max(1, max |y_ref|), fp32
CHECK_BATCH_SIZES = (1, 3)  # verified batch sizes; the traced/exported graphs are built at batch 2
TRACE_BATCH = 2
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
    import torch

    def run(x: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def _safetensors_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    import timm

    from search_spaces import load_model

    via_timm = timm.create_model("nas_faster_vit", config=str(folder / "config.json"), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    return {"search_spaces.load_model": _torch_runner(load_model(folder).eval()),
            "timm.create_model": _torch_runner(via_timm.eval())}


@register_format("safetensors", "model.safetensors", "state dict (safetensors): search_spaces.load_model / timm",
                 _safetensors_runner)
def _write_safetensors(ctx: _Context, path: Path) -> dict[str, Any]:
    from search_spaces.io import save_weights

    save_weights(ctx.model, path)
    return {}


def _pt_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    import torch

    from search_spaces import FasterViT, FasterViTConfig

    model = FasterViT(FasterViTConfig.load(folder / "config.json"))
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True), strict=True)
    return {"torch.load + load_state_dict": _torch_runner(model.eval())}


@register_format("pt", "model.pt", "state dict (torch.save; load with torch.load(weights_only=True))", _pt_runner)
def _write_pt(ctx: _Context, path: Path) -> dict[str, Any]:
    import torch

    torch.save({k: v.detach().cpu().contiguous() for k, v in ctx.model.state_dict().items()}, path)
    return {}


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


def _torchscript_runner(folder: Path) -> dict[str, Callable[[Any], Any]]:
    import torch

    with _quiet_tracing():
        module = torch.jit.load(str(folder / "model.torchscript.pt"), map_location="cpu")
    return {"torch.jit.load": _torch_runner(module)}


@register_format("torchscript", "model.torchscript.pt",
                 "torch.jit.trace of the deployed model (dynamic batch; TorchScript is deprecated, prefer ONNX)",
                 _torchscript_runner)
def _write_torchscript(ctx: _Context, path: Path) -> dict[str, Any]:
    import torch

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


# ------------------------------------------------------------------------------------------ picking
@dataclass(frozen=True)
class Pick:
    """One ``--pick``: ``kind`` is 'knee', 'max', 'min' or 'condition'."""

    text: str
    kind: str
    objective: Optional[str] = None
    constraint: Any = None  # nas.objectives.Constraint for conditions

    def __str__(self) -> str:
        return self.text


_SELECT = re.compile(r"^\s*(max|min)-([a-z_]+)\s*$")


def parse_pick(text: str) -> Pick:
    """'knee' | 'max-NAME' | 'min-NAME' | a condition 'NAME>=NUMBER' (nas.objectives.parse_constraint)."""
    from .objectives import parse_constraint

    t = text.strip()
    if t == "knee":
        return Pick(t, "knee")
    m = _SELECT.match(t)
    if m:
        return Pick(t, m.group(1), objective=m.group(2))
    try:
        c = parse_constraint(t)
    except ValueError as e:
        raise ExportError(f"--pick {text!r} must be 'knee', 'max-<objective>', 'min-<objective>' or a condition "
                          f"like 'throughput>=8000' ({e})") from None
    return Pick(t, "condition", objective=c.name, constraint=c)


def _config_key(t: Any) -> str:
    return json.dumps(t.user_attrs.get("config"), sort_keys=True) if t.user_attrs.get("config") else f"#{t.number}"


def _numbers(trials: Sequence[Any]) -> str:
    return ", ".join(f"#{t.number}" for t in sorted(trials, key=lambda t: t.number))


def _unique_best(pool: Sequence[Any], score: Callable[[Any], float], what: str) -> Any:
    """The pool's trial with the lowest score; ties between different configs are ambiguous."""
    best = min(score(t) for t in pool)
    tied = [t for t in pool if math.isclose(score(t), best, rel_tol=1e-9, abs_tol=1e-12)]
    configs = {_config_key(t) for t in tied}
    if len(configs) > 1:
        raise ExportError(f"ambiguous --pick {what}: trials {_numbers(tied)} tie; add another --pick "
                          f"(a condition, or max-/min-<objective>) or choose one with --trial N")
    return min(tied, key=lambda t: t.number)


def _measured(study: Any, t: Any, name: str) -> Optional[float]:
    """A quantity of a trial: its objective value, else from its recorded measurements."""
    from .objectives import OBJECTIVES
    from .pareto import objective_names

    names = objective_names(study)
    if name in names and t.values is not None:
        return float(t.values[names.index(name)])
    ua = t.user_attrs
    m = {"params": ua.get("params"), "flops": ua.get("flops"), "profile": ua.get("profile") or {},
         "accuracy": ua.get("objective_accuracy")}
    v = OBJECTIVES[name].extract(m) if name in OBJECTIVES else None
    return None if v is None else float(v)


def knee_trial(study: Any, pool: Optional[Sequence[Any]] = None) -> Any:
    """The knee (see the module docstring) among ``pool`` (default: the Pareto set)."""
    from .pareto import maximize_flags, pareto_trials

    front = pareto_trials(study)
    if not front:
        raise ExportError(f"study {study.study_name!r} has no complete feasible trial: nothing to pick")
    maximize = maximize_flags(study)
    span = []
    for i, mx in enumerate(maximize):
        vals = [t.values[i] for t in front]
        best, worst = (max(vals), min(vals)) if mx else (min(vals), max(vals))
        span.append((best, worst))

    def distance(t: Any) -> float:
        s = 0.0
        for i, (best, worst) in enumerate(span):
            if worst != best:
                s += ((t.values[i] - best) / (worst - best)) ** 2
        return math.sqrt(s)

    return _unique_best(list(pool) if pool is not None else front, distance, "knee")


def select_trial(study: Any, *, trial: Optional[int] = None, pick: Union[None, str, Sequence[str]] = None) -> Any:
    """The FrozenTrial named by ``trial`` (its number) or chosen by ``pick`` (see the module docstring).

    Raises ``ExportError`` for: both or neither given, an unknown trial number, a trial that is not
    complete (failed, pruned, running), an unknown objective, an ambiguous pick, nothing satisfying.
    """
    picks = [] if pick is None else [pick] if isinstance(pick, str) else list(pick)
    if trial is not None and picks:
        raise ExportError("give either --trial N or --pick, not both")
    if trial is None and not picks:
        raise ExportError("give --trial N or --pick (knee | max-<objective> | min-<objective> | "
                          "a condition like 'throughput>=8000')")
    if trial is not None:
        return _trial_by_number(study, trial)
    return _pick(study, [parse_pick(p) for p in picks])


def _trial_by_number(study: Any, number: int) -> Any:
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        have = f"#0..#{max(t.number for t in trials)}" if trials else "none"
        raise ExportError(f"study {study.study_name!r} has no trial #{number} (its trials: {have})")
    t = found[0]
    _check_exportable(t)
    return t


def _check_exportable(t: Any) -> None:
    import optuna

    state = t.state
    if state == optuna.trial.TrialState.COMPLETE:
        if not t.user_attrs.get("config"):
            raise ExportError(f"trial #{t.number} has no recorded config (user_attrs['config']): "
                              f"not a `nas search` trial")
        return
    why = t.user_attrs.get("error")
    if state == optuna.trial.TrialState.FAIL:
        raise ExportError(f"trial #{t.number} failed ({why or 'no reason recorded'}): nothing to export; "
                          f"choose a complete trial (see `nas pareto`)")
    if state == optuna.trial.TrialState.PRUNED:
        raise ExportError(f"trial #{t.number} was pruned ({why or 'no reason recorded'}): nothing to export; "
                          f"choose a complete trial (see `nas pareto`)")
    raise ExportError(f"trial #{t.number} is {state.name.lower()}, not complete: nothing to export yet")


def _pick(study: Any, picks: Sequence[Pick]) -> Any:
    from .pareto import feasible_trials, maximize_flags, objective_names, pareto_trials

    names = objective_names(study)
    maximize = dict(zip(names, maximize_flags(study)))
    selectors = [p for p in picks if p.kind != "condition"]
    conditions = [p for p in picks if p.kind == "condition"]
    if len(selectors) > 1:
        raise ExportError(f"--pick takes at most one of knee / max-<objective> / min-<objective>, got "
                          f"{', '.join(map(str, selectors))}; add conditions to narrow instead")
    sel = selectors[0] if selectors else None
    if sel is not None and sel.kind in ("max", "min") and sel.objective not in names:
        raise ExportError(f"--pick {sel}: study {study.study_name!r} has no objective {sel.objective!r}; "
                          f"its objectives: {', '.join(names)}")
    front = pareto_trials(study)
    if not front:
        raise ExportError(f"study {study.study_name!r} has no complete feasible trial: nothing to pick")
    pool = None
    if conditions:
        for c in conditions:
            if all(_measured(study, t, c.objective) is None for t in front):
                raise ExportError(f"--pick {c}: {c.objective!r} was not measured in study {study.study_name!r}; "
                                  f"its objectives: {', '.join(names)}")
        pool = [t for t in front if all(_satisfies(study, t, c) for c in conditions)]
        if not pool:
            raise ExportError(_nothing_satisfies(study, front, conditions))
    if sel is None:
        if len(pool) == 1:
            return pool[0]
        free = [n for n in names if n not in {c.objective for c in conditions}]
        if len(free) == 1:
            o = free[0]
            return _unique_best(pool, lambda t: _signed(t.values[names.index(o)], maximize[o]),
                                f"{' '.join(map(str, conditions))} (best {o} among them)")
        if len({_config_key(t) for t in pool}) == 1:
            return min(pool, key=lambda t: t.number)
        raise ExportError(f"ambiguous --pick: trials {_numbers(pool)} satisfy "
                          f"{' and '.join(map(str, conditions))}; add --pick max-<objective> "
                          f"(objectives: {', '.join(names)})")
    if sel.kind == "knee":
        return knee_trial(study, pool)
    i = names.index(sel.objective)
    candidates = pool if pool is not None else feasible_trials(study)
    return _unique_best(candidates, lambda t: _signed(t.values[i], sel.kind == "max"), str(sel))


def _signed(v: float, maximize: bool) -> float:
    return -v if maximize else v


def _satisfies(study: Any, t: Any, c: Pick) -> bool:
    v = _measured(study, t, c.objective)
    return v is not None and c.constraint.satisfied(v)


def _nothing_satisfies(study: Any, front: Sequence[Any], conditions: Sequence[Pick]) -> str:
    parts = []
    for c in conditions:
        vals = [(v, t) for t in front if (v := _measured(study, t, c.objective)) is not None]
        high = c.constraint.op in (">=", ">")
        v, t = (max if high else min)(vals, key=lambda vt: vt[0])
        parts.append(f"the {'highest' if high else 'lowest'} {c.objective} on the Pareto front is {v:.6g} "
                     f"(trial #{t.number})")
    return (f"no Pareto trial satisfies --pick {' and '.join(map(str, conditions))}: " + "; ".join(parts))


# ------------------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What ``export_model`` wrote: the folder, its files (format -> file name) and export.json."""

    out: Path
    files: dict[str, str]
    config: Any
    trial: Optional[int]
    weights: str  # "trained" | "initialised" | "loaded"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(out=str(self.out), files=self.files, trial=self.trial, weights=self.weights,
                    arch_id=self.config.arch_id, summary=self.config.summary(),
                    verification=self.metadata.get("verification"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_weights(model: Any, path: Path) -> None:
    """Load a safetensors file or a torch checkpoint (official keys accepted), strictly."""
    import torch

    from search_spaces import checkpoint_filter_fn

    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    except (RuntimeError, OSError, KeyError) as e:
        msg = str(e).strip().splitlines()
        raise ExportError(f"weights {path} do not fit {model.config.summary()}: {msg[0] if msg else e}") from None


def build_export_model(cfg: Any, *, weights: Union[None, str, Path] = None, seed: int = 0) -> tuple[Any, dict]:
    """The model to export (eval mode) and a description of its weights.

    With ``weights`` they are loaded (strictly); otherwise the model is freshly initialised under
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's RNG is untouched).
    """
    import torch

    from search_spaces import FasterViT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FasterViT(cfg)
    if weights is None:
        info = {"kind": "initialised", "seed": seed,
                "note": "random initialisation (the FasterViT init under torch.manual_seed(seed)); NOT trained"}
    else:
        path = Path(weights)
        _load_weights(model, path)
        info = {"kind": "trained", "source": str(path), "sha256": _sha256(path)}
    return model.eval(), info


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"--out {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} exists and is not empty; add --force to replace it, or choose another folder")


def _normal_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder and some writers make 0600 files: give the export the
    permissions of an ordinary folder under the user's umask."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for p in folder.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _commit(tmp: Path, out: Path, force: bool) -> None:
    """Move the complete ``tmp`` folder to ``out`` (renames in one file system, so atomic)."""
    _check_out(out, force)
    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # onto a missing or empty folder (rename replaces an empty directory)


def _verify(ctx: _Context, folder: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Load every written format back and compare with the PyTorch model on random inputs."""
    import numpy as np

    reference = _torch_runner(ctx.model)
    runners = {name: FORMATS[name].runner(folder) for name in names}
    rows = []
    for batch in CHECK_BATCH_SIZES:
        x = ctx.example(batch).numpy()
        ref = reference(x)
        scale = max(1.0, float(np.abs(ref).max()))
        for name in names:
            for loader, run in runners[name].items():
                y = np.asarray(run(x))
                diff = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
                ok = diff <= TOLERANCE * scale
                rows.append(dict(format=name, loader=loader, batch_size=batch, max_abs_diff=diff,
                                 max_abs_output=float(np.abs(ref).max()), tolerance=TOLERANCE * scale, ok=ok))
                if not ok:
                    raise ExportError(f"{name} ({loader}) at batch {batch} differs from PyTorch by {diff:.3g} "
                                      f"(> {TOLERANCE * scale:.3g}); nothing was written")
    return rows


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    from nas import __version__

    out: dict[str, Optional[str]] = {"nas": __version__}
    for pkg in ("torch", "timm", "onnx", "onnxruntime", "safetensors", "optuna"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _trial_source(study: Any, t: Any, storage: Any, picks: Optional[Sequence[str]]) -> dict[str, Any]:
    from .pareto import feasible_trials, maximize_flags, objective_labels, objective_names, pareto_trials
    from .storage import describe_storage

    names = objective_names(study)
    attrs = {k: v for k, v in t.user_attrs.items() if k != "config"}
    return dict(
        kind="study", study=study.study_name,
        storage=describe_storage(storage) if storage is None or isinstance(storage, str) else type(storage).__name__,
        trial=t.number, pick=list(picks) if picks else None, state=t.state.name, preset=t.user_attrs.get("preset"),
        on_pareto_front=any(p.number == t.number for p in pareto_trials(study)),
        feasible=any(p.number == t.number for p in feasible_trials(study)),
        objectives=dict(zip(names, t.values)), labels=dict(zip(names, objective_labels(study))),
        directions=dict(zip(names, ["maximize" if m else "minimize" for m in maximize_flags(study)])),
        constraints=dict(t.constraints) if getattr(t, "constraints", None) else {},
        study_proxy=study.user_attrs.get("proxy"), study_settings=study.user_attrs.get("settings"),
        started=t.datetime_start.isoformat() if t.datetime_start else None,
        completed=t.datetime_complete.isoformat() if t.datetime_complete else None,
        user_attrs=attrs,
    )


def export_model(out: Union[str, Path], *, config: Any = None, study: Any = None, storage: Any = None,
                 trial: Any = None, pick: Union[None, str, Sequence[str]] = None,
                 formats: Union[str, Sequence[str]] = DEFAULT_FORMATS, force: bool = False, opset: int = MIN_OPSET,
                 weights: Union[None, str, Path] = None, seed: int = 0) -> ExportResult:
    """Write a model folder for a study trial (``study`` + ``trial``/``pick``) or a ``config``.

    ``study``: a name (loaded from ``storage``) or an Optuna study; ``trial``: a trial number or a
    FrozenTrial; ``pick``: see ``select_trial``. ``config``: a FasterViTConfig, preset name, dict or
    JSON path. Weights: ``weights`` (a safetensors file or checkpoint), else the trial's trained
    weights (``user_attrs['weights_path']``), else a fresh initialisation under ``seed``.
    ``formats``: among ``FORMATS`` (safetensors is always written). Nothing is left behind on error.
    """
    import optuna

    from search_spaces import FasterViTConfig, resolve_config

    from .pareto import load_study

    out = Path(out)
    names = parse_formats(formats)
    if "onnx" in names and opset < MIN_OPSET:
        raise ExportError(f"opset={opset} must be >= {MIN_OPSET}")
    if (config is None) == (study is None):
        raise ExportError("give either a config (--config) or a study (--study with --trial/--pick), not "
                          + ("both" if config is not None else "neither"))
    _check_out(out, force)

    # --- what to export -----------------------------------------------------------------------
    t = None
    if study is not None:
        st = load_study(study, storage) if isinstance(study, str) else study
        if isinstance(trial, optuna.trial.FrozenTrial):
            if pick is not None:
                raise ExportError("give exactly one of --trial N or --pick, not both")
            _check_exportable(trial)
            t = trial
        else:
            t = select_trial(st, trial=trial, pick=pick)
        try:
            cfg = FasterViTConfig.from_dict(t.user_attrs["config"])
        except (ValueError, TypeError) as e:
            raise ExportError(f"trial #{t.number}: its recorded config is not readable by this version: {e}") from None
        source = _trial_source(st, t, storage, [pick] if isinstance(pick, str) else pick)
        if weights is None and t.user_attrs.get("weights_path"):
            weights = t.user_attrs["weights_path"]
            if not Path(weights).is_file():
                raise ExportError(f"trial #{t.number} trained, but its weights {weights} (user_attrs['weights_path'], "
                                  f"relative to the current folder) are missing; pass --weights PATH")
    else:
        if trial is not None or pick is not None:
            raise ExportError("--trial/--pick choose a trial of a --study; with --config there is nothing to pick")
        try:
            cfg = resolve_config(config)
        except (TypeError, FileNotFoundError) as e:
            raise ExportError(str(e)) from None
        source = dict(kind="config", config=str(config) if isinstance(config, (str, Path)) else cfg.summary())

    model, weight_info = build_export_model(cfg, weights=weights, seed=seed)
    if weight_info["kind"] == "trained" and t is None:
        weight_info["kind"] = "loaded"
    from evaluators.cost import static_cost

    cost = static_cost(cfg)
    params = (t.user_attrs.get("params") if t is not None else None) or cost.params
    flops = (t.user_attrs.get("flops") if t is not None else None) or cost.flops

    # --- write into a temporary folder next to out, check, then move ----------------------------
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        cfg.save(tmp / "config.json")
        ctx = _Context(model=model, folder=tmp, opset=opset, seed=seed)
        files, fmt_meta = {}, {}
        for name in names:
            f = FORMATS[name]
            try:
                fmt_meta[name] = f.write(ctx, tmp / f.filename)
            except ExportError:
                raise
            except Exception as e:  # an exporter's own failure: one line for the CLI, chained for the API
                first = (str(e).strip().splitlines() or [""])[0]
                raise ExportError(f"writing {f.filename} failed: {type(e).__name__}: {first}") from e
            files[name] = f.filename
        verification = _verify(ctx, tmp, names)
        meta = dict(
            export_schema_version=EXPORT_SCHEMA_VERSION,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            config_schema_version=cfg.to_dict()["schema_version"], arch_id=cfg.arch_id, summary=cfg.summary(),
            params=int(params), flops=int(flops), source=source, weights=weight_info, formats=names, files=files,
            format_details=fmt_meta, verification=verification,
            verification_rule=f"max |y - y_pytorch| <= {TOLERANCE:g} * max(1, max |y_pytorch|), fp32, CPU, random "
                              f"normal inputs (seed {seed}) at batch sizes {list(CHECK_BATCH_SIZES)}; "
                              f"the reference is the eager (not deployed) PyTorch model",
            versions=_versions(),
        )
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / CARD_FILE).write_text(model_card(meta, cfg, out))
        extra = sorted(p.name for p in tmp.iterdir()
                       if p.name not in {*files.values(), "config.json", EXPORT_FILE, CARD_FILE})
        if extra:  # e.g. ONNX external-data files of very large models
            meta["extra_files"] = extra
            (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        _normal_permissions(tmp)
        _commit(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # innermost first
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return ExportResult(out=out, files=files, config=cfg, trial=t.number if t is not None else None,
                        weights=weight_info["kind"], metadata=meta)


# ------------------------------------------------------------------------------------------ model card
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if v is None:
        return "—"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            rows.extend(_flatten(v, key + "."))
        else:
            rows.append((key, v))
    return rows


def _table(rows: Sequence[tuple[str, Any]], head: tuple[str, str] = ("field", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


_OBJ_UNITS = {"accuracy": "proxy score", "throughput": "img/s", "latency": "ms", "memory": "MB", "params": "params",
              "flops": "MACs"}


def model_card(meta: Mapping[str, Any], cfg: Any, out: Union[str, Path]) -> str:
    """README.md of an export folder: what the model is, where it came from, every measurement, how to load it."""
    src, w = meta["source"], meta["weights"]
    d = str(out)
    res = cfg.resolution
    lines = [f"# FasterViT `{meta['arch_id']}` (exported by `nas export`)", "", f"`{meta['summary']}`", ""]
    if src["kind"] == "study":
        how = f" (chosen by `--pick {' --pick '.join(src['pick'])}`)" if src.get("pick") else ""
        lines.append(f"- **Source:** study `{src['study']}`, trial #{src['trial']}{how}"
                     f"{' — preset ' + src['preset'] if src.get('preset') else ''}; storage: {src['storage']}")
        lines.append(f"- **On the Pareto front:** {'yes' if src['on_pareto_front'] else 'no'}; "
                     f"feasible: {'yes' if src['feasible'] else 'no'}")
    else:
        lines.append(f"- **Source:** config `{src['config']}` (not from a study: no measurements)")
    lines.append(f"- **Exported:** {meta['created']} (export schema {meta['export_schema_version']}, "
                 f"nas {meta['versions'].get('nas')}, torch {meta['versions'].get('torch')})")
    if w["kind"] == "initialised":
        lines.append(f"- **Weights: initialised, not trained** — a fresh random initialisation (seed {w['seed']}). "
                     f"Use it for deployment and speed tests, or fine-tune it; its predictions are meaningless.")
    else:
        lines.append(f"- **Weights: {w['kind']}** from `{w['source']}` (sha256 {w['sha256'][:16]}…).")
    lines.append(f"- **Params:** {meta['params']:,} ({meta['params'] / 1e6:.3f} M); "
                 f"**FLOPs:** {meta['flops']:,} MACs ({meta['flops'] / 1e9:.3f} GMACs) at {res[0]}x{res[1]}")
    lines.append(f"- **Input:** float32 `(batch, {cfg.in_chans}, {res[0]}, {res[1]})`, ImageNet mean/std "
                 f"normalised; output: {cfg.num_classes} logits" if cfg.num_classes else
                 f"- **Input:** float32 `(batch, {cfg.in_chans}, {res[0]}, {res[1]})`; output: pooled features")
    lines += ["", "## Files", "", "| file | what |", "|---|---|", "| config.json | the FasterViTConfig (JSON) |"]
    for name, fname in meta["files"].items():
        lines.append(f"| {fname} | {FORMATS[name].description} |")
    lines += [f"| {EXPORT_FILE} | export metadata: source, date, weights, checks, versions |", ""]

    if src["kind"] == "study":
        lines += ["## Measurements (from the trial)", "", "| objective | value | direction | unit |",
                  "|---|---|---|---|"]
        for n, v in src["objectives"].items():
            lines.append(f"| {n} | {_fmt(v)} | {src['directions'][n]} | {src.get('labels', {}).get(n) or _OBJ_UNITS.get(n, '')} |")
        if src.get("constraints"):
            lines += ["", "Constraint violations (<= 0 is satisfied):", "",
                      _table(list(src["constraints"].items()), ("constraint", "violation"))]
        ua = dict(src["user_attrs"])
        lines += ["", f"Measured on: `{ua.pop('device', '—')}`; trial started {src.get('started')}, "
                      f"completed {src.get('completed')}; study proxy: {src.get('study_proxy')}", ""]
        prof = ua.pop("profile", None)
        if prof:
            lines += ["### Profiler record", "",
                      f"{prof.get('gpu_name')} (driver {prof.get('driver')}), {prof.get('timestamp')}: batch "
                      f"{prof.get('batch_size')}, {prof.get('dtype')}, mode {prof.get('mode')}", "",
                      _table(_flatten(prof)), ""]
        proxy = ua.pop("proxy", None)
        if proxy:
            lines += ["### Accuracy proxy", "", _table(_flatten(proxy)), ""]
        rest = [(k, v) for k, v in ua.items() if k not in ("arch_id", "summary") and not k.startswith("objective_")]
        if rest:
            lines += ["### Other recorded values", "", _table(_flatten(dict(rest))), ""]

    lines += ["## Load it", "", "With this repository's package (`search_spaces`):", "", "```python",
              "from search_spaces import load_model", f"model = load_model({d!r}).eval()", "```", "",
              "With timm (importing `search_spaces` registers the `nas_*` names):", "", "```python",
              "import timm, search_spaces", "model = timm.create_model(",
              f"    \"nas_faster_vit\", config={str(Path(d) / 'config.json')!r}, pretrained=True,",
              f"    pretrained_cfg_overlay=dict(file={str(Path(d) / 'model.safetensors')!r})).eval()", "```", ""]
    if "onnx" in meta["files"]:
        o = meta["format_details"]["onnx"]
        lines += [f"With onnxruntime (opset {o['opset']}, exporter {o['exporter']}; deployed graph: positional "
                  f"biases are constants, BatchNorm folded; fixed {res[0]}x{res[1]}, dynamic batch):", "",
                  "```python", "import numpy as np, onnxruntime as ort",
                  f"sess = ort.InferenceSession({str(Path(d) / 'model.onnx')!r}, providers=[\"CPUExecutionProvider\"])",
                  f"x = np.random.randn(4, {cfg.in_chans}, {res[0]}, {res[1]}).astype(np.float32)",
                  f"y = sess.run(None, {{{o['input']!r}: x}})[0]  # {o['output']}", "```", ""]
    if "torchscript" in meta["files"]:
        lines += ["With TorchScript (traced from the deployed model):", "", "```python", "import torch",
                  f"model = torch.jit.load({str(Path(d) / 'model.torchscript.pt')!r})", "```", ""]
    if "pt" in meta["files"]:
        lines += ["From `model.pt` (a plain state dict):", "", "```python", "import torch",
                  "from search_spaces import FasterViT, FasterViTConfig",
                  f"model = FasterViT(FasterViTConfig.load({str(Path(d) / 'config.json')!r}))",
                  f"model.load_state_dict(torch.load({str(Path(d) / 'model.pt')!r}, weights_only=True))", "```", ""]
    lines += ["## Checks at export", "", meta["verification_rule"], "",
              "| format | loaded with | batch | max abs diff | tolerance |", "|---|---|---|---|---|"]
    for r in meta["verification"]:
        lines.append(f"| {r['format']} | {r['loader']} | {r['batch_size']} | {r['max_abs_diff']:.3g} | "
                     f"{r['tolerance']:.3g} |")
    lines += ["", "## Config", "", _table([(k, v) for k, v in cfg.to_dict().items()]), "", "```json",
              cfg.to_json(), "```", ""]
    return "\n".join(lines)
