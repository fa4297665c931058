"""Decode timed where it happens: a timestamp after every generated token's logits, inside one generation.

``Stamps`` is a logits processor (``generate`` calls it once per new token, right after that token's forward pass)
and the ``stamp`` of ``techniques.greedy_loop.GreedyLoop``: each call records a CUDA event on the GPU (read after a
sync, so the stamps cost no synchronisation) or a ``perf_counter`` reading on the CPU. From one run of ``n`` new tokens:

- ``prefill`` (time to first token): from the start of the call to the first token's logits;
- ``decode``: ``n - 1`` samples, the time from one token's logits to the next (one decode step each: choosing the
  token, the cache update, the forward pass), no subtraction of two runs' medians.

``generate`` measures a generation by ``protocol`` this way and returns one row (``timed_row``, the one builder of a
generation's row); ``techniques.decoding`` times its decode modes through ``decode_rows`` the same way.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from ..errors import WorkbookError
from ..machine.hardware import device_info
from ..models.loading import Loaded
from .batches import make_batch
from .ceilings import SpeedOfLight
from .protocol import Call, Protocol, time_interleaved
from .timing import MemoryPeak, peak_memory
from .workload import against_sol, decode_step_bytes, forward_flops, kv_cache_bytes, weight_bytes


class Stamps:
    """A timestamp per generated token: ``start()``, then one call per token (``stamps(input_ids, scores)`` as a
    logits processor, ``stamps()`` from a loop of your own); ``read()`` gives ``{"decode": [...], "prefill": [x]}``
    in ms."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list = []

    def _mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def start(self) -> Stamps:
        self.marks = []
        self._mark()
        return self

    def __call__(self, input_ids=None, scores=None):
        self._mark()
        return scores

    def read(self) -> dict[str, list[float]]:
        if len(self.marks) < 2:
            raise WorkbookError("No token was stamped.", "Pass the Stamps to generate as a logits processor.")
        if self.cuda:
            self.marks[-1].synchronize()
            t = [self.marks[0].elapsed_time(m) for m in self.marks]
        else:
            t = [(m - self.marks[0]) * 1e3 for m in self.marks]
        return {"decode": [b - a for a, b in zip(t[1:], t[2:])], "prefill": [t[1]]}


Run = Callable[[Stamps | None], object]


def timed(run: Run, device: torch.device | str) -> Callable[[], Callable[[], dict]]:
    """A self-timed callable for ``protocol`` (``Call(timed=True)``): each call runs ``run`` with fresh stamps
    and returns their reader."""

    def fn():
        stamps = Stamps(device).start()
        run(stamps)
        return stamps.read

    return fn


def generate_run(loaded: Loaded, batch: dict, new_tokens: int, **generate_kwargs) -> Run:
    """``run(stamps)``: greedy ``generate`` of exactly ``new_tokens`` tokens with ``stamps`` as a logits processor."""
    pad = loaded.model.config.pad_token_id
    common = dict(do_sample=False, pad_token_id=pad if pad is not None else 0, **generate_kwargs)

    def run(stamps: Stamps | None = None):
        extra = {"logits_processor": [stamps]} if stamps is not None else {}
        with torch.inference_mode():
            return loaded.model.generate(
                **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **common, **extra
            )

    return run


def decode_rows(
    loaded: Loaded,
    runs: dict[str, Run],
    batch_size: int,
    prompt_len: int,
    new_tokens: int,
    *,
    protocol: Protocol | None = None,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
    busy="auto",
    peaks: dict[str, MemoryPeak] | None = None,
) -> dict[str, dict]:
    """Measure several ways of generating the same tokens (``runs``: name -> ``run(stamps)``) interleaved by
    ``protocol``; one row each (see ``timed_row``). ``peaks``: a run's allocator peak already measured (by a
    call between a peak reset and a read, as ``timing.peak_memory`` does); the others get one more call for it."""
    if new_tokens < 2:
        raise WorkbookError(f"new_tokens={new_tokens}: no decode step to measure.", "Use new_tokens >= 2.")
    dev = loaded.device
    calls = {k: Call(timed(r, dev), context=loaded.context, timed=True) for k, r in runs.items()}
    samples = time_interleaved(calls, protocol, device=dev, busy=busy)
    rows = {}
    for k, run in runs.items():
        mem = (peaks or {}).get(k)
        if mem is None:
            mem = peak_memory(run, device=dev, context=loaded.context)
        rows[k] = timed_row(loaded, batch_size, prompt_len, new_tokens, samples[k], mem, pad_fraction, sol)
    return rows


def timed_row(loaded, batch_size, prompt_len, new_tokens, s, mem, pad_fraction=0.0, sol=None) -> dict:
    """One generation's row from per-token ``Samples`` ``s``: prefill (time to first token) and decode per step
    with their intervals; ``decode_tok_s`` (batch / median step) with the interval that the step's gives."""
    prefill, step_ms = s.of("prefill"), s.median_ms
    lo, hi = s.ci_ms
    avg_kv = kv_cache_bytes(loaded.model, batch_size, prompt_len + new_tokens // 2)
    bytes_per_step = decode_step_bytes(loaded.model, batch_size) + avg_kv
    row = {
        **loaded.describe(),
        "device": device_info().name,
        "batch_size": batch_size,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "pad_fraction": pad_fraction,
        "timing": "per-token",
        **prefill.summary("prefill", main=False),
        **s.summary("decode_step"),
        "runs": len(prefill.samples_ms),
        "total_ms": statistics.median(s.calls_ms),
        "decode_ms_per_token": step_ms,
        "decode_tok_s": batch_size * 1e3 / step_ms,
        "decode_tok_s_ci_low": batch_size * 1e3 / hi,
        "decode_tok_s_ci_high": batch_size * 1e3 / lo,
        "decode_gbs": bytes_per_step / (step_ms / 1e3) / 1e9,
        "tflops": forward_flops(loaded.model, batch_size, prompt_len) / (prefill.median_ms / 1e3) / 1e12,
        **s.flags(),
        **mem.summary(),
        "weights_gib": weight_bytes(loaded.model) / 2**30,
        "decode_note": "",
    }
    row["reps"] = row["runs"]  # generations (``n`` counts the decode steps)
    return against_sol(row, sol)


def generate(
    loaded: Loaded,
    batch_size: int,
    prompt_len: int,
    new_tokens: int,
    *,
    protocol: Protocol | None = None,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
    busy="auto",
    **generate_kwargs,
) -> dict:
    """Greedy ``generate`` of exactly ``new_tokens`` tokens (``min_new_tokens == max_new_tokens``), timed per token by
    ``protocol`` (``None``: the default ``Protocol()``): one row with
    ``prefill_ms`` (time to first token), ``decode_step_ms`` and ``decode_tok_s`` with their intervals, ``n`` (decode
    samples: ``runs * (new_tokens - 1)``), ``ci_reached``, ``busy_share`` and ``host_bound``. The first call, which
    checks the token count, is one of the protocol's warm-up rounds, and its allocator peak (after a reset) is the
    row's memory: a generation's tensors are the same in every call, so no extra call is spent on it. On a model's
    first call that peak also holds the libraries' one-time workspaces (cuBLAS's, some MiB). With
    ``generate_kwargs`` (a static cache, which transformers may compile on its first call) the peak is measured on
    a call of its own, after the timed ones."""
    if new_tokens < 2:
        raise WorkbookError(f"new_tokens={new_tokens}: no decode step to measure.", "Use new_tokens >= 2.")
    batch = make_batch(loaded, batch_size, prompt_len, pad_fraction)
    run = generate_run(loaded, batch, new_tokens, **generate_kwargs)
    checked = []
    mem = peak_memory(lambda: checked.append(run()), device=loaded.device, context=loaded.context)
    out = checked[0]
    made = out.shape[1] - (1 if loaded.model.config.is_encoder_decoder else prompt_len)
    assert made == new_tokens, f"generate made {made} tokens, not {new_tokens}"
    p = protocol or Protocol()  # the check above was a whole generation: it counts as the first warm-up round
    protocol = dataclasses.replace(p, warmup=max(p.warmup - 1, 0))
    rows = decode_rows(
        loaded,
        {"generate": run},
        batch_size,
        prompt_len,
        new_tokens,
        protocol=protocol,
        pad_fraction=pad_fraction,
        sol=sol,
        busy=busy,
        peaks=None if generate_kwargs else {"generate": mem},
    )
    return rows["generate"]
