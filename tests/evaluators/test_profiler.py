"""The throughput profiler on the CPU: record contents, option checks, OOM/NaN handling, NVML facts."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn as nn

from evaluators import nvml
from evaluators.profiler import (
    NoGPUError,
    ThroughputRecord,
    build_official,
    measure_official,
    measure_throughput,
    resolve_device,
)
from search_spaces import build_model

CPU: dict[str, Any] = dict(device="cpu", mode="eager", dtype="fp32", batch_size=2, warmup=1, repeats=3)
OFFICIAL_TINY = dict(resolution=64, dim=16, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                     window_size=[2, 2, 2, 2], ct_size=1)


class _OutOfMemory(nn.Module):
    """Stands in for a network that runs out of GPU memory at some batch sizes."""

    def __init__(self, failing_batches: set[int]):
        super().__init__()
        self.failing_batches = failing_batches
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] in self.failing_batches:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.conv(x).mean((2, 3))


def test_profile_kernels_lists_the_ops_of_one_forward(tiny_config):
    """profile_kernels=True: per-forward times by op (ATen self time on the CPU); off by default."""
    assert measure_throughput(tiny_config, **CPU).kernel_us is None
    rec = measure_throughput(tiny_config, **CPU, latency_b1=False, profile_kernels=True)
    assert rec.error is None and rec.kernel_us, rec.kernel_us
    assert any("conv" in name for name in rec.kernel_us)
    assert any("linear" in name or "mm" in name for name in rec.kernel_us)
    values = list(rec.kernel_us.values())
    assert all(v > 0 for v in values) and values == sorted(values, reverse=True)
    # one forward's op time is of the order of the timed forward (not the sum over all profiled calls)
    assert sum(values) < 20 * rec.latency_ms * 1e3
    json.dumps(rec.to_dict())


def test_kernel_times_refuses_a_profile_without_kernels():
    from evaluators.profiler import NoKernelsSeen, kernel_times

    with pytest.raises(NoKernelsSeen, match="saw no CPU op"):
        kernel_times(lambda: None, 2, torch.device("cpu"))


class _NaN(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * float("nan")


def test_cpu_record_fields(tiny_config):
    rec = measure_throughput(tiny_config, **CPU)
    assert isinstance(rec, ThroughputRecord)
    d = rec.to_dict()
    json.dumps(d)  # JSON-ready
    for key in ("device", "gpu_name", "driver", "torch_version", "mode", "dtype", "batch_size", "resolution",
                "channels_last", "deploy", "images_per_s", "images_per_s_min", "images_per_s_max", "cv", "latency_ms",
                "latency_b1_ms", "peak_mem_mb", "sm_clock_mhz", "max_sm_clock_mhz", "temperature_c", "power_w",
                "throttle_reasons", "warmup", "repeats", "compile_s", "inductor_cache", "wall_s", "error", "timestamp",
                "nvml_error", "gelu_epilogue", "gelu_fused", "gelu_kept"):
        assert key in d, key
    assert d["device"] == "cpu" and d["gpu_name"] == "cpu" and d["cpu_name"]
    assert d["error"] is None
    assert d["images_per_s"] > 0 and d["images_per_s_min"] <= d["images_per_s"] <= d["images_per_s_max"]
    assert d["cv"] >= 0 and d["latency_ms"] > 0 and d["latency_b1_ms"] > 0 and d["wall_s"] > 0
    assert d["resolution"] == [64, 64] and d["batch_size"] == 2 and d["repeats"] == 3
    assert d["arch_id"] == tiny_config.arch_id
    # no NVML on the CPU: the facts are absent and that is not an NVML failure
    assert d["sm_clock_mhz"] is None and d["driver"] is None and d["throttle_reasons"] == [] and d["nvml_error"] is None
    assert d["peak_mem_mb"] is None and d["compile_s"] is None


def test_resolution_and_flags_are_honoured(tiny_config):
    rec = measure_throughput(tiny_config, resolution=96, latency_b1=False, **CPU)
    assert rec.resolution == (96, 96) and rec.latency_b1_ms is None and rec.error is None

    model = build_model(tiny_config)
    rec = measure_throughput(model, channels_last=True, deploy=True, **CPU)
    assert rec.channels_last and rec.deploy and model.deployed
    assert model.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.stem.conv1.weight.is_contiguous()

    model = build_model(tiny_config)
    rec = measure_throughput(model, channels_last=False, deploy=False, **CPU)
    assert not rec.channels_last and not rec.deploy and not model.deployed
    assert model.stem.conv1.weight.is_contiguous()


def test_channels_last_keeps_attention_masks_fusable(tiny_config):
    from search_spaces.fastervit import RelPosBias

    model = build_model(tiny_config)
    measure_throughput(model, channels_last=True, deploy=True, latency_b1=False, **CPU)
    masks = [m() for m in model.modules() if isinstance(m, RelPosBias)]
    assert masks and all(mask.stride(-1) == 1 for mask in masks)


def test_fixed_iterations_per_sample(tiny_config):
    rec = measure_throughput(tiny_config, iters_per_sample=2, latency_b1=False, **CPU)
    assert rec.iters_per_sample == 2


@pytest.mark.parametrize("mode, what", [("cudagraph", "CUDA graphs"), ("best", "reduce-overhead")])
def test_gpu_only_mode_on_cpu_is_refused(tiny_config, mode, what):
    with pytest.raises(ValueError, match=f"mode='{mode}' needs a CUDA device.*{what}.*on the CPU use mode='eager' or "
                                         "'compile'"):
        measure_throughput(tiny_config, **{**CPU, "mode": mode})


def test_best_mode_options(tiny_config, tmp_path):
    with pytest.raises(ValueError, match=r"compile_options \['mode'\] are fixed by mode='best'"):
        measure_throughput(tiny_config, compile_options={"mode": "max-autotune"}, **{**CPU, "mode": "best"})
    with pytest.raises(ValueError, match="inductor_cache is for mode='best', got mode='eager'"):
        measure_throughput(tiny_config, inductor_cache=tmp_path, **CPU)
    assert measure_throughput(tiny_config, latency_b1=False, **CPU).to_dict()["inductor_cache"] is None


def test_inductor_cache_defaults_under_results_unless_the_user_chose(tmp_path, monkeypatch):
    from evaluators.profiler import use_inductor_cache

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert use_inductor_cache() == str(tmp_path / "results" / "inductor-cache")
    assert (tmp_path / "results" / "inductor-cache").is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "results" / "inductor-cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_inductor_cache() == str(tmp_path / "mine")
    assert use_inductor_cache(tmp_path / "other") == str(tmp_path / "other")


@pytest.mark.gpu
def test_best_mode_on_gpu_reuses_its_cache(tiny_config, tmp_path):
    """GPU: a second measure of the same shape loads Inductor's cache instead of compiling again."""
    opts = dict(device="cuda", mode="best", batch_size=8, repeats=3, latency_b1=False, inductor_cache=tmp_path)
    first = measure_throughput(tiny_config, **opts)
    again = measure_throughput(tiny_config, **opts)
    assert first.error is None and first.images_per_s > 0 and first.inductor_cache == str(tmp_path)
    assert first.compile_s > 0 and again.compile_s < first.compile_s
    assert again.inductor_cache_hits >= 1 and again.inductor_cache_misses == 0


@pytest.mark.parametrize("option, value, message", [
    ("mode", "jit", "mode='jit' must be one of"),
    ("dtype", "fp8", "dtype='fp8' must be one of"),
    ("batch_size", 0, "batch_size=0 must be an integer >= 1"),
    ("repeats", 0, "repeats=0"),
    ("warmup", 0, "warmup=0"),
    ("device", "tpu", "device='tpu' must be"),
])
def test_bad_options_are_named(tiny_config, option, value, message):
    with pytest.raises(ValueError, match=message):
        measure_throughput(tiny_config, **{**CPU, option: value})


def test_compile_options_need_compile_mode(tiny_config):
    with pytest.raises(ValueError, match="compile_options are for mode='compile'"):
        measure_throughput(tiny_config, compile_options={"backend": "eager"}, **CPU)


def test_compile_mode_reports_compile_time(tiny_config):
    # the "eager" backend exercises torch.compile's path (tracing, guards) in seconds on a CPU
    rec = measure_throughput(tiny_config, compile_options={"backend": "eager"}, latency_b1=False,
                             **{**CPU, "mode": "compile"})
    assert rec.error is None and rec.mode == "compile"
    assert rec.compile_s > 0 and rec.images_per_s > 0
    assert rec.inductor_cache_hits == 0 and rec.inductor_cache_misses == 0  # the eager backend runs no Inductor


def test_deploy_false_on_deployed_model_is_refused(tiny_config):
    model = build_model(tiny_config).switch_to_deploy()
    with pytest.raises(ValueError, match="already switched to deploy"):
        measure_throughput(model, deploy=False, **CPU)


def test_channel_padding_is_off_by_default_and_recorded_when_on(tiny_config):
    rec = measure_throughput(tiny_config, **CPU)
    assert rec.pad_channels is None and rec.channels_padded is None and rec.channels_kept is None
    model = build_model(tiny_config.replace(dim=12, num_heads=(1, 1, 2, 4)))  # widths 12, 24, 48, 96; head dims 24, 24
    rec = measure_throughput(model, pad_channels=8, **CPU)
    assert rec.error is None and rec.images_per_s > 0
    d = rec.to_dict()
    json.dumps(d)
    assert d["pad_channels"] == 8
    assert d["channels_padded"] == [{"part": "stages.0 width", "real": 12, "padded": 16}]
    assert {"part": "head output", "reason": "num_classes=10: the logits keep their shape"} in d["channels_kept"]
    assert model.channel_padding is not None and model.stages[0].blocks[0].conv1.weight.shape[0] == 16
    assert model.stem.conv2.weight.is_contiguous(memory_format=torch.channels_last)  # padded, then channels-last


def test_channel_padding_needs_deploy_and_names_what_it_cannot_pad(tiny_config):
    with pytest.raises(ValueError, match="pad_channels=8 needs deploy=True"):
        measure_throughput(tiny_config, deploy=False, pad_channels=8, **CPU)
    with pytest.raises(ValueError, match="pad_channels=0 must be an integer >= 1"):
        measure_throughput(tiny_config, pad_channels=0, **CPU)
    model = build_official("faster_vit_0_224", device="cpu", **OFFICIAL_TINY)
    rec = measure_throughput(model, resolution=64, pad_channels=8, **CPU)
    assert rec.error is None and rec.channels_padded == []
    assert rec.channels_kept == [{"part": "model", "reason": "fastervit.models.faster_vit.FasterViT is not this "
                                  "generator's FasterViT: channel padding applies to those only"}]


def test_gelu_epilogue_is_off_by_default_and_recorded_when_on(tiny_config):
    from search_spaces.gelu_epilogue import GeluEpilogueMlp

    rec = measure_throughput(tiny_config, **CPU)
    assert rec.gelu_epilogue is False and rec.gelu_fused is None and rec.gelu_kept is None
    model = build_model(tiny_config.replace(dim=12, num_heads=(1, 1, 2, 4)))
    rec = measure_throughput(model, gelu_epilogue=True, pad_channels=8, **CPU)  # padded, then fused
    assert rec.error is None and (rec.images_per_s or 0) > 0
    d = rec.to_dict()
    json.dumps(d)
    mlps = [n for n, m in model.named_modules() if isinstance(m, GeluEpilogueMlp)]
    assert d["gelu_epilogue"] is True and d["gelu_fused"] == len(mlps) == 5  # stage 3: 2 blocks x (mlp, ct_mlp)
    assert d["gelu_kept"] == [{"part": f"stages.{i} conv blocks", "reason": "GELU after a 3x3 convolution (cuDNN): "
                               "no GEMM epilogue carries it"} for i in (0, 1)]
    assert model.gelu_epilogue is not None and model.channel_padding is not None
    fc1: Any = model.get_submodule(mlps[0] + ".fc1")
    assert fc1.in_features == 48  # widths 12, 24, 48 (aligned): the padded layers
    assert d["channels_padded"] == [{"part": "stages.0 width", "real": 12, "padded": 16}]


def test_gelu_epilogue_compiles(tiny_config):
    rec = measure_throughput(tiny_config, gelu_epilogue=True, compile_options={"backend": "eager"}, latency_b1=False,
                             **{**CPU, "mode": "compile"})
    assert rec.error is None and rec.gelu_fused == 5 and (rec.images_per_s or 0) > 0


def test_gelu_epilogue_needs_deploy_and_names_what_it_cannot_fuse(tiny_config):
    with pytest.raises(ValueError, match="gelu_epilogue=True needs deploy=True"):
        measure_throughput(tiny_config, deploy=False, gelu_epilogue=True, **CPU)
    with pytest.raises(ValueError, match="gelu_epilogue=1 must be true or false"):
        measure_throughput(tiny_config, gelu_epilogue=1, **CPU)  # type: ignore[arg-type]
    model = build_official("faster_vit_0_224", device="cpu", **dict[str, Any](OFFICIAL_TINY))
    rec = measure_throughput(model, resolution=64, gelu_epilogue=True, **CPU)
    assert rec.error is None and rec.gelu_fused == 0
    assert rec.gelu_kept == [{"part": "model", "reason": "fastervit.models.faster_vit.FasterViT is not this "
                              "generator's FasterViT: the GELU epilogue applies to those only"}]


def test_resolution_of_built_fastervit_must_match(tiny_config):
    with pytest.raises(ValueError, match="differs from this FasterViT"):
        measure_throughput(build_model(tiny_config), resolution=96, **CPU)


def test_out_of_memory_is_reported_and_the_process_goes_on(tiny_config):
    rec = measure_throughput(_OutOfMemory({4}), deploy=False, resolution=32, **{**CPU, "batch_size": 4})
    assert rec.error == "out of memory at batch 4"
    assert rec.images_per_s is None and rec.latency_ms is None and rec.cv is None
    json.dumps(rec.to_dict())
    # the batch-1 latency pass is the one that fails: the record names that batch
    rec = measure_throughput(_OutOfMemory({1}), deploy=False, resolution=32, **CPU)
    assert rec.error == "out of memory at batch 1" and rec.images_per_s is None
    # the next measurement in the same process works
    rec = measure_throughput(tiny_config, **CPU)
    assert rec.error is None and rec.images_per_s > 0


def test_non_finite_output_is_reported():
    rec = measure_throughput(_NaN(), deploy=False, resolution=16, **CPU)
    assert rec.error == "non-finite output" and rec.images_per_s is None


def test_deploy_needs_a_hook():
    with pytest.raises(ValueError, match="no switch_to_deploy hook"):
        measure_throughput(nn.Conv2d(3, 4, 3), deploy=True, resolution=16, **CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the error raised on a machine without a CUDA GPU")
def test_cuda_without_gpu_raises_no_gpu_error(tiny_config):
    with pytest.raises(NoGPUError, match="no CUDA GPU was found.*--device cpu"):
        measure_throughput(tiny_config, device="cuda")
    with pytest.raises(NoGPUError):
        resolve_device("cuda:0")
    assert resolve_device(None).type == "cpu"


def test_official_model_is_deployed_through_its_own_hooks():
    model = build_official("faster_vit_0_224", device="cpu", **OFFICIAL_TINY)
    hooks = [m for m in model.modules() if hasattr(m, "switch_to_deploy")]
    assert hooks and not any(m.deploy for m in hooks)
    rec = measure_throughput(model, resolution=64, deploy=True, **CPU)
    assert rec.error is None and rec.images_per_s > 0
    assert all(m.deploy for m in hooks)
    # the biases kept for deploy are the ones computed in the priming forward (not the zero buffers)
    assert any(m.relative_bias.abs().sum() > 0 for m in hooks)
    rec = measure_official("faster_vit_0_224", model_kwargs=OFFICIAL_TINY, deploy=False, **CPU)
    assert rec.model == "official:faster_vit_0_224" and rec.resolution == (64, 64) and rec.error is None


def test_unknown_official_name():
    with pytest.raises(ValueError, match="not an official FasterViT model"):
        build_official("resnet50", device="cpu")


# ---------------------------------------------------------------------------------------------
# NVML
# ---------------------------------------------------------------------------------------------
def test_decode_clock_event_reasons_matches_pynvml():
    pynvml = pytest.importorskip("pynvml")
    names = {"GpuIdle": "gpu_idle", "SwPowerCap": "sw_power_cap", "HwSlowdown": "hw_slowdown",
             "SwThermalSlowdown": "sw_thermal_slowdown", "HwThermalSlowdown": "hw_thermal_slowdown",
             "HwPowerBrakeSlowdown": "hw_power_brake_slowdown", "SyncBoost": "sync_boost",
             "ApplicationsClocksSetting": "applications_clocks_setting"}
    for nv, ours in names.items():
        assert nvml.decode_clock_event_reasons(getattr(pynvml, f"nvmlClocksThrottleReason{nv}")) == [ours]
    assert nvml.decode_clock_event_reasons(0) == []
    assert nvml.decode_clock_event_reasons(0x4 | 0x40 | 0x10000) == ["sw_power_cap", "hw_thermal_slowdown",
                                                                      "unknown_0x10000"]


def test_summary_drops_idle_and_keeps_every_other_reason():
    s = [nvml.NvmlSample(1980, 60, 500.0, 0x1), nvml.NvmlSample(1755, 71, 690.0, 0x4),
         nvml.NvmlSample(1980, 65, 650.0, 0x0)]
    out = nvml.summarize_samples(s)
    assert out == dict(sm_clock_mhz=1980, temperature_c=71, power_w=650.0, throttle_reasons=["sw_power_cap"])
    assert nvml.summarize_samples([])["sm_clock_mhz"] is None


def _fake_pynvml(init_error: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        if init_error:
            raise NVMLError("Driver Not Loaded")

    m.NVMLError = NVMLError
    m.NVML_CLOCK_SM, m.NVML_TEMPERATURE_GPU = 1, 0
    m.calls = []
    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetHandleByPciBusId = lambda bus: m.calls.append(bus) or "handle"
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlSystemGetDriverVersion = lambda: "570.86.15"
    m.nvmlDeviceGetMaxClockInfo = lambda h, c: 1980
    m.nvmlDeviceGetClockInfo = lambda h, c: 1755
    m.nvmlDeviceGetTemperature = lambda h, t: 64
    m.nvmlDeviceGetPowerUsage = lambda h: 612345
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x4
    return m


def test_nvml_probe_reads_the_device_by_pci_bus_id(monkeypatch):
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x1B, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    probe, error = nvml.open_probe(torch.device("cuda", 0))
    assert error is None
    assert fake.calls == ["00000000:1B:00.0"]
    assert (probe.name, probe.driver, probe.max_sm_clock_mhz) == ("NVIDIA H100 80GB HBM3", "570.86.15", 1980)
    assert probe.sample() == nvml.NvmlSample(1755, 64, 612.345, 0x4)
    probe.close()
    assert fake.calls[-1] == "shutdown"


@pytest.mark.parametrize("broken", ["missing", "init"])
def test_nvml_unavailable_is_a_message_not_a_crash(monkeypatch, broken):
    monkeypatch.setitem(sys.modules, "pynvml", None if broken == "missing" else _fake_pynvml(init_error=True))
    probe, error = nvml.open_probe(torch.device("cuda", 0))
    assert probe is None
    assert ("not installed" in error) if broken == "missing" else ("Driver Not Loaded" in error)
