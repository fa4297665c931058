"""How busy the GPU was during a timed call: kernel time over wall time, and the host-bound flag (``protocol``).

A batch-1 decode step in eager PyTorch launches hundreds of small kernels; when Python and the launches take longer
than the kernels run, the GPU waits and the figure ranks the host (its CPU, its clocks, its Python), not the card.
Such a figure moves with the machine's load from run to run, so ``protocol`` flags it rather than compares it.

- ``busy_share``: the union of the intervals in which a kernel or a copy ran on the GPU, over the wall time of the
  call. The kernel time comes from one call profiled with ``torch.profiler`` (CUDA activity only: CUPTI's activity
  records, no CPU-side operator events) after the timed calls; the wall time is the smaller of that call's and the
  timed calls' median, because the profiler adds host time to each launch but does not change how long a kernel
  runs. Overlapping kernels (several streams) count once. On a CPU there is no such split: NaN.
- ``HOST_BOUND_BELOW = 0.8``: a call whose GPU was idle for more than a fifth of its wall time is host-bound. A
  saturated launch queue leaves about a microsecond between kernels; at the ~10 us kernels of a batch-1 7B decode
  step that is at most ~10% idle, so GPU-bound work reads 0.9 or more, while the batch-1 eager decode that ranked
  the host in the stored run read about 0.6.
- ``Meter``: any callable ``meter(fn) -> (kernel_ms, wall_ms)``; tests pass a fake device timer to show the flag
  on a deliberately slow host-side step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..machine.hardware import sync

HOST_BOUND_BELOW = 0.8

Meter = Callable[[Callable[[], object]], tuple[float, float]]


def union_ms(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (any unit in, the same unit out)."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def profiler_meter(dev: torch.device) -> Meter:
    """The CUDA meter: ``torch.profiler`` with CUDA activity over one synchronised call."""
    from torch.autograd import DeviceType  # profiler types: needed only on a GPU
    from torch.profiler import ProfilerActivity, profile  # profiler set-up is costly: only when measuring

    def meter(fn):
        sync(dev)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            fn()
            sync(dev)
            wall_ms = (time.perf_counter() - t0) * 1e3
        return union_ms(device_spans_us(prof, DeviceType.CUDA)) / 1e3, wall_ms

    return meter


def device_spans_us(prof, device_type) -> list[tuple[float, float]]:
    """``(start, end)`` in microseconds of every event of a finished ``torch.profiler`` run on ``device_type``,
    user annotations left out.

    Read from the profiler's raw records (kineto's events) rather than ``prof.events()``, which builds a Python
    event and a tree over all of them: on this workbook's 2-core CI machine 100k events took 4.6 s that way and
    0.2 s raw, and one 7B generation launches tens of thousands of kernels. ``prof.events()`` where a torch lacks
    the raw records."""
    try:
        results = prof.profiler.kineto_results
        # epoch nanoseconds lose sub-microsecond steps as floats: measured from the trace's start instead
        t0 = results.trace_start_ns()
        return [
            ((e.start_ns() - t0) / 1e3, (e.end_ns() - t0) / 1e3)
            for e in results.events()
            if e.device_type() == device_type and not e.is_user_annotation()
        ]
    except AttributeError:
        return [
            (e.time_range.start, e.time_range.end)
            for e in prof.events()
            if e.device_type == device_type and not getattr(e, "is_user_annotation", False)
        ]


def default_meter(dev: torch.device) -> Meter | None:
    """The profiler meter on a GPU; ``None`` (busy share NaN) on a CPU, where host and device are one."""
    return profiler_meter(dev) if dev.type == "cuda" else None


def busy_share(meter: Meter | None, fn: Callable[[], object], timed_wall_ms: float | None = None) -> float:
    """Kernel time over wall time of one call of ``fn`` (NaN without a meter), at most 1.

    ``timed_wall_ms``: the median wall time of the same call measured without the meter; the smaller of the two
    walls is used, so the meter's own host overhead does not make a GPU-bound call look host-bound."""
    if meter is None:
        return float("nan")
    kernel_ms, wall_ms = meter(fn)
    if timed_wall_ms is not None and timed_wall_ms > 0:
        wall_ms = min(wall_ms, timed_wall_ms)
    return min(kernel_ms / wall_ms, 1.0) if wall_ms > 0 else float("nan")


def host_bound(share: float) -> bool:
    """True when the GPU was idle for more than ``1 - HOST_BOUND_BELOW`` of the call; False when not measured."""
    return bool(share == share and share < HOST_BOUND_BELOW)  # NaN != NaN: not measured, not flagged
