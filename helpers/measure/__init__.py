"""Measuring, one way: the protocol (warm-up, interleaved calls, stop at ±2% or a time budget, every figure with
its interval, the GPU's busy share) and the rows built on it.

- ``protocol``: the one measuring protocol (``time_interleaved``, ``time_one``); every row below comes from it.
- ``intervals``: confidence intervals of a median (order statistics) and of a ratio of medians (bootstrap).
- ``busy``: the GPU's busy share of a timed call (kernel time / wall time) and the host-bound flag.
- ``timing``: samples and their statistics; allocator peaks of one call.
- ``ceilings``: the card's speed of light, from its datasheet and measured here.
- ``workload``: FLOPs, bytes and parameter counts; the share of the speed of light reached.
- ``batches``: input batches (random ids, padded, packed), sizes checked at the door.
- ``forward_pass``: rows of a forward pass (any callable, a model, attention paths interleaved, padded against packed).
- ``generation``: rows of a generation, timed per token inside one run (prefill, decode per step).
- ``agreement``: one relative error; attention paths and kernels checked against each other.
- ``sweeps``: OOM-safe sweeps with progress; failures become rows.
"""

from . import (
    agreement,
    batches,
    busy,
    ceilings,
    forward_pass,
    generation,
    intervals,
    protocol,
    sweeps,
    timing,
    workload,
)
from .ceilings import SpeedOfLight, speed_of_light
from .forward_pass import call_row, forward, forwards, padding_vs_packing
from .generation import generate
from .intervals import ratio_of_medians
from .protocol import Call, Protocol, Samples, time_interleaved, time_one

__all__ = [
    "agreement",
    "batches",
    "busy",
    "ceilings",
    "forward_pass",
    "generation",
    "intervals",
    "protocol",
    "sweeps",
    "timing",
    "workload",
    "SpeedOfLight",
    "speed_of_light",
    "call_row",
    "forward",
    "forwards",
    "padding_vs_packing",
    "generate",
    "ratio_of_medians",
    "Call",
    "Protocol",
    "Samples",
    "time_interleaved",
    "time_one",
]
