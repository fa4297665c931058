"""The speed of light of this card: its datasheet ceilings and what a matmul and a copy reach here (notebook 07)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..machine.hardware import device, device_info
from ..machine.probes import probe_dtype
from .protocol import Protocol, time_one

# Vendor datasheet figures: dense (no sparsity) bf16 tensor-core throughput and memory bandwidth.
# For cards without bf16 (T4, V100) the fp16 tensor-core figure is given.
KNOWN_GPUS: dict[str, tuple[float, float]] = {
    # name fragment (lower case): (peak dense bf16 TFLOP/s, memory GB/s)
    "h200": (989.0, 4800.0),
    "h100 nvl": (835.0, 3900.0),
    "h100 pcie": (756.0, 2000.0),
    "h100": (989.0, 3350.0),  # SXM5 80GB HBM3
    "gh200": (989.0, 4000.0),
    "b200": (2250.0, 8000.0),
    "a100-sxm4-80gb": (312.0, 2039.0),
    "a100 80gb pcie": (312.0, 1935.0),
    "a100": (312.0, 1555.0),
    "l40s": (362.0, 864.0),
    "l4": (121.0, 300.0),
    "a10g": (125.0, 600.0),
    "a10": (125.0, 600.0),
    "rtx 4090": (165.0, 1008.0),
    "rtx 3090": (71.0, 936.0),
    "v100": (125.0, 900.0),
    "t4": (65.0, 320.0),
}


@dataclass
class SpeedOfLight:
    """The two ceilings of a card: arithmetic (TFLOP/s) and memory bandwidth (GB/s).

    ``source`` says where each figure came from ("datasheet: ..." or "measured: ...").
    Decode is bounded by bytes / bandwidth, prefill by FLOPs / throughput (notebook 07).
    """

    peak_tflops: float | None
    bandwidth_gbs: float | None
    source: str
    measured_tflops: float | None = None
    measured_gbs: float | None = None

    @property
    def tflops(self) -> float | None:
        """The best figure for comparisons: measured if available, else the datasheet's."""
        return self.measured_tflops or self.peak_tflops

    @property
    def gbs(self) -> float | None:
        return self.measured_gbs or self.bandwidth_gbs


def datasheet(name: str) -> tuple[float, float, str] | None:
    """Datasheet (TFLOP/s, GB/s, matched key) for a card name, or ``None`` if unknown."""
    low = name.lower()
    for key, (tf, bw) in KNOWN_GPUS.items():
        if key in low:
            return tf, bw, key
    return None


# quick: a ceiling needs its median, not more
PEAKS = Protocol(warmup=3, min_reps=6, max_reps=30, budget_s=5.0)


def measure_peaks(size: int | None = None, protocol: Protocol = PEAKS) -> tuple[float, float]:
    """Measure (TFLOP/s of a square matmul, GB/s of a device copy counting read + write) here, each timed by
    ``protocol`` (the median of its calls; no busy share: both are pure kernels).

    bf16 on a GPU (8192-wide by default), fp32 on the CPU (1024-wide): a quick, honest ceiling.
    """
    dev = device()
    gpu = dev.type == "cuda"
    n = size or (8192 if gpu else 1024)
    dtype = probe_dtype(dev)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = time_one(lambda: a @ b, protocol, device=dev, busy=None)
    tflops = 2 * n**3 / (t.median_ms / 1e3) / 1e12
    nbytes = 2**30 if gpu else 2**26
    src = torch.empty(nbytes // 4, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = time_one(lambda: dst.copy_(src), protocol, device=dev, busy=None)
    gbs = 2 * nbytes / (t.median_ms / 1e3) / 1e9
    return tflops, gbs


def speed_of_light(measure: bool = False) -> SpeedOfLight:
    """The card's ceilings from the datasheet table, and measured here if ``measure=True``."""
    info = device_info()
    sheet = datasheet(info.name) if info.kind == "cuda" else None
    sol = SpeedOfLight(
        sheet[0] if sheet else None,
        sheet[1] if sheet else None,
        f"datasheet ({sheet[2]})" if sheet else "no datasheet entry for this device",
    )
    if measure:
        sol.measured_tflops, sol.measured_gbs = measure_peaks()
        sol.source += "; measured here: matmul and device copy"
    return sol
