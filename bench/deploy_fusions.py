"""Deploy-time fusions (issue #34): images/s of FasterViT presets with the MLPs' GELU in the fc1 GEMM's
epilogue (``search_spaces.fuse_gelu_epilogue``), against our plain deployed model and the official code,
same run, alternating rounds; and the logits each fused variant changes on the GPU.

Best mode (``torch.compile`` reduce-overhead, no max-autotune) leaves every GEMM to cuBLAS, so
GELU runs as its own Triton kernel after fc1 (FasterViT-2: ~640 of ~8,300 µs per forward,
``results/benchmarks/kernel-profile.json``). The fused variants call ``torch._addmm_activation``
(cuBLASLt bias+GELU epilogue) instead. Per model and mode: median images/s over the rounds of

- ``official``: NVIDIA's code (the ``fastervit`` package, ``--official``), as it is;
- ``plain``: ours, deployed (``switch_to_deploy``), as ``nas`` measures today;
- ``gelu``: ours + GELU epilogue;
- ``pad8_gelu``: ours + ``pad_channels=8`` + GELU epilogue, only for presets that padding changes
  (FasterViT-4..6: ``channel_padding_plan``), or every preset with ``--pad-always``;

the ratios of each to ``plain`` and to ``official``, and, from a profiled pass in the last round, the
µs of every kernel whose name says GELU (the separate passes should be gone from ``gelu``).

Logits (one fixed batch of 8, eager, weights ``init_model(preset, seed=0)``): on CUDA the epilogue's
GELU is tanh-approximate (the CPU's is exact). ``TANH_GELU_REL_TOL`` bounds the change of the logits
when the MLPs' GELU goes tanh (max |Δ| / max |logit|): the CPU emulation
(``tests/bench/test_deploy_fusions.py``) measures 1.1e-4 for FasterViT-0, 2.5e-4 for FasterViT-1,
1.6e-4 for FasterViT-2, 2.5e-7 for FasterViT-3 (layer scale), 2.1e-4 for FasterViT-0 with larger
random weights; the bound is 1e-3. On the GPU, per fused variant: fp32 without TF32 must stay
within it; fp16 (autocast) within it plus the fp16 noise of the plain model (its max |fp16 - fp32| /
max |fp32|), the error fp16 inference already accepts.

    python bench/deploy_fusions.py --official                      # GPU: FasterViT-0..3, best mode
    python bench/deploy_fusions.py --official --modes best,cudagraph --models faster_vit_4_21k_224
    python bench/deploy_fusions.py --official --modes autotune --models faster_vit_0_224 --merge \
        --out results/benchmarks/deploy-fusions.json          # Inductor's Triton templates, same table

``autotune`` is not a profiler mode of its own: the profiler's ``compile`` mode with
``torch.compile(mode="max-autotune", dynamic=False)`` (CUDA graphs too): Inductor benchmarks its Triton
GEMM and convolution templates against cuBLAS/cuDNN per shape and can fuse the bias, the GELU and the
residual add into the template's epilogue, the route issue #34 names beside the cuBLASLt epilogue.
Its first compile autotunes every shape (minutes per preset).
    python bench/deploy_fusions.py --smoke --out /tmp/fusions.json # CPU, eager, tiny

Time: a best-mode compile of one preset is 3.6-7 s from a warm Inductor cache on an H200 and
~25-60 s cold, so round 1 (cold: official, plain, then gelu, which shares most kernels with plain)
dominates; each measurement prints its compile and wall seconds, and the JSON is rewritten after
every model (``complete`` false until the last), so a run cut short keeps what it measured (run
the models it missed with ``--models ... --merge``: the models already in ``--out`` are kept, unless
measured again, when the run's settings and GPU are theirs; without ``--merge`` a run rewrites its
whole ``--out``).
``results/benchmarks/deploy-fusions.json`` is written by a GPU run only; a CPU run needs ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluators.jsonfile import write_json  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "benchmarks" / "deploy-fusions.json"
MODELS = "faster_vit_0_224,faster_vit_1_224,faster_vit_2_224,faster_vit_3_224"
#: max |Δ logit| / max |logit| when the MLPs' exact GELU becomes tanh-approximate (CPU emulation: see the docstring)
TANH_GELU_REL_TOL = 1e-3
LOGIT_BATCH = 8
LOGIT_SEED = 0


@dataclass(frozen=True)
class Variant:
    """One way of running our model: channel padding (multiple or None) and the GELU epilogue."""

    key: str
    pad: Optional[int]
    gelu: bool


PLAIN, GELU, PAD8_GELU = Variant("plain", None, False), Variant("gelu", None, True), Variant("pad8_gelu", 8, True)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=MODELS, help="comma list of presets (default FasterViT-0..3)")
    p.add_argument("--modes", default="best",
                   help=f"comma list of modes: the profiler's ({', '.join(PROFILER_MODES)}) or autotune")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the variants")
    p.add_argument("--repeats", type=int, default=20, help="timed samples per measurement")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help=f"default {DEFAULT_OUT.relative_to(ROOT)} (GPU runs only)")
    p.add_argument("--official", action="store_true", help="also the official code's model in every round")
    p.add_argument("--pad-always", action="store_true", help="pad8_gelu also where padding changes nothing")
    p.add_argument("--smoke", action="store_true", help="CPU, eager, FasterViT-0 at batch 1, one round")
    p.add_argument("--merge", action="store_true",
                   help="keep the models already in --out (same GPU and settings, else refused)")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.modes, args.batch_size, args.rounds, args.repeats = "cpu", "eager", 1, 1, 3
        args.models = "faster_vit_0_224"
    return args


#: the profiler's modes (``evaluators.profiler.MODES``, not imported here: torch loads lazily)
PROFILER_MODES = ("eager", "cudagraph", "compile", "best")
#: bench modes that are a profiler mode with fixed torch.compile options
COMPILE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "autotune": ("compile", {"mode": "max-autotune", "dynamic": False})}


def profiler_mode(mode: str) -> tuple[str, Optional[dict[str, Any]]]:
    """The profiler mode and torch.compile options of a bench mode; an unknown one is refused by name."""
    if mode in COMPILE_VARIANTS:
        return COMPILE_VARIANTS[mode]
    if mode not in PROFILER_MODES:
        known = ", ".join(PROFILER_MODES + tuple(COMPILE_VARIANTS))
        raise SystemExit(f"--modes: unknown mode {mode!r}; choose from {known}")
    return mode, None


def variants_for(name: str, pad_always: bool) -> list[Variant]:
    """plain, gelu, and pad8_gelu where channel padding changes the preset (or always)."""
    from search_spaces import channel_padding_plan, resolve_config

    pads = bool(channel_padding_plan(resolve_config(name), 8).padded)
    return [PLAIN, GELU] + ([PAD8_GELU] if pads or pad_always else [])


# ---------------------------------------------------------------------------------------------
# logits
# ---------------------------------------------------------------------------------------------
def deployed_variant(base: Any, variant: Variant, dtype: Optional[Any], device: Any) -> Any:
    """A deployed copy of ``base`` (tables in ``dtype``) with ``variant``'s padding and fusion, on ``device``."""
    from search_spaces import fuse_gelu_epilogue, pad_channels

    model = copy.deepcopy(base).switch_to_deploy(dtype=dtype)
    if variant.pad is not None:
        pad_channels(model, variant.pad)
    if variant.gelu:
        fuse_gelu_epilogue(model)
    return model.to(device)


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 (restored after)."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _rel(a: Any, ref: Any) -> float:
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max())


def logit_check(name: str, variants: list[Variant], device: Any) -> dict[str, Any]:
    """Per fused variant: max |Δ logit| against ``plain`` in fp32 and in half precision, and the verdicts."""
    import torch

    from evaluators.proxies import init_model

    half = torch.float16 if device.type == "cuda" else torch.bfloat16  # the CPU's autocast dtype
    base = init_model(name, LOGIT_SEED).eval()
    res = base.config.resolution
    x = torch.randn(LOGIT_BATCH, 3, *res, generator=torch.Generator().manual_seed(LOGIT_SEED)).to(device)

    def logits(variant: Variant, dtype: Optional[Any]) -> Any:
        model = deployed_variant(base, variant, dtype, device)
        with torch.no_grad(), torch.autocast(device.type, dtype=half, enabled=dtype is not None):
            out = model(x).float()
        del model
        return out

    with _exact_fp32():
        ref32, ref_half = logits(PLAIN, None), logits(PLAIN, half)
        floor = _rel(ref_half, ref32)
        out: dict[str, Any] = dict(batch=LOGIT_BATCH, seed=LOGIT_SEED, half_dtype=str(half).replace("torch.", ""),
                                   tolerance_rel=TANH_GELU_REL_TOL, plain_half_vs_fp32_rel=floor,
                                   max_abs_logit=float(ref32.abs().max()), variants={})
        for v in variants:
            if v == PLAIN:
                continue
            f32, fh = logits(v, None), logits(v, half)
            row = dict(fp32_rel=_rel(f32, ref32), fp32_abs=float((f32 - ref32).abs().max()),
                       half_rel=_rel(fh, ref_half), half_abs=float((fh - ref_half).abs().max()))
            row.update(fp32_ok=row["fp32_rel"] <= TANH_GELU_REL_TOL,
                       half_ok=row["half_rel"] <= TANH_GELU_REL_TOL + floor)
            out["variants"][v.key] = row
    return out


# ---------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------
def _gelu_kernels(kernel_us: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
    """The kernels (CPU: ATen ops) whose name says GELU or the fused op, µs per forward."""
    if kernel_us is None:
        return None
    return {k: v for k, v in kernel_us.items() if "gelu" in k.lower() or "addmm_activation" in k.lower()}


def measure_mode(name: str, mode: str, variants: list[Variant], args: argparse.Namespace,
                 started: float) -> dict[str, Any]:
    """Median images/s of each variant (and the official model) over alternating rounds, with their ratios."""
    from evaluators.profiler import measure_official, measure_throughput

    prof_mode, compile_options = profiler_mode(mode)
    opts: dict[str, Any] = dict(batch_size=args.batch_size, mode=prof_mode, device=args.device, latency_b1=False,
                                dtype="fp32" if args.smoke else "fp16", repeats=args.repeats)
    if compile_options:
        opts["compile_options"] = compile_options
    keys = (["official"] if args.official else []) + [v.key for v in variants]
    runs: dict[str, list[float]] = {k: [] for k in keys}
    compile_s: dict[str, list[Optional[float]]] = {k: [] for k in keys}
    facts: dict[str, dict[str, Any]] = {k: {} for k in keys}
    for r in range(args.rounds):
        last = r == args.rounds - 1
        for key in keys:
            v = next((v for v in variants if v.key == key), None)
            profile = last and key in ("plain", "gelu")
            if v is None:
                rec = measure_official(name, **opts)
            else:
                rec = measure_throughput(name, pad_channels=v.pad, gelu_epilogue=v.gelu, profile_kernels=profile,
                                         **opts)
            if rec.error:
                raise SystemExit(f"{name} {mode} ({key}): {rec.error}")
            runs[key].append(float(rec.images_per_s or 0.0))
            compile_s[key].append(rec.compile_s)
            if v is not None and v.gelu:
                facts[key].update(gelu_fused=rec.gelu_fused, gelu_kept=rec.gelu_kept)
            if v is not None and v.pad is not None:
                facts[key].update(channels_padded=rec.channels_padded)
            if profile:
                facts[key].update(gelu_kernels_us=_gelu_kernels(rec.kernel_us),
                                  kernel_total_us=sum((rec.kernel_us or {}).values()) or None)
            print(f"  [{time.perf_counter() - started:6.0f} s] {name} {mode} round {r + 1}/{args.rounds} {key}: "
                  f"{rec.images_per_s:,.0f} img/s (compile {rec.compile_s or 0:.1f} s, wall {rec.wall_s:.1f} s)",
                  flush=True)
    med = {k: statistics.median(runs[k]) for k in keys}
    row: dict[str, Any] = dict(images_per_s=med, rounds=runs, compile_s=compile_s, variants=facts,
                               over_plain={k: med[k] / med["plain"] for k in keys if k != "plain"})
    if args.official:
        row["over_official"] = {k: med[k] / med["official"] for k in keys if k != "official"}
    return row


def _summary_line(name: str, mode: str, row: dict[str, Any]) -> str:
    med = row["images_per_s"]
    parts = [f"{k} {v:,.0f}" for k, v in med.items()]
    ratios = [f"{k}/plain x{v:.3f}" for k, v in row["over_plain"].items()]
    ratios += [f"{k}/official x{v:.3f}" for k, v in row.get("over_official", {}).items()]
    return f"{name} {mode}: " + ", ".join(parts) + " img/s; " + ", ".join(ratios)


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every model: the logit check, then each mode's rounds; the JSON rewritten after each model."""
    import torch

    from evaluators.profiler import resolve_device

    started = time.perf_counter()
    device = resolve_device(args.device)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        profiler_mode(m)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    data: dict[str, Any] = dict(
        benchmark="deploy-fusions", gpu=gpu, host=platform.node(), torch=torch.__version__, cuda=torch.version.cuda,
        disable_addmm_cuda_lt=os.environ.get("DISABLE_ADDMM_CUDA_LT"), modes=modes, batch_size=args.batch_size,
        resolution=224, dtype="fp32" if args.smoke else "fp16", rounds=args.rounds, repeats=args.repeats,
        official=args.official, tolerance_rel=TANH_GELU_REL_TOL, models={}, complete=False,
        compile_variants={m: COMPILE_VARIANTS[m] for m in modes if m in COMPILE_VARIANTS},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if args.merge:
        merge_earlier(out, data)
    print(f"deploy fusions on {gpu}: {len(names)} model(s) x {len(modes)} mode(s) x {args.rounds} round(s)", flush=True)
    for name in names:
        variants = variants_for(name, args.pad_always)
        check = logit_check(name, variants, device)
        verdicts = ", ".join(f"{k}: fp32 {r['fp32_rel']:.2e} ({'ok' if r['fp32_ok'] else 'OVER'}), "
                             f"half {r['half_rel']:.2e} ({'ok' if r['half_ok'] else 'OVER'})"
                             for k, r in check["variants"].items())
        print(f"  [{time.perf_counter() - started:6.0f} s] {name} logits vs plain (tolerance {TANH_GELU_REL_TOL:.0e}, "
              f"half floor {check['plain_half_vs_fp32_rel']:.2e}): {verdicts}", flush=True)
        earlier = data["models"].get(name, {}).get("modes", {})  # --merge: the modes not measured again stay
        entry: dict[str, Any] = dict(variants=[v.key for v in variants], logits=check,
                                     modes={m: r for m, r in earlier.items() if m not in modes})
        data["models"][name] = entry
        for mode in modes:
            entry["modes"][mode] = measure_mode(name, mode, variants, args, started)
            print(_summary_line(name, mode, entry["modes"][mode]), flush=True)
        data["wall_s"] = round(time.perf_counter() - started, 1)
        write_json(out, data)
    data["complete"] = True
    write_json(out, data)
    return data


#: what a merged run must share with the file it adds to
MERGE_KEYS = ("benchmark", "gpu", "torch", "cuda", "batch_size", "resolution", "dtype", "rounds", "repeats",
              "official", "tolerance_rel", "disable_addmm_cuda_lt")


#: the table's row order: best first, then the other profiler modes, then the compile variants
MODE_ORDER = ("best",) + tuple(m for m in PROFILER_MODES if m != "best") + tuple(COMPILE_VARIANTS)


def modes_order(mode: str) -> int:
    """A mode's place in ``MODE_ORDER`` (an unknown one last)."""
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def merge_earlier(out: Path, data: dict[str, Any]) -> None:
    """Start this run's ``data`` from the earlier run in ``out`` (none if there is no file): its models,
    modes and compile variants, and a line of provenance under ``earlier_runs``. Refused by name when
    that run's GPU or settings differ from this one's: one table holds one protocol. (A model measured
    again keeps the modes this run does not measure: ``run``.)"""
    if not out.exists():
        data["modes"] = sorted(data["modes"], key=modes_order)
        return
    old = json.loads(out.read_text())
    differ = [f"{k} {old.get(k)!r} there, {data[k]!r} here" for k in MERGE_KEYS if old.get(k) != data[k]]
    if differ:
        raise SystemExit(f"--merge: {out} was measured otherwise ({'; '.join(differ)}); pass another --out")
    data["models"] = dict(old.get("models", {}))
    data["modes"] = sorted({m for e in data["models"].values() for m in e["modes"]} | set(data["modes"]),
                           key=modes_order)
    data["compile_variants"] = old.get("compile_variants", {}) | data["compile_variants"]
    data["earlier_runs"] = old.get("earlier_runs", []) + [{k: old.get(k) for k in ("created", "host", "wall_s")}
                                                         | dict(models=list(data["models"]))]


PRESET_LABEL = {f"faster_vit_{i}_224": f"FasterViT-{i}" for i in range(7)} | {"faster_vit_4_21k_224": "FasterViT-4"}


def markdown(data: dict[str, Any]) -> str:
    """The README's table: per model and mode, img/s of each variant (official first), ratios of the
    fused variants to ours plain and to the official code, and whether the logit check passed."""
    lines = ["| model | mode | official | ours plain | + GELU epilogue | + pad 8 + GELU epilogue | "
             "epilogue / plain | epilogue / official | logits within tolerance |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]

    def num(v: Optional[float], fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for name, entry in data["models"].items():
        ok = all(r["fp32_ok"] and r["half_ok"] for r in entry["logits"]["variants"].values())
        for mode, row in sorted(entry["modes"].items(), key=lambda kv: modes_order(kv[0])):
            med, over_off = row["images_per_s"], row.get("over_official", {})
            best = "pad8_gelu" if "pad8_gelu" in med else "gelu"
            lines.append(
                f"| {PRESET_LABEL.get(name, name)} | {mode} | {num(med.get('official'), ',.0f')} | "
                f"{med['plain']:,.0f} | {med['gelu']:,.0f} | {num(med.get('pad8_gelu'), ',.0f')} | "
                f"{row['over_plain'][best]:.3f}× | {num(over_off.get(best), '.3f')}"
                f"{'×' if best in over_off else ''} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def output_path(args: argparse.Namespace) -> Path:
    """``--out``, or the committed JSON for a GPU run; a CPU run without ``--out`` is refused."""
    if args.out is not None:
        return Path(args.out)
    if args.smoke or args.device == "cpu":
        raise SystemExit(f"a CPU run needs --out: {DEFAULT_OUT.relative_to(ROOT)} holds GPU results only")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"no CUDA GPU: {DEFAULT_OUT.relative_to(ROOT)} holds GPU results only (pass --out)")
    return DEFAULT_OUT


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    run(args, output_path(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
