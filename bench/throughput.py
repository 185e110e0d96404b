#!/usr/bin/env python
"""Throughput of our FasterViT generator against the official ``fastervit==1.0.0``, on one GPU.

Parts (``--parts``; each is written into one JSON file, so several runs can fill it):

- ``presets``: FasterViT-0..6 built by our generator and by the official code, same settings
  (batch 128, 224², fp16 AMP) in four ways: ``paper-plain`` (eager, no deploy, NCHW),
  ``eager-best`` (eager, deploy, channels_last), ``cudagraph`` (deploy, channels_last, the
  profiler's quick mode), and the compiled settings chosen by ``--compiled``: ``compiled``
  (deploy, channels_last, ``torch.compile`` without CUDA graphs) and ``best`` (the profiler's
  ``best`` mode: ``torch.compile(mode="reduce-overhead")``, i.e. Inductor kernels replayed from
  CUDA graphs, how users deploy and the official code at its fastest; the default on a GPU).
- ``ablation``: the paper's Table S.2 throughput ratios on FasterViT-2, for both implementations.
- ``fidelity``: random configs of the default space, timed in the quick mode and in each compiled
  setting; Spearman rho between the quick ranking and the last compiled setting's.
- ``repeatability``: the quick FasterViT-0 measurement three times: wall time and CV.

Three phases keep every timing uncontended. A: every non-compiled measurement, in this process,
alone on the GPU. B: worker processes compile every model of each compiled setting in parallel, timing
nothing — inductor autotunes kernels on the GPU while it compiles, which is why nothing may be timed
meanwhile (the first design timed while others compiled: CVs of 5-37%). C: this process alone
compiles each model again, from the inductor cache filled in B, and times it. ``--only-compiled``
runs B and C only.

Run on the GPU machine from the repository root (``--time-budget`` 480 s by default: no new work
starts after it, and what is done is written)::

    PYTHONPATH=. python bench/throughput.py --out results/benchmarks/throughput.json

``--smoke`` runs every part on the CPU with tiny models (about a minute on two idle cores): it
checks the script, not speed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing

import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)  # the official package imports deprecated timm paths
warnings.filterwarnings("ignore", message="torch.meshgrid")

from evaluators.nvml import open_probe  # noqa: E402
from evaluators.profiler import NoGPUError, build_official, cpu_name, measure_throughput, resolve_device  # noqa: E402
from search_spaces import PRESETS, FasterViTConfig  # noqa: E402

PARTS = ("repeatability", "presets", "ablation", "fidelity")  # the order they run in
SETTINGS = {
    "paper-plain": dict(mode="eager", deploy=False, channels_last=False),
    "eager-best": dict(mode="eager", deploy=True, channels_last=True),
    "cudagraph": dict(mode="cudagraph", deploy=True, channels_last=True),
    "compiled": dict(mode="compile", deploy=True, channels_last=True),
    "best": dict(mode="best", deploy=True, channels_last=True),
}
COMPILED_SETTINGS = ("compiled", "best")  # timed in phases B/C (``--compiled`` chooses which)
IMPLS = ("ours", "official")
# Table S.2 (FasterViT-2, A100): throughput of each variant relative to the baseline.
PAPER_S2 = {"no_hat": 1.08, "no_ct_propagation": 0.93, "window14_stage3": 0.90}
TARGETS = dict(ours_vs_official=1.0, best_vs_best=1.3, cv=0.01, quick_wall_s=5.0, rho=0.98)

# ---------------------------------------------------------------------------------------------
# one lock for all timed sections, in every process
# ---------------------------------------------------------------------------------------------
_LOCK: Any = None
_CORES: Optional[tuple[set[int], set[int]]] = None  # (timing cores, other cores), or None: no pinning
_DEADLINE = math.inf
_LOCK_WAIT = [0.0]  # seconds this process spent waiting for the lock
_LOCK_TIMEOUT_S = 300.0  # far longer than any timed section: a lock held longer belongs to a dead process


@contextlib.contextmanager
def timed_section() -> Iterator[None]:
    """Hold the GPU lock and run on the reserved cores (the profiler's ``timing_guard``)."""
    t0 = time.perf_counter()
    if not _LOCK.acquire(timeout=_LOCK_TIMEOUT_S):
        raise RuntimeError(f"the GPU timing lock was not released within {_LOCK_TIMEOUT_S:.0f} s")
    _LOCK_WAIT[0] += time.perf_counter() - t0
    try:
        if _CORES:
            os.sched_setaffinity(0, _CORES[0])
        yield
    finally:
        if _CORES:
            os.sched_setaffinity(0, _CORES[1])
        _LOCK.release()


def _split_cores() -> Optional[tuple[set[int], set[int]]]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 8:
        return None
    return set(cores[-2:]), set(cores[:-2])


def _init_worker(lock: Any, cores: Optional[tuple[set[int], set[int]]], deadline: float, compile_threads: int) -> None:
    global _LOCK, _CORES, _DEADLINE
    _LOCK, _CORES, _DEADLINE = lock, cores, deadline
    os.nice(10)  # compiling yields the CPU to anything timing
    if cores:
        os.sched_setaffinity(0, cores[1])
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = compile_threads


# ---------------------------------------------------------------------------------------------
# what is measured
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A model to build in any process: our config, or an official factory and its keyword arguments."""

    impl: str
    name: str
    config: dict = field(default_factory=dict)  # ours: FasterViTConfig.to_dict()
    factory: str = ""  # official: e.g. "faster_vit_2_224"
    kwargs: dict = field(default_factory=dict)  # official: factory keyword arguments

    def spec(self, device: torch.device, seed: int) -> tuple[Any, Optional[int]]:
        """What ``measure_throughput`` takes, and the input resolution to give it (None: the config's)."""
        if self.impl == "ours":
            return FasterViTConfig.from_dict(self.config), None
        return build_official(self.factory, device=device, seed=seed, **self.kwargs), self.kwargs.get("resolution", 224)


def pair(name: str, cfg: FasterViTConfig, factory: str, overrides: dict) -> list[ModelRef]:
    """Ours and official for one architecture: ``cfg`` with ``overrides`` / ``factory(**overrides)``."""
    ours = cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return [ModelRef("ours", name, config=ours.to_dict()),
            ModelRef("official", name, factory=factory, kwargs=overrides)]


def official_overrides(cfg: FasterViTConfig) -> dict:
    """Keyword arguments that make the official ``faster_vit_0_224`` factory build ``cfg`` (smoke models)."""
    return dict(resolution=cfg.resolution[0], dim=cfg.dim, in_dim=cfg.in_dim, depths=list(cfg.depths),
                num_heads=list(cfg.num_heads), window_size=list(cfg.window_size), ct_size=cfg.ct_size,
                mlp_ratio=cfg.mlp_ratio, hat=list(cfg.hat), do_propagation=cfg.do_propagation,
                layer_scale=cfg.layer_scale, drop_path_rate=cfg.drop_path_rate)


def ablation_variants(base: FasterViTConfig) -> dict[str, dict]:
    """Table S.2 variants as overrides of the base config (the same keywords for both implementations).

    Baseline: FasterViT-2 with carrier-token propagation (our reading of the paper's baseline; the
    released FV-2 has none, so ``no_ct_propagation`` is also the released FV-2). Without carrier
    tokens (no HAT, one global window) propagation has nothing to propagate.
    """
    stage3 = base.stages[2].feature[0]  # 14 at 224²: one window over the whole stage-3 map
    window14 = list(base.window_size)
    window14[2] = stage3
    return {
        "baseline": dict(do_propagation=True),
        "no_hat": dict(do_propagation=True, hat=[False] * 4),
        "no_ct_propagation": dict(do_propagation=False),
        "window14_stage3": dict(do_propagation=True, hat=[False] * 4, window_size=window14),
    }


def sample_configs(n: int, seed: int, resolution: Optional[int]) -> list[FasterViTConfig]:
    """``n`` distinct valid random configs of the default space (refused samples are skipped)."""
    import numpy as np

    from search_spaces.space import load_space

    space, rng = load_space("default"), np.random.default_rng(seed)
    configs: dict[str, FasterViTConfig] = {}
    for _ in range(50 * n):
        if len(configs) == n:
            break
        try:
            _, cfg = space.sample_random(rng)
            if resolution is not None:
                cfg = cfg.at_resolution(resolution)
        except ValueError:
            continue
        configs.setdefault(cfg.arch_id, cfg)
    return list(configs.values())


def measure(ref: ModelRef, setting: str, options: dict, *, latency_b1: bool) -> dict:
    """One measurement as a JSON-ready dict; a failure is recorded (``error``) and the benchmark goes on."""
    kwargs = dict(SETTINGS[setting], **options)
    if setting not in COMPILED_SETTINGS:
        kwargs.pop("compile_options", None)
    device = torch.device(kwargs["device"])
    try:
        spec, resolution = ref.spec(device, kwargs["seed"])
        record = measure_throughput(spec, resolution=resolution, latency_b1=latency_b1, timing_guard=timed_section,
                                    **kwargs).to_dict()
    except Exception as e:  # noqa: BLE001  (e.g. the official model failing CUDA-graph capture)
        record = dict(error=f"{type(e).__name__}: {e}")
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record.update(impl=ref.impl, name=ref.name, setting=setting)
    return record


def compile_job(ref: ModelRef, setting: str, options: dict, warm_only: bool) -> dict:
    """Worker: build, compile and time one model (the timed part under the shared lock).

    ``warm_only``: compile once with a minimal run and no timing, to fill the inductor cache (phase
    B, when nothing is being timed); the real measurement (phase C) then compiles from the cache.
    """
    if time.time() > _DEADLINE:
        return dict(impl=ref.impl, name=ref.name, setting=setting, error="skipped: time budget spent")
    if not warm_only:
        return measure(ref, setting, options, latency_b1=False)
    device = torch.device(options["device"])
    t = time.perf_counter()
    try:
        spec, resolution = ref.spec(device, options["seed"])
        kwargs = dict(SETTINGS[setting], **dict(options, warmup=1, repeats=1))
        if setting not in COMPILED_SETTINGS:
            raise ValueError(f"compile_job: {setting!r} is not a compiled setting ({', '.join(COMPILED_SETTINGS)})")
        rec = measure_throughput(spec, resolution=resolution, latency_b1=False, **kwargs).to_dict()
        return dict(impl=ref.impl, name=ref.name, compile_s=rec.get("compile_s"), error=rec.get("error"),
                    wall_s=round(time.perf_counter() - t, 1))
    except Exception as e:  # noqa: BLE001
        return dict(impl=ref.impl, name=ref.name, error=f"{type(e).__name__}: {e}")
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# results file
# ---------------------------------------------------------------------------------------------
class Results:
    """The JSON file: parts replaced as they are re-run, written after every result (atomically)."""

    def __init__(self, path: Path, run: dict):
        self.path = path
        self.data: dict = {"benchmark": "throughput", "parts": {}, "runs": []}
        if path.is_file():
            self.data = json.loads(path.read_text())
        self.data["runs"].append(run)
        self.run = run

    def start_part(self, name: str, settings: dict) -> dict:
        part = dict(run=len(self.data["runs"]) - 1, env=self.run["env"], settings=settings, complete=False, results={})
        self.data["parts"][name] = part
        self.save()
        return part

    def save(self) -> None:
        self.data["updated"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _key(impl: str, name: str, setting: str) -> str:
    return f"{impl}/{name}/{setting}"


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args = args
        self.device = device
        self.start = time.time()
        self.deadline = self.start + args.time_budget
        self.options = dict(device=str(device), batch_size=args.batch_size, dtype=args.dtype, warmup=args.warmup,
                            repeats=args.repeats, seed=args.seed)
        if args.smoke:  # CPU: the "eager" backend runs torch.compile's tracing in seconds
            self.options["compile_options"] = {"backend": "eager"}
        self.quick = "cudagraph" if device.type == "cuda" else "eager-best"
        self.settings = [s for s in SETTINGS if s not in COMPILED_SETTINGS and (s != "cudagraph" or device.type == "cuda")]
        self.compiled = args.compiled
        self.results = Results(args.out, dict(started=_now(), env=_environment(device), args=_args_dict(args)))
        self.pending: list[tuple[str, str, Any]] = []  # (part, key, AsyncResult)
        self.pool: Any = None
        self.cut_short = False  # the time budget stopped some work

    # -------------------------------------------------------------- plumbing
    def log(self, message: str) -> None:
        print(f"[{time.time() - self.start:6.1f}s] {message}", flush=True)

    def out_of_time(self) -> bool:
        if time.time() > self.deadline:
            self.cut_short = True
        return self.cut_short

    def store(self, part: str, key: str, record: dict) -> None:
        self.results.data["parts"][part]["results"][key] = record
        self.results.save()
        if record.get("error"):
            self.log(f"{part:13s} {key}: {record['error']}")
        else:
            self.log(f"{part:13s} {key}: {record['images_per_s']:,.1f} img/s  cv {100 * record['cv']:.2f}%  "
                     f"wall {record['wall_s']:.1f}s" + (f"  compile {record['compile_s']:.0f}s"
                                                        if record.get("compile_s") else ""))

    def main_measure(self, part: str, ref: ModelRef, setting: str, *, latency_b1: bool = False) -> Optional[dict]:
        if self.out_of_time():
            return None
        record = measure(ref, setting, self.options, latency_b1=latency_b1)
        self.store(part, _key(ref.impl, ref.name, setting), record)
        self.collect()
        return record

    def compile_phase(self, jobs: list[tuple[str, ModelRef, str]], *, warm_only: bool) -> None:
        """Run the compiled jobs on worker processes; ``warm_only`` fills the cache without timing."""
        if not jobs or self.out_of_time():
            return
        workers = min(self.args.workers, len(jobs))
        other = len(_CORES[1]) if _CORES else os.cpu_count() or 1
        ctx = mp.get_context("spawn")
        self.pool = ctx.Pool(workers, initializer=_init_worker,
                             initargs=(_LOCK, _CORES, self.deadline, max(2, other // workers)))
        self.pending = [(part, _key(ref.impl, ref.name, setting),
                         self.pool.apply_async(compile_job, (ref, setting, self.options, warm_only)))
                        for part, ref, setting in jobs]
        phase = "B: compiling (cache fill, nothing timed)" if warm_only else "C: compiled timings (from the cache)"
        self.log(f"phase {phase}: {len(jobs)} jobs on {workers} worker processes")
        self.collect(wait=True, store=not warm_only)
        self.close()
        self.pool = None

    def collect(self, wait: bool = False, store: bool = True) -> None:
        """Store finished compile jobs; with ``wait``, wait for all of them until the deadline."""
        while self.pending:
            still = []
            for part, key, result in self.pending:
                if result.ready():
                    try:
                        record = result.get()
                    except Exception as e:  # noqa: BLE001  (a worker that failed outside the measurement)
                        record = dict(error=f"worker: {type(e).__name__}: {e}")
                    if store:
                        self.store(part, key, record)
                    else:
                        done = record.get("error") or f"compile {record.get('compile_s')} s"
                        self.log(f"phase B {key}: {done}")
                else:
                    still.append((part, key, result))
            self.pending = still
            if not wait or not still:
                return
            if self.out_of_time():
                self.log(f"time budget spent: {len(still)} compile jobs stopped")
                for part, key, _ in still:
                    if store:
                        self.store(part, key, dict(error="not finished within the time budget"))
                self.pending = []
                return
            still[0][2].wait(timeout=1.0)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()  # only jobs past the deadline can still be running
            self.pool.join()

    # -------------------------------------------------------------- parts
    def run(self) -> None:
        parts = [name for name in PARTS if name in self.args.parts]
        presets = self.preset_refs() if "presets" in parts else []
        randoms = self.random_refs() if "fidelity" in parts else []
        for name in parts:
            self.results.start_part(name, dict(options=self.options, settings=SETTINGS))
        # phase A: every non-compiled timing, in this process, with no other process on the GPU
        phase_a = not self.args.only_compiled
        if "repeatability" in parts and phase_a:
            self.repeatability()
        for ref in presets if phase_a else ():
            for setting in self.settings:
                self.main_measure("presets", ref, setting, latency_b1=setting == self.quick)
        if "ablation" in parts and phase_a:
            self.ablation(self.results.data["parts"]["ablation"])
        if "fidelity" in parts:
            self.results.data["parts"]["fidelity"]["configs"] = {r.name: r.config for r in randoms}
            for ref in randoms if phase_a else ():
                self.main_measure("fidelity", ref, self.quick)
        # phase B: compile everything in parallel (inductor autotunes on the GPU: nothing is timed);
        # phase C: this process alone compiles each again from the inductor cache and times it
        jobs = [(part, r, setting) for setting in self.compiled
                for part, refs in (("presets", presets), ("fidelity", randoms)) for r in refs]
        self.compile_phase(jobs, warm_only=True)
        for part, ref, setting in jobs:
            self.main_measure(part, ref, setting)
        if "fidelity" in parts:
            fidelity = self.results.data["parts"]["fidelity"]
            fidelity["ranking"] = fidelity_summary(fidelity, self.quick, self.compiled[-1])
        for name in parts:
            self.results.data["parts"][name]["complete"] = not self.cut_short
        self.results.run.update(finished=_now(), wall_s=round(time.time() - self.start, 1))
        self.results.save()
        if self.cut_short:
            self.log(f"the time budget cut these parts short: {','.join(parts)}; "
                     "run them again (--parts ...) in another call, they are merged into the same file")

    def preset_refs(self) -> list[ModelRef]:
        if self.args.smoke:
            refs = []
            for name, cfg in smoke_models().items():
                refs += pair(name, cfg, "faster_vit_0_224", official_overrides(cfg))
            return refs
        refs = []
        for i in self.args.presets:
            name = f"faster_vit_{i}_224"
            refs += pair(name, PRESETS[name], name, {})
        return refs

    def random_refs(self) -> list[ModelRef]:
        configs = sample_configs(self.args.n_random, self.args.seed, 64 if self.args.smoke else None)
        return [ModelRef("ours", f"random{i:02d}", config=c.to_dict()) for i, c in enumerate(configs)]

    def repeatability(self) -> None:
        if self.args.smoke:
            ref = ModelRef("ours", "tiny_hat", config=smoke_models()["tiny_hat"].to_dict())
        else:
            ref = ModelRef("ours", "faster_vit_0_224", config=PRESETS["faster_vit_0_224"].to_dict())
        for i in range(3):
            waited = _LOCK_WAIT[0]
            record = self.main_measure("repeatability", dataclasses.replace(ref, name=f"{ref.name}#{i}"), self.quick,
                                       latency_b1=True)
            if record is not None:
                record["lock_wait_s"] = round(_LOCK_WAIT[0] - waited, 3)
        self.results.save()

    def ablation(self, part: dict) -> None:
        if self.args.smoke:
            base, factory = smoke_models()["tiny_hat"], "faster_vit_0_224"
            common = official_overrides(base)
        else:
            base, factory, common = PRESETS["faster_vit_2_224"], "faster_vit_2_224", {}
        variants = ablation_variants(base)
        part["variants"] = variants
        part["paper"] = PAPER_S2
        for setting in (self.quick, "paper-plain"):
            for variant, overrides in variants.items():
                for ref in pair(variant, base, factory, {**common, **overrides}):
                    self.main_measure("ablation", ref, setting)
        part["ratios"] = ablation_ratios(part["results"], list(variants), (self.quick, "paper-plain"))
        self.results.save()


def smoke_models() -> dict[str, FasterViTConfig]:
    """Two tiny architectures for ``--smoke`` (HAT in stage 3, 2x2 windows of 2, at 64²)."""
    base = FasterViTConfig(resolution=64, dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                           window_size=(2, 2, 2, 2), ct_size=1, num_classes=1000, drop_path_rate=0.0)
    return {"tiny_hat": base, "tiny_wide": base.replace(dim=32, num_heads=(1, 1, 4, 4), do_propagation=True)}


# ---------------------------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------------------------
def _ips(results: dict, impl: str, name: str, setting: str) -> Optional[float]:
    return results.get(_key(impl, name, setting), {}).get("images_per_s")


def ablation_ratios(results: dict, variants: list[str], settings: tuple[str, ...]) -> dict:
    out: dict[str, dict] = {}
    for setting in settings:
        for impl in IMPLS:
            base = _ips(results, impl, "baseline", setting)
            row = {}
            for v in variants[1:]:
                ips = _ips(results, impl, v, setting)
                row[v] = round(ips / base, 3) if ips and base else None
            # the other reading of the paper's 0.93: adding propagation to the released FV-2 (which has none)
            released = _ips(results, impl, "no_ct_propagation", setting)
            row["ct_propagation_added"] = round(base / released, 3) if base and released else None
            out[f"{impl}/{setting}"] = row
    return out


def fidelity_summary(part: dict, quick: str, compiled: str = "compiled") -> dict:
    """Spearman rho between the quick setting's ranking of the random configs and ``compiled``'s."""
    from scipy.stats import spearmanr

    rows = []
    for name in part.get("configs", {}):
        q, c = _ips(part["results"], "ours", name, quick), _ips(part["results"], "ours", name, compiled)
        if q and c:
            rows.append((name, q, c))
    summary: dict[str, Any] = dict(n=len(rows), quick_setting=quick, compiled_setting=compiled, spearman_rho=None)
    if len(rows) >= 3:
        rho, p_value = spearmanr([r[1] for r in rows], [r[2] for r in rows])[:2]
        summary.update(spearman_rho=round(float(rho), 4), p_value=float(p_value))
    summary["pairs"] = {name: [q, c] for name, q, c in rows}
    return summary


def best_mode_ratios(data: dict) -> dict[str, float]:
    """Ours / official images/s, both in ``best`` mode, per preset measured both ways (issue #16's key)."""
    presets = data["parts"].get("presets", {}).get("results", {})
    out = {}
    for name in sorted({r["name"] for r in presets.values() if "name" in r}):
        o, f = _ips(presets, "ours", name, "best"), _ips(presets, "official", name, "best")
        if o and f:
            out[name] = round(o / f, 3)
    return out


def merge_best_mode_ratios(data: dict, path: Path, source: Path) -> dict[str, float]:
    """Write ``best_mode_ratio_vs_official`` into the predictor summary at ``path`` (its other keys kept)."""
    ratios = best_mode_ratios(data)
    if ratios:
        summary = json.loads(path.read_text()) if path.is_file() else {}
        summary["best_mode_ratio_vs_official"] = ratios
        summary["best_mode_ratio_source"] = dict(file=str(source), gpu=_gpu_of(data))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    return ratios


def preset_label(name: str) -> str:
    """``faster_vit_2_224`` as the README's tables name it: ``FasterViT-2``."""
    return name.replace("faster_vit_", "FasterViT-").replace("_224", "")


def best_mode_markdown(data: dict) -> list[str]:
    """The README's best-mode table: per preset, ours and official images/s in ``best`` mode and their ratio."""
    presets = data["parts"].get("presets", {}).get("results", {})
    lines = ["| model | ours, best mode (img/s) | official, best mode (img/s) | ours / official |", "|---|---:|---:|---:|"]
    for name, ratio in best_mode_ratios(data).items():
        lines.append(f"| {preset_label(name)} | {_ips(presets, 'ours', name, 'best'):,.0f} | "
                     f"{_ips(presets, 'official', name, 'best'):,.0f} | {ratio:.2f}× |")
    return lines


def _gpu_of(data: dict) -> Optional[str]:
    env = data["parts"].get("presets", {}).get("env", {})
    return env.get("gpu_name")


def checks(data: dict) -> list[dict]:
    """The issue's targets, computed from whatever parts the file holds (``n/a`` when absent)."""
    parts = data["parts"]
    out = []

    def add(name: str, target: str, value: Optional[float], ok: Optional[bool], detail: str = "") -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        out.append(dict(name=name, target=target, value=value, status=status, detail=detail))

    presets = parts.get("presets", {}).get("results", {})
    names = sorted({r["name"] for r in presets.values() if "name" in r})
    ratios, misses, best = [], [], []
    for name in names:
        for setting in SETTINGS:
            o, f = _ips(presets, "ours", name, setting), _ips(presets, "official", name, setting)
            if o and f:
                ratios.append(o / f)
                if o / f < TARGETS["ours_vs_official"]:
                    misses.append(f"{name}/{setting} {o / f:.2f}x")
        ours_best = max((v for s in SETTINGS if (v := _ips(presets, "ours", name, s))), default=None)
        official_best = max((v for s in COMPILED_SETTINGS if (v := _ips(presets, "official", name, s))), default=None)
        if ours_best and official_best:
            best.append((name, ours_best / official_best))
    add("ours >= official, every preset and setting", ">= 1.00x", round(min(ratios), 3) if ratios else None,
        (not misses) if ratios else None, "; ".join(misses))
    low = [f"{n} {r:.2f}x" for n, r in best if r < TARGETS["best_vs_best"]]
    add("ours best >= 1.3x official best (compiled or best mode)", ">= 1.30x", round(min(r for _, r in best), 3) if best else None,
        (not low) if best else None, "; ".join(low) or ", ".join(f"{n} {r:.2f}x" for n, r in best))
    cvs = [(k, r["cv"]) for part in ("presets", "repeatability")
           for k, r in parts.get(part, {}).get("results", {}).items()
           if r.get("setting") == "cudagraph" and r.get("cv") is not None]
    worst = max(cvs, key=lambda kv: kv[1]) if cvs else None
    add("CV of the quick (cudagraph) measurement", "<= 1%", round(100 * worst[1], 3) if worst else None,
        worst[1] <= TARGETS["cv"] if worst else None, f"worst: {worst[0]}" if worst else "")
    walls = [round(r["wall_s"] - r.get("lock_wait_s", 0.0), 3)  # waiting for another process's timing is not ours
             for r in parts.get("repeatability", {}).get("results", {}).values()
             if r.get("wall_s") and r.get("setting") == "cudagraph"]
    add("FasterViT-0 quick measurement wall time", "<= 5 s", statistics.median(walls) if walls else None,
        statistics.median(walls) <= TARGETS["quick_wall_s"] if walls else None,
        f"runs: {', '.join(f'{w:.2f}s' for w in walls)} (the first includes CUDA library loading)" if walls else "")
    rho = parts.get("fidelity", {}).get("ranking", {})
    add(f"ranking fidelity, quick vs {rho.get('compiled_setting', 'compiled')} (Spearman)", ">= 0.98",
        rho.get("spearman_rho"), rho["spearman_rho"] >= TARGETS["rho"] if rho.get("spearman_rho") is not None else None,
        f"n={rho.get('n')} ({rho.get('quick_setting')} vs {rho.get('compiled_setting', 'compiled')})" if rho else "")
    return out


def report(data: dict) -> str:
    """A short markdown summary: the preset table, the ablation ratios and the checks."""
    lines = []
    presets = data["parts"].get("presets")
    if presets:
        res = presets["results"]
        names = sorted({r["name"] for r in res.values() if "name" in r})
        lines += ["| model | impl | " + " | ".join(SETTINGS) + " |", "|---|---|" + "---|" * len(SETTINGS)]
        for name in names:
            for impl in IMPLS:
                cells = [f"{v:,.0f}" if (v := _ips(res, impl, name, s)) else "-" for s in SETTINGS]
                lines.append(f"| {name} | {impl} | " + " | ".join(cells) + " |")
            cells = []
            for s in SETTINGS:
                o, f = _ips(res, "ours", name, s), _ips(res, "official", name, s)
                cells.append(f"{o / f:.2f}x" if o and f else "-")
            lines.append(f"| {name} | ours/official | " + " | ".join(cells) + " |")
        lines.append("")
    ablation = data["parts"].get("ablation")
    if ablation and ablation.get("ratios"):
        columns = [*PAPER_S2, "ct_propagation_added"]  # baseline / released FV-2: the other reading of 0.93
        lines += ["| Table S.2 ratio (variant / baseline) | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns),
                  "| paper (A100) | " + " | ".join(f"{v:.2f}" for v in PAPER_S2.values()) + " | (0.93) |"]
        for row_name, row in ablation["ratios"].items():
            lines.append(f"| {row_name} | " + " | ".join("-" if row.get(v) is None else f"{row[v]:.2f}"
                                                         for v in columns) + " |")
        lines.append("")
    lines += ["| check | target | value | status |", "|---|---|---|---|"]
    for c in data.get("checks", []):
        lines.append(f"| {c['name']} | {c['target']} | {'-' if c['value'] is None else c['value']} | {c['status']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _environment(device: torch.device) -> dict:
    env = dict(device=device.type, torch_version=torch.__version__, cuda_version=torch.version.cuda,
               cpu_name=cpu_name(), cpu_cores=len(os.sched_getaffinity(0)), date=_now())
    if device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
        probe, env["nvml_error"] = open_probe(device)
        if probe is not None:
            env.update(gpu_name=probe.name, driver=probe.driver, max_sm_clock_mhz=probe.max_sm_clock_mhz)
            probe.close()
    else:
        env["gpu_name"] = "cpu"
    return env


def _args_dict(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--presets", default="0,1,2,3,4,5,6", help="FasterViT indices for the presets part")
    p.add_argument("--n-random", type=int, default=30, help="random configs for the fidelity part")
    p.add_argument("--workers", type=int, default=8, help="compile worker processes")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (parts merged in) [results/benchmarks/throughput.json; smoke: a temp file]")
    p.add_argument("--time-budget", type=float, default=480.0, help="seconds; no new work starts after it")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compiled", default=None,
                   help=f"compiled settings to time, comma-separated, of {','.join(COMPILED_SETTINGS)} "
                        "[best on a GPU; smoke: compiled, since best needs CUDA graphs]")
    p.add_argument("--predictor-summary", type=Path, default=None,
                   help="with best-mode presets, write best_mode_ratio_vs_official into this file "
                        "[results/benchmarks/predictor-summary.json; smoke: none]")
    p.add_argument("--only-compiled", action="store_true",
                   help="only the compiled measurements (phases B and C), e.g. to redo them in another call")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models, about a minute: checks the script, not speed")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    try:
        args.presets = [int(i) for i in args.presets.split(",") if i.strip()]
    except ValueError:
        p.error(f"--presets={args.presets!r} must be comma-separated integers")
    bad = [i for i in args.presets if f"faster_vit_{i}_224" not in PRESETS]
    if bad:
        p.error(f"--presets: no FasterViT-{bad[0]} preset (0-6)")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    args.compiled = [s.strip() for s in (args.compiled or ("compiled" if args.smoke else "best")).split(",")
                     if s.strip()]
    unknown = [s for s in args.compiled if s not in COMPILED_SETTINGS]
    if unknown or not args.compiled:
        p.error(f"--compiled: {unknown or 'nothing'}; choose from {', '.join(COMPILED_SETTINGS)}")
    if args.smoke and "best" in args.compiled:
        p.error("--compiled best needs CUDA graphs (a GPU); --smoke runs on the CPU: use --compiled compiled")
    if args.smoke:
        args.batch_size, args.dtype, args.warmup, args.repeats = 2, "fp32", 1, 3
        args.n_random, args.workers = min(args.n_random, 3), min(args.workers, 2)
        args.out = args.out or Path("/tmp/nas_throughput_smoke.json")
    args.out = args.out or Path("results/benchmarks/throughput.json")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    global _LOCK, _CORES
    args = parse_args(argv)
    try:
        device = resolve_device("cpu" if args.smoke else "cuda")
    except NoGPUError:
        print("error: no CUDA GPU was found; this benchmark needs one (--smoke checks the script on the CPU)",
              file=sys.stderr)
        return 3
    _LOCK, _CORES = mp.get_context("spawn").Lock(), _split_cores()
    if _CORES:
        os.sched_setaffinity(0, _CORES[1])
    bench = Bench(args, device)
    bench.log(f"{bench.results.run['env']['gpu_name']}, torch {torch.__version__}; parts {','.join(args.parts)}; "
              f"out {args.out}" + (f"; timing on cores {sorted(_CORES[0])}" if _CORES else ""))
    try:
        bench.run()
    finally:
        bench.close()
        bench.results.data["checks"] = checks(bench.results.data)
        bench.results.save()
    summary = args.predictor_summary or (None if args.smoke else Path("results/benchmarks/predictor-summary.json"))
    if summary is not None and "presets" in args.parts and "best" in args.compiled:
        ratios = merge_best_mode_ratios(bench.results.data, summary, args.out)
        bench.log(f"best-mode ratios (ours/official) -> {summary}: {ratios}" if ratios
                  else "no preset was measured in best mode by both implementations: no ratio written")
    print(report(bench.results.data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
