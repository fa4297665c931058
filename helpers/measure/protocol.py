"""One measuring protocol for every figure: warm-up, interleaved variants, repeat until the median is known to
±2% or a time budget is spent, every sample kept, every figure with its interval. Every row builder takes it
as ``protocol=``; ``tools/reproduce.py`` measures every headline figure by it.

- Warm-up: ``warmup`` untimed calls of every variant before any is timed (kernel selection, caches, compilation and
  lazy initialisation stay out of the numbers). Every measurement starts with them, so a fresh load is warmed.
- Interleaving: the variants of one comparison are timed in rounds, one call of each per round, the order rotated
  every round. Drift (clocks, heat, a neighbour's load) then hits every variant alike instead of the last ones.
- Stopping rule: after ``min_reps`` rounds, stop as soon as every variant's confidence interval of the median lies
  within ``target_ci`` (±2%) of its median; else when ``budget_s`` of timed wall time is spent (never before
  ``min_reps`` rounds), when the point's share of a sweep's time is spent (``share``, see ``time_share``) or after
  ``max_reps`` rounds. ``stopped_by`` (``ci``, ``budget``, ``share``, ``max_reps``) and ``ci_reached`` say which.
- The interval is distribution-free (``median_ci``): latencies are skewed, with a long right tail, so no normal
  approximation. It needs at least 6 samples at 95%; with fewer it is the sample range and never "reached".
- Ratios (speed-up, memory saving): a median over a median, with a percentile-bootstrap interval
  (``intervals.ratio_of_medians``).
- Timers: CUDA events on a GPU, ``perf_counter`` on a CPU (``device_timer``); any ``timer(fn) -> reader`` can
  replace them. A variant may time itself (``Call(timed=True)``: ``fn`` returns ``{series: [ms, ...]}`` or a
  callable giving it after a sync), as ``generation`` does with a timestamp per generated token.
- Busy share and host-bound flag of every variant: see ``busy``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..errors import WorkbookError
from ..machine.hardware import device as default_device
from ..machine.hardware import sync
from . import busy as busy_mod
from .intervals import median_ci, min_samples
from .timing import Timing


@dataclass(frozen=True)
class Protocol:
    """How long to measure: at least ``min_reps`` and at most ``max_reps`` rounds, stopping once every median's
    ``confidence`` interval is within ``target_ci`` (relative half-width) or after ``budget_s`` seconds."""

    warmup: int = 2
    min_reps: int = 6
    max_reps: int = 100
    target_ci: float = 0.02
    budget_s: float = 30.0
    confidence: float = 0.95

    def __post_init__(self):
        if not (0 <= self.warmup and 1 <= self.min_reps <= self.max_reps):
            raise WorkbookError(
                f"Protocol(warmup={self.warmup}, min_reps={self.min_reps}, max_reps={self.max_reps}).",
                "Use warmup >= 0 and 1 <= min_reps <= max_reps (min_reps >= 6 for a 95% interval).",
            )
        if not (self.target_ci > 0 and self.budget_s > 0 and 0 < self.confidence < 1):
            raise WorkbookError(
                f"Protocol(target_ci={self.target_ci}, budget_s={self.budget_s}, confidence={self.confidence}).",
                "Use a positive target_ci (0.02 is ±2%) and budget_s, and a confidence between 0 and 1.",
            )

    def with_interval(self) -> Protocol:
        """This protocol with at least the rounds a ``confidence`` interval of the median needs (6 at 95%): for a
        comparison whose verdict is read from its interval, even where the profile measures quickly (a CPU)."""
        n = min_samples(self.confidence)
        return replace(self, min_reps=max(self.min_reps, n), max_reps=max(self.max_reps, n))


@dataclass
class Samples(Timing):
    """Every sample of one variant in ms (``samples_ms``: the series the stopping rule watched), its other series
    (``series``), the call each sample came from, why measuring stopped, and the GPU's busy share.

    Samples of one call (the steps of one generation) share its host state, so the median and its interval are
    taken over the calls' medians (each call is one sample for plain callables); p10/p90 over every sample."""

    calls: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    series_calls: dict[str, list[int]] = field(default_factory=dict)
    calls_ms: list[float] = field(default_factory=list)
    stopped_by: str = ""
    target_ci: float = 0.02
    confidence: float = 0.95
    busy_share: float = math.nan
    elapsed_s: float = math.nan

    def units(self) -> list[float]:
        """The independent values: one per call (the call's median when it gave several samples)."""
        if not self.calls or len(set(self.calls)) == len(self.calls):
            return list(self.samples_ms)
        by: dict[int, list[float]] = {}
        for c, v in zip(self.calls, self.samples_ms):
            by.setdefault(c, []).append(v)
        return [statistics.median(v) for v in by.values()]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.units())

    @property
    def ci_ms(self) -> tuple[float, float]:
        return median_ci(self.units(), self.confidence)

    @property
    def ci_halfwidth(self) -> float:
        """The interval's larger distance from the median, relative to it."""
        lo, hi = self.ci_ms
        m = self.median_ms
        return max(m - lo, hi - m) / m if m > 0 else math.inf

    @property
    def ci_reached(self) -> bool:
        return len(self.units()) >= min_samples(self.confidence) and self.ci_halfwidth <= self.target_ci

    @property
    def host_bound(self) -> bool:
        return busy_mod.host_bound(self.busy_share)

    def of(self, name: str) -> Samples:
        """Another series of a self-timed variant (``prefill`` of a generation) with the same statistics."""
        return Samples(
            self.series[name],
            self.warmup,
            calls=self.series_calls.get(name, []),
            stopped_by=self.stopped_by,
            target_ci=self.target_ci,
            confidence=self.confidence,
            busy_share=self.busy_share,
        )

    def summary(self, prefix: str = "latency", main: bool = True) -> dict:
        """``Timing.summary``'s columns plus ``{prefix}_ci_low_ms``/``_ci_high_ms``, ``{prefix}_samples_ms`` (the
        values the median is taken over, as JSON: what ``intervals.ratio_of_medians`` reads from a row); with
        ``main`` also ``n`` and ``ci_reached`` (else ``{prefix}_n``, ``{prefix}_ci_reached``)."""
        lo, hi = self.ci_ms
        tag = "" if main else f"{prefix}_"
        out = super().summary(prefix)
        out.update({f"{prefix}_ci_low_ms": lo, f"{prefix}_ci_high_ms": hi})
        out[f"{prefix}_samples_ms"] = json.dumps(
            [round(v, 4) for v in self.units()]
        )  # kept, for ``ratio_of_medians``
        out.update({f"{tag}n": len(self.samples_ms), f"{tag}ci_reached": self.ci_reached})
        if not main:
            out.pop("reps")
        return out

    def flags(self) -> dict:
        """The row's protocol columns: why it stopped, the GPU busy share, the host-bound flag."""
        return {"stopped_by": self.stopped_by, "busy_share": self.busy_share, "host_bound": self.host_bound}


@dataclass
class Call:
    """One thing to time: ``fn``; ``context``: a factory of the context each call runs in (``loaded.context``);
    ``setup``: run untimed before each call (e.g. ``loaded.switch_attention("eager")``); ``timed``: ``fn`` times
    itself (see the module's docstring)."""

    fn: Callable[[], object]
    context: Callable[[], contextlib.AbstractContextManager] | None = None
    setup: Callable[[], object] | None = None
    timed: bool = False


Timer = Callable[[Callable[[], object]], Callable[[], float]]

STOPS = ("ci", "budget", "share", "max_reps")  # every value ``stopped_by`` takes
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def time_share(seconds: float | None):
    """Inside, every measurement stops its timed rounds once ``seconds`` (from now) are spent, never before
    ``min_reps`` rounds, and says ``stopped_by="share"``: how a sweep gives each point its share of a chapter's
    time budget (``sweeps.run(budget_s=...)``). ``None``: no share, the protocol's own budget only."""
    token = _DEADLINE.set(None if seconds is None else time.perf_counter() + max(0.0, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def device_timer(dev: torch.device) -> Timer:
    """``timer(fn)`` runs ``fn`` and returns a reader of its time in ms, valid after the round's sync."""
    if dev.type == "cuda":

        def cuda_timer(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            return lambda: start.elapsed_time(end)

        return cuda_timer

    def cpu_timer(fn):
        t0 = time.perf_counter()
        fn()
        ms = (time.perf_counter() - t0) * 1e3
        return lambda: ms

    return cpu_timer


def time_interleaved(
    variants: dict[str, Callable[[], object] | Call],
    protocol: Protocol | None = None,
    *,
    device: torch.device | str | None = None,
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
    timer: Timer | None = None,
    busy: busy_mod.Meter | None | str = "auto",
) -> dict[str, Samples]:
    """Time ``variants`` by ``protocol``: warm each, then rounds of one call each (order rotated every round) until
    the stopping rule holds. ``context``: for plain callables. ``busy``: a ``busy.Meter``, ``None`` (not
    measured), or ``"auto"`` (the profiler on a GPU, nothing on a CPU); it runs one extra call per variant."""
    p = protocol or Protocol()
    if not variants:
        raise WorkbookError("No variants to measure.", "Pass a dict of name -> callable.")
    dev = torch.device(device) if device is not None else default_device()
    vs = {k: v if isinstance(v, Call) else Call(v, context) for k, v in variants.items()}
    timer = timer or device_timer(dev)
    meter = busy_mod.default_meter(dev) if busy == "auto" else busy

    def call(v: Call, timed: bool):
        if v.setup is not None:
            v.setup()
        with (v.context or contextlib.nullcontext)():
            if not timed:
                return v.fn()
            return v.fn() if v.timed else timer(v.fn)

    for v in vs.values():
        for _ in range(p.warmup):
            call(v, timed=False)
    sync(dev)
    out = {k: Samples([], p.warmup, target_ci=p.target_ci, confidence=p.confidence) for k in vs}
    names, t0, rounds, deadline = list(vs), time.perf_counter(), 0, _DEADLINE.get()
    while True:
        order = names[rounds % len(names) :] + names[: rounds % len(names)]
        pending = [(k, call(vs[k], timed=True)) for k in order]
        sync(dev)
        for k, reader in pending:
            _collect(out[k], reader() if callable(reader) else reader, rounds)
        rounds += 1
        elapsed = time.perf_counter() - t0
        if rounds >= p.min_reps and all(s.ci_reached for s in out.values()):
            stop = "ci"
        elif deadline is not None and time.perf_counter() >= deadline and rounds >= p.min_reps:
            stop = "share"  # before the protocol's own budget: a sweep's share is what a reader is told about
        elif elapsed >= p.budget_s and rounds >= p.min_reps:
            stop = "budget"
        elif rounds >= p.max_reps:
            stop = "max_reps"
        else:
            continue
        break
    for k, s in out.items():
        s.stopped_by, s.elapsed_s = stop, elapsed
        if meter is not None:
            s.busy_share = busy_mod.busy_share(
                meter, lambda v=vs[k]: call(v, timed=False), statistics.median(s.calls_ms)
            )
    return out


def _collect(s: Samples, value, call: int) -> None:
    """Add one call's time (a number) or series (``{name: [ms, ...]}``, the first one watched) to ``s``."""
    series = {"": [value]} if isinstance(value, (int, float)) else value
    for i, (name, ms) in enumerate(series.items()):
        ms = [float(x) for x in ms]
        if i == 0:
            s.samples_ms += ms
            s.calls += [call] * len(ms)
        s.series.setdefault(name, []).extend(ms)
        s.series_calls.setdefault(name, []).extend([call] * len(ms))
    s.calls_ms.append(sum(sum(ms) for ms in series.values()))


def time_one(fn: Callable[[], object] | Call, protocol: Protocol | None = None, **kwargs) -> Samples:
    """One variant by ``protocol`` (``time_interleaved`` with one entry; same keywords)."""
    return time_interleaved({"": fn}, protocol, **kwargs)[""]
