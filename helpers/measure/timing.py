"""Samples in milliseconds and their statistics; allocator peaks of one call (notebook 00 shows each step).

- ``Timing``: every timed sample kept; the median is the headline, p10/p90 the spread. The samples come from the
  protocol (``protocol.time_interleaved``), the only way the workbook times anything.
- Memory: allocator peak after ``reset_peak_memory_stats`` -> sync -> run -> sync, both allocated (tensors) and
  reserved (what the caching allocator holds). The CPU has no such counter: memory columns are NaN there, never
  a guess.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..machine.hardware import device as default_device


@dataclass
class Timing:
    """Every timed sample in milliseconds, with the statistics derived from them."""

    samples_ms: list[float]
    warmup: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile_ms(self, q: float) -> float:
        s = sorted(self.samples_ms)
        pos = q * (len(s) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def stdev_ms(self) -> float:
        return statistics.stdev(self.samples_ms) if len(self.samples_ms) > 1 else 0.0

    def summary(self, prefix: str = "latency") -> dict:
        """``{prefix}_ms`` (median), ``_p10_ms``, ``_p90_ms``, ``_std_ms`` and ``reps``."""
        return {
            f"{prefix}_ms": self.median_ms,
            f"{prefix}_p10_ms": self.quantile_ms(0.1),
            f"{prefix}_p90_ms": self.quantile_ms(0.9),
            f"{prefix}_std_ms": self.stdev_ms,
            "reps": len(self.samples_ms),
        }


@dataclass
class MemoryPeak:
    """Allocator peaks of one call, in GiB (NaN on the CPU, which has no such counter)."""

    peak_alloc_gib: float
    peak_reserved_gib: float
    before_alloc_gib: float

    @property
    def above_before_gib(self) -> float:
        """Peak minus what was already allocated: activations, caches and workspace of the call."""
        return self.peak_alloc_gib - self.before_alloc_gib

    def summary(self) -> dict:
        return {
            "peak_alloc_gib": self.peak_alloc_gib,
            "peak_reserved_gib": self.peak_reserved_gib,
            "above_weights_gib": self.above_before_gib,
        }


def peak_memory(
    fn: Callable[[], object],
    *,
    device: torch.device | str | None = None,
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> MemoryPeak:
    """Run ``fn`` once between a peak reset and a read of the allocator's peaks."""
    dev = torch.device(device) if device is not None else default_device()
    ctx = context or contextlib.nullcontext
    if dev.type != "cuda":
        with ctx():
            fn()
        nan = float("nan")
        return MemoryPeak(nan, nan, nan)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    with ctx():
        fn()
    torch.cuda.synchronize(dev)
    g = 2**30
    return MemoryPeak(
        torch.cuda.max_memory_allocated(dev) / g, torch.cuda.max_memory_reserved(dev) / g, before / g
    )
