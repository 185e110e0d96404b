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

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import optuna

from evaluators.cost import static_cost
from nas import __version__
from search_spaces import FasterViTConfig, channel_padding_plan, resolve_config

from .. import record as R
from ..front import feasible_trials, load_study, maximize_flags, objective_labels, objective_names, pareto_trials
from ..storage import StorageError, describe_storage, writable_dir
from .base import (
    CARD_FILE,
    CHECK_BATCH_SIZES,
    DEFAULT_FORMATS,
    EXPORT_FILE,
    EXPORT_SCHEMA_VERSION,
    MIN_OPSET,
    PAD_MULTIPLE,
    TOLERANCE,
    ExportError,
    _Context,
)
from .card import model_card
from .checks import _verify
from .folder import (
    OWNER_FILE,
    check_out as _check_out,
    clean_stale_temps,
    commit as _commit,
    make_temp,
    normal_permissions as _normal_permissions,
)
from .formats import FORMATS, ExportFormat, parse_formats, register_format
from .onnx_export import export_onnx
from .pick import Pick, check_exportable as _check_exportable, knee_trial, parse_pick, select_trial
from .weights import SUPERNET_PREFIX, Finetune, build_export_model

__all__ = ["ExportError", "ExportFormat", "ExportResult", "FORMATS", "register_format", "parse_formats", "Pick",
           "parse_pick", "select_trial", "knee_trial", "export_model", "export_onnx", "build_export_model", "Finetune",
           "model_card", "EXPORT_SCHEMA_VERSION", "DEFAULT_FORMATS", "TOLERANCE", "CHECK_BATCH_SIZES"]


# ------------------------------------------------------------------------------------------ export
@dataclass
class ExportResult:
    """What ``export_model`` wrote: the folder, its files (format -> file name) and export.json."""

    out: Path
    files: dict[str, str]
    config: Any
    trial: Optional[int]
    weights: str  # "trained" | "loaded" | "supernet" | "fine-tuned" | "initialised"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(out=str(self.out), files=self.files, trial=self.trial, weights=self.weights,
                    arch_id=self.config.arch_id, summary=self.config.summary(),
                    verification=self.metadata.get("verification"))


def _versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    out: dict[str, Optional[str]] = {"nas": __version__}
    for pkg in ("torch", "timm", "onnx", "onnxruntime", "safetensors", "optuna"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _padding_plan(cfg: FasterViTConfig) -> dict[str, Any]:
    """What ``search_spaces.pad_channels(model, PAD_MULTIPLE)`` would pad after ``switch_to_deploy`` (the model
    card's "Deploy fast" line); worked out on the meta device (no memory). If that fails, the error instead."""
    try:
        return channel_padding_plan(cfg, PAD_MULTIPLE).to_dict()
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:  # the card then states the rule
        return dict(multiple=PAD_MULTIPLE, error=f"{type(e).__name__}: {str(e)[:200]}")


def _trial_source(study: Any, t: Any, storage: Any, picks: Optional[Sequence[str]]) -> dict[str, Any]:
    names = objective_names(study)
    attrs = {k: v for k, v in t.user_attrs.items() if k != R.CONFIG}
    return dict(
        kind="study", study=study.study_name,
        storage=describe_storage(storage) if storage is None or isinstance(storage, str) else type(storage).__name__,
        trial=t.number, pick=list(picks) if picks else None, state=t.state.name, preset=t.user_attrs.get(R.PRESET),
        on_pareto_front=any(p.number == t.number for p in pareto_trials(study)),
        feasible=any(p.number == t.number for p in feasible_trials(study)),
        objectives=dict(zip(names, t.values)), labels=dict(zip(names, objective_labels(study))),
        directions=dict(zip(names, ["maximize" if m else "minimize" for m in maximize_flags(study)])),
        constraints=dict(t.constraints) if getattr(t, "constraints", None) else {},
        study_proxy=study.user_attrs.get(R.STUDY_PROXY), study_settings=study.user_attrs.get(R.STUDY_SETTINGS),
        started=t.datetime_start.isoformat() if t.datetime_start else None,
        completed=t.datetime_complete.isoformat() if t.datetime_complete else None,
        user_attrs=attrs,
    )


def _writable_parent(out: Path) -> None:
    try:
        writable_dir(out.parent, "--out folder")
    except StorageError as e:
        raise ExportError(str(e)) from None


def export_model(out: Union[str, Path], *, config: Any = None, study: Any = None, storage: Any = None,
                 trial: Any = None, pick: Union[None, str, Sequence[str]] = None,
                 formats: Union[str, Sequence[str]] = DEFAULT_FORMATS, force: bool = False, opset: int = MIN_OPSET,
                 weights: Union[None, str, Path] = None, seed: int = 0,
                 finetune: Optional[Finetune] = None) -> ExportResult:
    """Write a model folder for a study trial (``study`` + ``trial``/``pick``) or a ``config``.

    ``study``: a name (loaded from ``storage``) or an Optuna study; ``trial``: a trial number or a
    FrozenTrial; ``pick``: see ``select_trial``. ``config``: a FasterViTConfig, preset name, dict or
    JSON path. Weights: ``weights`` (a safetensors file or checkpoint, or ``supernet:DIR``), else
    the trial's trained weights (``user_attrs['weights_path']``), else for a trial scored by a
    supernet that supernet's weights, else a fresh initialisation under ``seed``. ``finetune``:
    fine-tune those weights (or a fresh network) on its data first (``nas.export.weights``).
    ``formats``: among ``FORMATS`` (safetensors is always written). Nothing is left behind on error.
    """
    out = Path(out)
    names = parse_formats(formats)
    if "onnx" in names and opset < MIN_OPSET:
        raise ExportError(f"opset={opset} must be >= {MIN_OPSET}")
    if (config is None) == (study is None):
        raise ExportError("give either a config (--config) or a study (--study with --trial/--pick), not "
                          + ("both" if config is not None else "neither"))
    _check_out(out, force)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed again on failure
    try:
        _writable_parent(out)
        clean_stale_temps(out)  # what a killed export to the same folder left behind
        return _export(out, names, config=config, study=study, storage=storage, trial=trial, pick=pick,
                       force=force, opset=opset, weights=weights, seed=seed, finetune=finetune)
    except BaseException:
        _remove_created(created)
        raise


def _remove_created(created: Sequence[Path]) -> None:
    for p in created:  # innermost first
        try:
            p.rmdir()
        except OSError:
            break


def _trial_supernet(t: Any) -> Optional[str]:
    """``supernet:DIR`` when the trial's accuracy was inherited from a supernet (its recorded details say where)."""
    details = t.user_attrs.get(R.PROXY) or {}
    path = (details.get("supernet") or {}).get("path") if isinstance(details, dict) else None
    return f"{SUPERNET_PREFIX}{path}" if path else None


def _export(out: Path, names: list[str], *, config: Any, study: Any, storage: Any, trial: Any, pick: Any,
            force: bool, opset: int, weights: Any, seed: int, finetune: Optional[Finetune]) -> ExportResult:
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
            cfg = FasterViTConfig.from_dict(t.user_attrs[R.CONFIG])
        except (ValueError, TypeError) as e:
            raise ExportError(f"trial #{t.number}: its recorded config is not readable by this version: {e}") from None
        source = _trial_source(st, t, storage, [pick] if isinstance(pick, str) else pick)
        if weights is None and t.user_attrs.get(R.WEIGHTS_PATH):
            weights = t.user_attrs[R.WEIGHTS_PATH]
            if not Path(weights).is_file():
                raise ExportError(f"trial #{t.number} trained, but its weights {weights} (user_attrs['weights_path'], "
                                  f"relative to the current folder) are missing; pass --weights PATH")
        if weights is None:
            weights = _trial_supernet(t)
    else:
        if trial is not None or pick is not None:
            raise ExportError("--trial/--pick choose a trial of a --study; with --config there is nothing to pick")
        try:
            cfg = resolve_config(config)
        except (TypeError, FileNotFoundError) as e:
            raise ExportError(str(e)) from None
        source = dict(kind="config", config=str(config) if isinstance(config, (str, Path)) else cfg.summary())

    model, weight_info = build_export_model(cfg, weights=weights, seed=seed, finetune_spec=finetune)
    cfg = model.config  # a fine-tuned head follows its data's classes
    if weight_info["kind"] == "trained" and t is None:
        weight_info["kind"] = "loaded"
    cost = static_cost(cfg)
    params = (t.user_attrs.get(R.PARAMS) if t is not None else None) or cost.params
    flops = (t.user_attrs.get(R.FLOPS) if t is not None else None) or cost.flops

    # --- write into a temporary folder next to out, check, then move ----------------------------
    tmp = make_temp(out)
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
            channel_padding=_padding_plan(cfg),
        )
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / CARD_FILE).write_text(model_card(meta, cfg, out))
        extra = sorted(p.name for p in tmp.iterdir()
                       if p.name not in {*files.values(), "config.json", EXPORT_FILE, CARD_FILE, OWNER_FILE})
        if extra:  # e.g. ONNX external-data files of very large models
            meta["extra_files"] = extra
            (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        _normal_permissions(tmp)
        _commit(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out=out, files=files, config=cfg, trial=t.number if t is not None else None,
                        weights=weight_info["kind"], metadata=meta)


