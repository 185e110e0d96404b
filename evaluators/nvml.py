"""What NVML says about a CUDA device while it is being timed: clocks, temperature, power, throttling.

A throughput number means little without the state of the GPU that produced it: a card held at a
power cap or a thermal slowdown runs slower for reasons that have nothing to do with the network.
``NvmlProbe`` reads those facts through ``nvidia-ml-py`` (``import pynvml``); the profiler samples
it during the timed section and stores a summary beside every measurement.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch

__all__ = ["NvmlProbe", "NvmlSample", "NvmlUnavailable", "open_probe", "decode_clock_event_reasons",
           "summarize_samples", "CLOCK_EVENT_REASONS"]

#: Bits of the clock-event (formerly "throttle") reason mask, as defined in nvml.h
#: (``nvmlClocksEventReason*``; 0x200 and 0x400 exist only under the older ``ThrottleReason`` names).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)
_IDLE = 0x1
_KNOWN = sum(bit for bit, _ in CLOCK_EVENT_REASONS)


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used (library missing, no driver, device not found); the message says why."""


def decode_clock_event_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event reason mask (unknown bits as ``unknown_0x..``)."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    rest = mask & ~_KNOWN
    if rest:
        names.append(f"unknown_{rest:#x}")
    return names


@dataclass(frozen=True)
class NvmlSample:
    """One reading of the device: SM clock (MHz), temperature (°C), power draw (W), reason mask."""

    sm_clock_mhz: int
    temperature_c: int
    power_w: float
    reasons: int


class NvmlProbe:
    """NVML handle of one CUDA device, found by PCI bus id (so ``CUDA_VISIBLE_DEVICES`` is honoured).

    Open with ``NvmlProbe.open(device)`` (or ``open_probe``); ``close()`` releases NVML.
    """

    def __init__(self, nvml: Any, handle: Any):
        self._nvml = nvml
        self._handle = handle
        self.name: str = _text(nvml.nvmlDeviceGetName(handle))
        self.driver: str = _text(nvml.nvmlSystemGetDriverVersion())
        self.max_sm_clock_mhz: int = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))
        # nvidia-ml-py >= 12.535 names it ClocksEventReasons; older releases only ClocksThrottleReasons
        self._reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons

    @classmethod
    def open(cls, device: torch.device) -> "NvmlProbe":
        """The probe of CUDA ``device``; raises ``NvmlUnavailable`` with the reason when NVML cannot serve."""
        try:
            import pynvml
        except ImportError:
            raise NvmlUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise NvmlUnavailable(f"nvmlInit failed: {e}") from None
        props: Any = torch.cuda.get_device_properties(device)  # its PCI ids are not in torch's type stubs
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        try:
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(bus_id))
        except pynvml.NVMLError as e:
            pynvml.nvmlShutdown()
            raise NvmlUnavailable(f"NVML cannot read the device at PCI bus id {bus_id}: {e}") from None

    def sample(self) -> NvmlSample:
        """Read the device now; raises ``NvmlUnavailable`` if NVML fails mid-run."""
        nvml, h = self._nvml, self._handle
        try:
            return NvmlSample(
                sm_clock_mhz=int(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
                temperature_c=int(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
                power_w=nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                reasons=int(self._reasons(h)),
            )
        except nvml.NVMLError as e:
            raise NvmlUnavailable(f"NVML sampling failed: {e}") from None

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            self._nvml.nvmlShutdown()


def open_probe(device: torch.device) -> tuple[Optional[NvmlProbe], Optional[str]]:
    """``(probe, None)``, or ``(None, reason)`` when NVML is unavailable: never raises for NVML's sake."""
    try:
        return NvmlProbe.open(device), None
    except NvmlUnavailable as e:
        return None, str(e)


def summarize_samples(samples: Iterable[NvmlSample]) -> dict[str, Optional[Any]]:
    """Median SM clock, highest temperature, median power, and every non-idle reason seen."""
    samples = list(samples)
    if not samples:
        return dict(sm_clock_mhz=None, temperature_c=None, power_w=None, throttle_reasons=[])
    mask = 0
    for s in samples:
        mask |= s.reasons
    return dict(
        sm_clock_mhz=int(statistics.median(s.sm_clock_mhz for s in samples)),
        temperature_c=max(s.temperature_c for s in samples),
        power_w=round(statistics.median(s.power_w for s in samples), 1),
        throttle_reasons=decode_clock_event_reasons(mask & ~_IDLE),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
