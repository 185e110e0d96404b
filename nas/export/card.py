"""The model card (README.md) of an export folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .base import EXPORT_FILE
from .formats import FORMATS

__all__ = ["model_card"]


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


def _weights_lines(w: Mapping[str, Any]) -> list[str]:
    """Where the weights come from, in the card's words (and, for a fine-tuning run, how it went)."""
    if w["kind"] == "initialised":
        return [f"- **Weights: initialised, not trained** — a fresh random initialisation (seed {w['seed']}). "
                f"Use it for deployment and speed tests, or fine-tune it; its predictions are meaningless."]
    if w["kind"] == "supernet":
        return [f"- **Weights: inherited from a supernet** in `{w['source']}` — {w['note']}. Not re-trained: "
                f"fine-tune it (`nas export --finetune EPOCHS --data D`) for the best accuracy."]
    if w["kind"] == "fine-tuned":
        r = w["recipe"]
        how = "head only (backbone frozen)" if w["head_only"] else "all weights"
        return [f"- **Weights: fine-tuned** from `{w['init']}` on `{w['data']}` ({how}): validation top-1 "
                f"**{w['val_top1']:.2f} %** (before fine-tuning {w['init_top1']:.2f} %), {r['epochs']:g} epochs = "
                f"{r['steps']} steps of batch {r['batch_size']} at {r['resolution'][0]} px, AdamW peak LR "
                f"{r['peak_lr']:.3g}, warm-up {r['warmup']:g}, label smoothing {r['label_smoothing']:g}, "
                f"{w['seconds']:g} s ({w['images_per_s']:.0f} img/s)."]
    return [f"- **Weights: {w['kind']}** from `{w['source']}` (sha256 {w['sha256'][:16]}…)."]


GELU_EPILOGUE = ("`search_spaces.fuse_gelu_epilogue(model)`: each transformer MLP's fc1 → GELU runs as one GEMM "
                 "with a bias+GELU epilogue (`torch._addmm_activation`), so the GELU no longer reads and writes the "
                 "hidden activation as a kernel of its own; the same logits on the CPU, while on CUDA its GELU is "
                 "tanh-approximate (logits close to, not equal to, the exact-GELU model's)")


def _deploy_lines(plan: Optional[Mapping[str, Any]]) -> list[str]:
    """How to run the model fastest after loading it: the deploy step, channel padding when it would change the
    model (``export.json``'s ``channel_padding``), then the GELU epilogue (any FasterViT)."""
    head = "- **Deploy fast:** after loading it in PyTorch, `model.switch_to_deploy()` then "
    if not plan or not (plan.get("error") or plan["padded"]):  # nothing to pad (or an export.json from before)
        return [f"{head}{GELU_EPILOGUE}."]
    n = plan["multiple"]
    how = (f"{head}`search_spaces.pad_channels(model, {n})`"
           f" (same logits; fp16 tensor cores and fused attention want multiples of {n})")
    if plan.get("error"):
        pad = (f"{how}: it zero-pads every width and head dim that is not a multiple of {n} (what it would pad "
               f"here could not be worked out: {plan['error']}).")
    else:
        parts = ", ".join(f"{p['part']} {p['real']}→{p['padded']}" for p in plan["padded"])
        pad = f"{how}: it zero-pads {parts}."
    return [f"{pad} Then {GELU_EPILOGUE}."]


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
    lines += _weights_lines(w)
    lines.append(f"- **Params:** {meta['params']:,} ({meta['params'] / 1e6:.3f} M); "
                 f"**FLOPs:** {meta['flops']:,} MACs ({meta['flops'] / 1e9:.3f} GMACs) at {res[0]}x{res[1]}")
    lines.append(f"- **Input:** float32 `(batch, {cfg.in_chans}, {res[0]}, {res[1]})`, ImageNet mean/std "
                 f"normalised; output: {cfg.num_classes} logits" if cfg.num_classes else
                 f"- **Input:** float32 `(batch, {cfg.in_chans}, {res[0]}, {res[1]})`; output: pooled features")
    lines += _deploy_lines(meta.get("channel_padding"))
    lines += ["", "## Files", "", "| file | what |", "|---|---|", "| config.json | the FasterViTConfig (JSON) |"]
    for name, fname in meta["files"].items():
        lines.append(f"| {fname} | {FORMATS[name].description} |")
    lines += [f"| {EXPORT_FILE} | export metadata: source, date, weights, checks, versions |", ""]

    if src["kind"] == "study":
        lines += ["## Measurements (from the trial)", "", "| objective | value | direction | unit |",
                  "|---|---|---|---|"]
        for n, v in src["objectives"].items():
            unit = src.get("labels", {}).get(n) or _OBJ_UNITS.get(n, "")
            lines.append(f"| {n} | {_fmt(v)} | {src['directions'][n]} | {unit} |")
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
