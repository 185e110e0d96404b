"""Throughput of a network on a GPU (or, for checks, the CPU), measured the same way every time.

The paper's protocol (Table 1): batch 128 at 224², AMP fp16, inference only, images per second.
Here the input is random normal (fixed seed) already on the device, the forward runs under
``torch.inference_mode`` and ``torch.autocast`` (``fp16``/``bf16``; ``fp32`` runs without), and
one of four modes runs it:

- ``cudagraph`` (default): the eager model captured once in a CUDA graph, the replays timed. A
  replay is one launch, so the number measures the GPU rather than the host CPU that launches the
  kernels: eager timings of small networks are launch-bound (one config moved between 5,200 and
  7,400 img/s on one H200 within minutes). This is the quick mode a search should use.
- ``eager``: plain PyTorch, as the paper measured (``deploy=False, channels_last=False``).
- ``compile``: ``torch.compile`` (default mode); the compile time is reported apart (``compile_s``).
  ``torch._dynamo``'s caches are reset first, so that many models compiled in one process never
  exhaust its recompilation limit.
- ``best``: how users deploy, and the official code at its fastest: ``torch.compile(mode=
  "reduce-overhead", dynamic=False)`` (Inductor kernels replayed from CUDA graphs), one static
  graph per batch size. Inductor's on-disk cache is kept under ``results/inductor-cache``
  (``TORCHINDUCTOR_CACHE_DIR``, unless the user set it; ``inductor_cache=`` chooses another), so a
  re-measure of a known shape loads the compiled kernels instead of compiling again (seconds, not
  ~25 s); ``compile_s`` holds the compile (or cache-load) seconds, ``inductor_cache`` the
  folder and ``inductor_cache_hits``/``_misses`` what Inductor's FX-graph cache answered. CUDA only:
  on a CPU it is refused (CUDA graphs do not exist there; ``compile`` is the CPU's compiled mode),
  never replaced silently.

Timing: warm-up, then ``repeats`` samples of a few iterations each (about 30 ms per sample),
timed with CUDA events. The record holds median/min/max images/s over the samples, their
coefficient of variation, peak memory, batch-1 latency, and what NVML said about the GPU during
the timed section (clocks, temperature, power, clock-event/throttle reasons).

``pad_channels=8`` (off by default) zero-pads the deployed FasterViT's widths and attention head
dims to multiples of 8 (``search_spaces.padding``; same logits): ``channels_padded`` lists what
was padded, ``channels_kept`` every part left unpadded and why (a model other than a FasterViT is
one such part, and is measured as it is).

``gelu_epilogue=True`` (off by default) runs each MLP's fc1 -> GELU as one GEMM with a bias+GELU
epilogue (``search_spaces.fuse_gelu_epilogue``, after the padding when both are on): on CUDA the
MLPs' GELU becomes tanh-approximate (``bench/deploy_fusions.py`` states the tolerance), on the CPU
it stays exact. ``gelu_fused`` counts the fused MLPs, ``gelu_kept`` lists every GELU left as its own
operation and why (a model other than a FasterViT is one such part, and is measured as it is).

``profile_kernels=True`` adds, after the timed samples, one more pass of the same prepared step under
``torch.profiler``: ``kernel_us`` holds the microseconds per forward of every GPU kernel by name (on
a CPU, every ATen op's self time). It explains a number; it is not part of it (the profiler slows
the pass it watches, so no timing is taken from it).

A CUDA out-of-memory error or a non-finite output is reported in ``record.error`` and memory is
released, so a search can go on; other errors propagate.
"""

from __future__ import annotations

import contextlib
import gc
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from search_spaces import (
    FasterViT,
    FasterViTConfig,
    as_resolution,
    fuse_gelu_epilogue,
    pad_channels as pad_model_channels,
    resolve_config,
)

from .checks import at_least
from .nvml import NvmlProbe, NvmlSample, NvmlUnavailable, open_probe, summarize_samples
from .proxies import init_model  # the one seeded builder (here initialising on the device)

__all__ = ["MODES", "COMPILED_MODES", "BEST_COMPILE", "use_inductor_cache", "DTYPES", "NoGPUError", "ThroughputRecord",
           "measure_throughput", "build_official", "measure_official", "resolve_device", "cpu_name", "kernel_times",
           "NoKernelsSeen"]

MODES = ("eager", "cudagraph", "compile", "best")
COMPILED_MODES = ("compile", "best")
BEST_COMPILE = {"mode": "reduce-overhead", "dynamic": False}  # torch.compile options of mode "best"
DEFAULT_INDUCTOR_CACHE = Path("results") / "inductor-cache"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_SAMPLE_SECONDS = 0.03  # target length of one timed sample; iterations per sample are calibrated to it
_MAX_ITERS_PER_SAMPLE = 200
_DEFAULT_RESOLUTION = 224  # for modules that carry no FasterViTConfig

ModelSpec = Union[nn.Module, FasterViTConfig, str, Path, Mapping[str, Any]]


class NoGPUError(RuntimeError):
    """A CUDA measurement was asked for on a machine without a CUDA GPU."""


class NoKernelsSeen(RuntimeError):
    """``profile_kernels=True`` but ``torch.profiler`` recorded no kernel (or, on a CPU, no op)."""


class _NonFiniteOutput(Exception):
    """Warm-up output holds NaN or inf (reported as ``error="non-finite output"``)."""


@dataclass
class ThroughputRecord:
    """One throughput measurement and the conditions it was taken under (``to_dict`` is JSON-ready).

    ``images_per_s`` is the median over samples; ``cv`` is std/mean of the per-sample images/s.
    NVML fields describe the timed section: median SM clock, highest temperature, median power,
    and every non-idle clock-event (throttle) reason seen. On the CPU they are None. When
    ``error`` is set (out of memory, non-finite output) the timing fields are None.
    """

    model: str
    arch_id: Optional[str]
    device: str
    gpu_name: str
    cpu_name: str
    torch_version: str
    cuda_version: Optional[str]
    mode: str
    dtype: str
    batch_size: int
    resolution: tuple[int, int]
    channels_last: bool
    deploy: bool
    warmup: int
    repeats: int
    driver: Optional[str] = None
    images_per_s: Optional[float] = None
    images_per_s_min: Optional[float] = None
    images_per_s_max: Optional[float] = None
    cv: Optional[float] = None
    latency_ms: Optional[float] = None
    latency_b1_ms: Optional[float] = None
    iters_per_sample: Optional[int] = None
    peak_mem_mb: Optional[float] = None
    compile_s: Optional[float] = None
    inductor_cache: Optional[str] = None
    inductor_cache_hits: Optional[int] = None  # Inductor FX-graph cache hits / misses while compiling
    inductor_cache_misses: Optional[int] = None
    sm_clock_mhz: Optional[int] = None
    max_sm_clock_mhz: Optional[int] = None
    temperature_c: Optional[int] = None
    power_w: Optional[float] = None
    throttle_reasons: list[str] = field(default_factory=list)
    nvml_error: Optional[str] = None
    error: Optional[str] = None
    kernel_us: Optional[dict[str, float]] = None  # profile_kernels=True: µs per forward by kernel (CPU: ATen op)
    kernel_error: Optional[str] = None  # profile_kernels=True and the profiler saw no kernel (timings still valid)
    pad_channels: Optional[int] = None  # the multiple widths and head dims were padded to (None: not padded)
    channels_padded: Optional[list[dict[str, Any]]] = None  # pad_channels: {part, real, padded} of each change
    channels_kept: Optional[list[dict[str, str]]] = None  # pad_channels: {part, reason} of each part left as it is
    gelu_epilogue: bool = False  # the MLPs' fc1 -> GELU fused into one GEMM with a bias+GELU epilogue
    gelu_fused: Optional[int] = None  # gelu_epilogue: how many MLPs were fused
    gelu_kept: Optional[list[dict[str, str]]] = None  # gelu_epilogue: {part, reason} of each GELU left separate
    wall_s: Optional[float] = None
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def resolve_device(device: Union[str, torch.device, None] = None) -> torch.device:
    """``device`` as a ``torch.device`` (default: CUDA if available, else CPU).

    Raises ``NoGPUError`` when CUDA is asked for and there is none.
    """
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} must be 'cuda', 'cuda:N' or 'cpu'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NoGPUError("no CUDA GPU was found (torch.cuda.is_available() is False); "
                             "use device='cpu' (--device cpu) to measure on the CPU")
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cpu":
        raise ValueError(f"device={device!r} must be 'cuda', 'cuda:N' or 'cpu'")
    return dev


def measure_throughput(
    model_or_config: ModelSpec,
    *,
    batch_size: int = 128,
    resolution: Union[int, Sequence[int], None] = None,
    dtype: str = "fp16",
    channels_last: bool = True,
    deploy: bool = True,
    mode: str = "cudagraph",
    warmup: int = 3,
    repeats: int = 20,
    iters_per_sample: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
    latency_b1: bool = True,
    seed: int = 0,
    compile_options: Optional[Mapping[str, Any]] = None,
    timing_guard: Optional[Callable[[], ContextManager[Any]]] = None,
    inductor_cache: Union[str, Path, None] = None,
    profile_kernels: bool = False,
    pad_channels: Optional[int] = None,
    gelu_epilogue: bool = False,
) -> ThroughputRecord:
    """Measure images/s of a network (see the module docstring for the protocol).

    Args:
        model_or_config: a FasterViT, a ``FasterViTConfig``, a preset name, a config dict or JSON
            path, or any ``nn.Module`` taking (B, 3, H, W) images. A module passed in is moved to
            the device, set to eval, and (``deploy``) switched to deploy in place.
        resolution: input size; default the config's (224 for modules without a config). With a
            config it replaces the config's resolution; a built FasterViT must match its own.
        dtype: ``fp16``/``bf16`` run under autocast (AMP, the paper's protocol), ``fp32`` without.
        channels_last: model and input in channels-last memory format (else contiguous).
        deploy: precompute positional biases and fold BN before timing: ``switch_to_deploy`` for a
            FasterViT (biases stored in ``dtype``); for other modules every submodule's own
            ``switch_to_deploy()`` after one forward at the target resolution (the official code
            caches its biases during that forward).
        mode: ``cudagraph`` (CUDA only), ``eager``, ``compile`` or ``best`` (CUDA only).
        warmup: forward passes before timing (before the capture in ``cudagraph`` mode; after the
            compiling call in ``compile`` mode).
        repeats: timed samples.
        iters_per_sample: forward passes per sample; default calibrated to about 30 ms.
        device: ``cuda``, ``cuda:N`` or ``cpu``; default CUDA if present.
        latency_b1: also time batch 1 (``latency_b1_ms``); in ``compile`` mode this compiles a second
            time (added to ``compile_s``).
        seed: seeds the input and, for a config, the weight init (the caller's RNG state is kept).
        compile_options: keyword arguments of ``torch.compile`` (``compile`` and ``best`` modes; ``best``
            fixes ``mode`` and ``dynamic``).
        timing_guard: a context-manager factory entered around each warm-up + timed section (not
            around building or compiling), e.g. a lock shared by processes timing on one GPU.
        inductor_cache: Inductor's cache folder in ``best`` mode (default: ``$TORCHINDUCTOR_CACHE_DIR``
            when set, else ``results/inductor-cache``).
        profile_kernels: fill ``kernel_us`` from one profiled pass after the timing (see the module
            docstring); a profile that sees no kernel at all leaves ``kernel_us`` None and says so in
            ``kernel_error``, never an empty table.
        pad_channels: after the deploy step, zero-pad a FasterViT's widths and head dims to
            multiples of this (``search_spaces.pad_channels``; same outputs); what was padded and
            what was kept, with the reason, go to ``channels_padded`` / ``channels_kept``. Needs
            ``deploy``. Default: off.
        gelu_epilogue: after the deploy step (and the padding), fuse each MLP's fc1 -> GELU into one
            GEMM with a bias+GELU epilogue (``search_spaces.fuse_gelu_epilogue``; tanh-approximate
            GELU on CUDA); ``gelu_fused`` / ``gelu_kept`` say what was fused and what was not, with
            the reason. Needs ``deploy``. Default: off.

    Raises ``NoGPUError`` for a CUDA device without a GPU and ``ValueError`` for bad options.
    """
    start = time.perf_counter()
    _check_options(batch_size=batch_size, dtype=dtype, mode=mode, warmup=warmup, repeats=repeats,
                   iters_per_sample=iters_per_sample, compile_options=compile_options)
    if pad_channels is not None:
        at_least("pad_channels", pad_channels)
        if not deploy:
            raise ValueError(f"pad_channels={pad_channels} needs deploy=True: channel padding is a deploy-time step")
    if not isinstance(gelu_epilogue, bool):
        raise ValueError(f"gelu_epilogue={gelu_epilogue!r} must be true or false")
    if gelu_epilogue and not deploy:
        raise ValueError("gelu_epilogue=True needs deploy=True: the GELU epilogue is a deploy-time step")
    dev = resolve_device(device)
    if mode in ("cudagraph", "best") and dev.type != "cuda":
        what = "CUDA graphs" if mode == "cudagraph" else "torch.compile with CUDA graphs (reduce-overhead)"
        raise ValueError(f"mode={mode!r} needs a CUDA device ({what}); on the CPU use mode='eager' or 'compile'")
    if inductor_cache is not None and mode != "best":
        raise ValueError(f"inductor_cache is for mode='best', got mode={mode!r}")
    source, label, arch_id, res, in_chans = _resolve_spec(model_or_config, resolution)
    if not deploy and isinstance(source, nn.Module) and _is_deployed(source):
        raise ValueError(f"deploy=False but this {type(source).__name__} is already switched to deploy; "
                         "pass deploy=True or a fresh model")
    record = ThroughputRecord(model=label, arch_id=arch_id, mode=mode, dtype=dtype, batch_size=batch_size,
                              resolution=res, channels_last=channels_last, deploy=deploy, warmup=warmup,
                              repeats=repeats, pad_channels=pad_channels, gelu_epilogue=gelu_epilogue,
                              **_host_facts(dev))
    probe: Optional[NvmlProbe] = None
    if dev.type == "cuda":
        probe, record.nvml_error = open_probe(dev)
        if probe is not None:
            record.gpu_name, record.driver, record.max_sm_clock_mhz = probe.name, probe.driver, probe.max_sm_clock_mhz
    options = dict(compile_options or {})
    if mode == "best":
        options.update(BEST_COMPILE)
        record.inductor_cache = use_inductor_cache(inductor_cache)
    run = _Run(source=source, record=record, device=dev, in_chans=in_chans, seed=seed,
               iters_per_sample=iters_per_sample, latency_b1=latency_b1, compile_options=options,
               guard=timing_guard or contextlib.nullcontext, probe=probe, profile_kernels=profile_kernels)
    failed = True
    try:
        with _device_settings(dev):
            run.execute()
        failed = False
    except torch.cuda.OutOfMemoryError:
        record.error = f"out of memory at batch {run.batch}"
    except _NonFiniteOutput:
        record.error = "non-finite output"
    finally:
        run.release()
        if probe is not None:
            probe.close()
    del run, source
    if failed:
        _clear_timings(record)
        gc.collect()
        torch.cuda.empty_cache()  # no-op where CUDA was never initialised
    record.wall_s = round(time.perf_counter() - start, 3)
    return record


def build_official(name: str, *, device: Union[str, torch.device, None] = None, seed: int = 0,
                   **model_kwargs: Any) -> nn.Module:
    """An official ``fastervit`` model (the reference package, e.g. ``faster_vit_0_224``) on ``device``.

    ``model_kwargs`` go to the official factory (``hat=``, ``window_size=``, ``do_propagation=``...).
    Weights are randomly initialised under ``seed`` (throughput does not depend on their values).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the package imports deprecated timm paths
        try:
            import fastervit.models.faster_vit as official
        except ImportError:
            raise ValueError("the official FasterViT package is not installed (pip install fastervit==1.0.0)") from None
    factory = getattr(official, name, None)
    if not name.startswith("faster_vit_") or factory is None:
        names = sorted(n for n in dir(official) if n.startswith("faster_vit_"))
        raise ValueError(f"{name!r} is not an official FasterViT model; known: {', '.join(names)}")
    dev = resolve_device(device)
    with _seeded(dev, seed), torch.device(dev):
        return factory(**model_kwargs).eval()


def measure_official(name: str, *, model_kwargs: Optional[Mapping[str, Any]] = None,
                     device: Union[str, torch.device, None] = None, seed: int = 0, **options: Any) -> ThroughputRecord:
    """``measure_throughput`` of an official model built by ``build_official`` (same options).

    The input resolution defaults to the model's ``resolution`` keyword (224 when not given).
    """
    model_kwargs = dict(model_kwargs or {})
    options.setdefault("resolution", model_kwargs.get("resolution", _DEFAULT_RESOLUTION))
    model = build_official(name, device=device, seed=seed, **model_kwargs)
    record = measure_throughput(model, device=device, seed=seed, **options)
    record.model = f"official:{name}"
    return record


# ---------------------------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------------------------
class _Run:
    """State of one measurement, held in one place so that an OOM can drop every tensor of it."""

    def __init__(self, *, source: Union[nn.Module, FasterViTConfig], record: ThroughputRecord, device: torch.device,
                 in_chans: int, seed: int, iters_per_sample: Optional[int], latency_b1: bool,
                 compile_options: dict[str, Any],
                 guard: Callable[[], ContextManager[Any]], probe: Optional[NvmlProbe], profile_kernels: bool = False):
        self.source: Optional[Union[nn.Module, FasterViTConfig]] = source
        self.model: Optional[nn.Module] = None
        self.record = record
        self.device = device
        self.in_chans = in_chans
        self.seed = seed
        self.iters_per_sample = iters_per_sample
        self.latency_b1 = latency_b1
        self.compile_options = compile_options
        self.guard = guard
        self.probe = probe
        self.profile_kernels = profile_kernels
        self.batch = record.batch_size  # the batch being run (named in an OOM message)
        self.fn: Optional[Callable[..., Any]] = None
        self.graphs: list[tuple[torch.cuda.CUDAGraph, Any]] = []
        self.inputs: list[torch.Tensor] = []

    # -------------------------------------------------------------- orchestration
    def execute(self) -> None:
        rec, dev = self.record, self.device
        amp_dtype = DTYPES[rec.dtype] if rec.dtype != "fp32" else None
        fmt = torch.channels_last if rec.channels_last else torch.contiguous_format
        model: nn.Module
        if isinstance(self.source, FasterViTConfig):
            model = init_model(self.source, self.seed, device=dev, on_device=True)
        elif self.source is not None:
            model = self.source
        else:
            raise RuntimeError("this measurement was released")
        self.model = model
        model.to(dev).eval()
        x = self._input(rec.batch_size, fmt)
        if rec.deploy:
            _deploy(model, amp_dtype, x[:1], self._autocast(amp_dtype))
            if rec.pad_channels is not None:
                _pad(model, rec)
            if rec.gelu_epilogue:
                _fuse_gelu(model, rec)
        model.to(memory_format=fmt)
        with torch.inference_mode(), self._autocast(amp_dtype):
            self.fn = self.model
            if rec.mode in COMPILED_MODES:
                torch._dynamo.reset()  # a fresh cache: compiling many models in one process never hits its limits
                self.fn = torch.compile(self.model, **self.compile_options)
                rec.compile_s = 0.0
            times = self._measure(x, main=True)
            if self.latency_b1:
                self.batch = 1
                b1_times = self._measure(self._input(1, fmt), main=False)
                rec.latency_b1_ms = round(1e3 * statistics.median(b1_times), 4)
        per_sample = [rec.batch_size / t for t in times]
        rec.images_per_s = round(statistics.median(per_sample), 2)
        rec.images_per_s_min = round(min(per_sample), 2)
        rec.images_per_s_max = round(max(per_sample), 2)
        rec.cv = round(statistics.stdev(per_sample) / statistics.fmean(per_sample), 6) if len(per_sample) > 1 else 0.0
        rec.latency_ms = round(1e3 * statistics.median(times), 4)

    def _measure(self, x: torch.Tensor, *, main: bool) -> list[float]:
        """Seconds per forward of each timed sample at ``x``'s batch size."""
        rec, cuda = self.record, self.device.type == "cuda"
        if rec.mode in COMPILED_MODES:
            before = _fx_cache_counts()
            seconds, out = _timed_call(self._fn(), x, self.device)  # compiles (outside the guard)
            rec.compile_s = round((rec.compile_s or 0.0) + seconds, 3)
            after = _fx_cache_counts()
            rec.inductor_cache_hits = (rec.inductor_cache_hits or 0) + after[0] - before[0]
            rec.inductor_cache_misses = (rec.inductor_cache_misses or 0) + after[1] - before[1]
            _check_finite(out)
            del out
        with self.guard():
            if main and cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            step = self._prepare(x)
            iters = self.iters_per_sample or _calibrate(step, self.device)
            if main:
                rec.iters_per_sample = iters
            times, samples = self._time(step, iters, sample_nvml=main)
            if main and self.profile_kernels:
                try:
                    rec.kernel_us = kernel_times(step, iters, self.device)
                except NoKernelsSeen as e:  # the timing stands; the table is missing, and says why
                    rec.kernel_error = str(e)
            if main and cuda:
                rec.peak_mem_mb = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        if main and samples:
            for key, value in summarize_samples(samples).items():
                setattr(rec, key, value)
        return times

    def _prepare(self, x: torch.Tensor) -> Callable[[], Any]:
        """Warm up and return the step that runs one timed forward."""
        fn, warmup = self._fn(), self.record.warmup
        if self.record.mode != "cudagraph":
            out = None
            for _ in range(warmup):
                out = fn(x)
            _check_finite(out)
            return lambda: fn(x)
        # warm-up on a side stream (cuDNN autotuning, lazy inits), then capture once
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                out = fn(x)
            _check_finite(out)
            del out
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn(x)
        self.graphs.append((graph, static_out))  # the output lives in the graph's pool: keep it
        graph.replay()
        return graph.replay

    def _time(self, step: Callable[[], Any], iters: int, *, sample_nvml: bool) -> tuple[list[float], list[NvmlSample]]:
        samples: list[NvmlSample] = []
        if self.device.type != "cuda":
            times = []
            for _ in range(self.record.repeats):
                t0 = time.perf_counter()
                for _ in range(iters):
                    step()
                times.append((time.perf_counter() - t0) / iters)
            return times, samples
        n = self.record.repeats
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize(self.device)
        for i in range(n):
            starts[i].record()
            for _ in range(iters):
                step()
            ends[i].record()
            if i > 0 and sample_nvml and self.probe is not None:
                ends[i - 1].synchronize()  # sample i stays queued: the GPU is busy while NVML is read
                self._sample_nvml(samples)
        torch.cuda.synchronize(self.device)
        if sample_nvml:
            self._sample_nvml(samples)
        return [s.elapsed_time(e) / 1e3 / iters for s, e in zip(starts, ends)], samples

    def _sample_nvml(self, samples: list[NvmlSample]) -> None:
        if self.probe is None:
            return
        try:
            samples.append(self.probe.sample())
        except NvmlUnavailable as e:
            self.record.nvml_error = str(e)
            self.probe.close()
            self.probe = None

    # -------------------------------------------------------------- helpers
    def _input(self, batch: int, fmt: torch.memory_format) -> torch.Tensor:
        h, w = self.record.resolution
        gen = torch.Generator(self.device).manual_seed(self.seed)
        x = torch.randn(batch, self.in_chans, h, w, generator=gen, device=self.device).to(memory_format=fmt)
        self.inputs.append(x)
        return x

    def _autocast(self, amp_dtype: Optional[torch.dtype]) -> ContextManager[Any]:
        if amp_dtype is None:
            return contextlib.nullcontext()
        # no weight-cast cache: casts happen in every forward (as with one autocast per iteration),
        # and no cached tensor can be freed under a captured CUDA graph
        return torch.autocast(self.device.type, dtype=amp_dtype, cache_enabled=False)

    def _fn(self) -> Callable[..., Any]:
        """The forward being timed (set up before any timing)."""
        if self.fn is None:
            raise RuntimeError("the measurement's forward is not set up")
        return self.fn

    def release(self) -> None:
        self.fn = None
        self.graphs.clear()
        self.inputs.clear()
        self.model = None
        self.source = None


def kernel_times(step: Callable[[], Any], iters: int, device: torch.device) -> dict[str, float]:
    """Microseconds per call of ``step`` by GPU kernel name (on a CPU: ATen ops' self time), largest first.

    ``iters`` calls run under ``torch.profiler``. CUDA kernels are read from the device events, which
    CUPTI also reports for the nodes of a replayed CUDA graph. Raises ``NoKernelsSeen`` when none was
    seen (a profiler that cannot see the GPU must not pass for a model without kernels).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(iters):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    totals: dict[str, float] = {}
    if cuda:
        for evt in prof.events():
            if evt.device_type == DeviceType.CUDA:
                totals[evt.name] = totals.get(evt.name, 0.0) + evt.time_range.elapsed_us()
    else:
        totals = {avg.key: avg.self_cpu_time_total for avg in prof.key_averages() if avg.self_cpu_time_total > 0}
    if not totals:
        what = "GPU kernel" if cuda else "CPU op"
        raise NoKernelsSeen(f"torch.profiler saw no {what} in {iters} calls (is CUPTI available?)")
    return {name: round(us / iters, 3) for name, us in sorted(totals.items(), key=lambda kv: -kv[1])}


def _timed_call(fn: Callable[..., Any], x: torch.Tensor, device: torch.device) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def _fx_cache_counts() -> tuple[int, int]:
    """(hits, misses) of Inductor's FX-graph cache so far in this process (torch's dynamo counters)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return int(inductor.get("fxgraph_cache_hit", 0)), int(inductor.get("fxgraph_cache_miss", 0))


def _calibrate(step: Callable[[], Any], device: torch.device) -> int:
    """Iterations per sample so that one sample lasts about ``_SAMPLE_SECONDS``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = max(time.perf_counter() - t0, 1e-6)
    return max(1, min(_MAX_ITERS_PER_SAMPLE, math.ceil(_SAMPLE_SECONDS / seconds)))


def _check_finite(out: Any) -> None:
    tensors = _tensors(out)
    if any(not bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
        raise _NonFiniteOutput()


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _clear_timings(record: ThroughputRecord) -> None:
    for name in ("images_per_s", "images_per_s_min", "images_per_s_max", "cv", "latency_ms", "latency_b1_ms",
                 "iters_per_sample", "peak_mem_mb", "compile_s", "inductor_cache_hits", "inductor_cache_misses",
                 "kernel_us"):
        setattr(record, name, None)


# ---------------------------------------------------------------------------------------------
# model, device and option handling
# ---------------------------------------------------------------------------------------------
def _check_options(*, batch_size: int, dtype: str, mode: str, warmup: int, repeats: int,
                   iters_per_sample: Optional[int], compile_options: Optional[Mapping[str, Any]]) -> None:
    at_least("batch_size", batch_size)
    at_least("warmup", warmup)
    at_least("repeats", repeats)
    if iters_per_sample is not None:
        at_least("iters_per_sample", iters_per_sample)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be one of {', '.join(MODES)}")
    if compile_options and mode not in COMPILED_MODES:
        raise ValueError(f"compile_options are for mode='compile' or 'best', got mode={mode!r}")
    if mode == "best" and compile_options and set(compile_options) & set(BEST_COMPILE):
        fixed = sorted(set(compile_options) & set(BEST_COMPILE))
        raise ValueError(f"compile_options {fixed} are fixed by mode='best' ({BEST_COMPILE}); use mode='compile' "
                         "to choose them")


def use_inductor_cache(folder: Union[str, Path, None] = None) -> str:
    """Point Inductor's on-disk cache at ``folder`` (default: ``$TORCHINDUCTOR_CACHE_DIR`` if the user
    set it, else ``results/inductor-cache``), created if needed; returns the absolute folder.

    Inductor reads the variable when it compiles, so this holds for the rest of the process (and the
    compile workers it starts).
    """
    import os

    if folder is None:
        folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or DEFAULT_INDUCTOR_CACHE
    path = Path(folder).resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return str(path)


def _resolve_spec(spec: ModelSpec, resolution: Union[int, Sequence[int], None]
                  ) -> tuple[Union[nn.Module, FasterViTConfig], str, Optional[str], tuple[int, int], int]:
    """(module or config to build, label, arch_id, resolution, input channels) of what the caller passed."""
    if isinstance(spec, FasterViT):
        cfg = spec.config
        if resolution is not None and as_resolution(resolution) != cfg.resolution:
            raise ValueError(f"resolution={resolution!r} differs from this FasterViT's {cfg.resolution}: its "
                             "positional tables are built for one resolution; pass the config to measure another")
        return spec, cfg.summary(), cfg.arch_id, cfg.resolution, cfg.in_chans
    if isinstance(spec, nn.Module):
        res = as_resolution(resolution if resolution is not None else _DEFAULT_RESOLUTION)
        return spec, type(spec).__name__, None, res, 3
    cfg = resolve_config(spec)
    if resolution is not None:
        cfg = cfg.replace(resolution=as_resolution(resolution))
    label = str(spec) if isinstance(spec, (str, Path)) else cfg.summary()
    return cfg, label, cfg.arch_id, cfg.resolution, cfg.in_chans


def _is_deployed(model: nn.Module) -> bool:
    if isinstance(model, FasterViT):
        return model.deployed
    return any(getattr(m, "deploy", False) is True for m in model.modules() if hasattr(m, "switch_to_deploy"))


@torch.no_grad()
def _deploy(model: nn.Module, amp_dtype: Optional[torch.dtype], x: torch.Tensor, autocast: ContextManager[Any]) -> None:
    """Call the model's own deploy step (see ``measure_throughput``)."""
    if isinstance(model, FasterViT):
        model.switch_to_deploy(dtype=amp_dtype)
        return
    hooks: list[Any] = [m for m in model.modules() if hasattr(m, "switch_to_deploy")]
    if not hooks:
        raise ValueError(f"deploy=True but {type(model).__name__} has no switch_to_deploy hook; pass deploy=False")
    with autocast:
        model(x)  # the official code computes the biases it will keep during a forward pass
    for m in hooks:
        m.switch_to_deploy()


def _not_ours(model: nn.Module, step: str) -> list[dict[str, str]]:
    """The record's "kept" entry of a deploy ``step`` on a model other than this generator's FasterViT."""
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    return [dict(part="model", reason=f"{kind} is not this generator's FasterViT: {step} applies to those only")]


def _pad(model: nn.Module, record: ThroughputRecord) -> None:
    """Channel padding of the deployed model, written into ``record`` (kept as it is, with the reason, when
    it is not a FasterViT)."""
    assert record.pad_channels is not None
    if not isinstance(model, FasterViT):
        record.channels_padded, record.channels_kept = [], _not_ours(model, "channel padding")
        return
    done = pad_model_channels(model, record.pad_channels).to_dict()
    record.channels_padded, record.channels_kept = done["padded"], done["kept"]


def _fuse_gelu(model: nn.Module, record: ThroughputRecord) -> None:
    """GELU into the MLPs' fc1 GEMM epilogue, written into ``record`` (kept as it is, with the reason, when the
    model is not a FasterViT)."""
    if not isinstance(model, FasterViT):
        record.gelu_fused, record.gelu_kept = 0, _not_ours(model, "the GELU epilogue")
        return
    done = fuse_gelu_epilogue(model).to_dict()
    record.gelu_fused, record.gelu_kept = len(done["fused"]), done["kept"]


@contextlib.contextmanager
def _seeded(dev: torch.device, seed: int) -> Iterator[None]:
    """Seed weight init without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _device_settings(dev: torch.device) -> Iterator[None]:
    """Make ``dev`` current and let cuDNN pick its fastest kernels (restored afterwards)."""
    if dev.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.cuda.device(dev):
            yield
    finally:
        torch.backends.cudnn.benchmark = old


def _host_facts(dev: torch.device) -> dict[str, Any]:
    return dict(device=dev.type, gpu_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                cpu_name=cpu_name(), torch_version=torch.__version__, cuda_version=torch.version.cuda)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
