"""Timing and memory peaks of any callable: the measuring core every chapter uses (notebook 00 shows each step).

- Latency: warm-up calls first (kernel selection, caches, lazy init stay out of the numbers), then ``reps``
  timed calls. On a GPU each call is timed with CUDA events; on the CPU with ``perf_counter``. Every sample is
  kept; the median is the headline, p10/p90 the spread.
- Memory: allocator peak after ``reset_peak_memory_stats`` -> sync -> run -> sync, both allocated (tensors) and
  reserved (what the caching allocator holds). The CPU has no such counter: memory columns are NaN there, never
  a guess.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import WorkbookError
from .hardware import device as default_device
from .hardware import sync


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


def time_callable(
    fn: Callable[[], object],
    *,
    device: torch.device | str | None = None,
    warmup: int = 2,
    reps: int = 10,
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Timing:
    """Time ``fn`` after ``warmup`` untimed calls: CUDA events on a GPU, ``perf_counter`` on the CPU.

    ``context`` is a factory of the context each call runs in (e.g. ``loaded.context``).
    """
    dev = torch.device(device) if device is not None else default_device()
    ctx = context or contextlib.nullcontext
    if reps < 1:
        raise WorkbookError(
            f"reps={reps}: nothing would be timed.", "Use reps >= 1 (10 or more for a stable median)."
        )
    with ctx():
        for _ in range(warmup):
            fn()
        sync(dev)
        if dev.type == "cuda":
            events = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(reps)
            ]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(dev)
            samples = [s.elapsed_time(e) for s, e in events]
        else:
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(samples, warmup)


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
