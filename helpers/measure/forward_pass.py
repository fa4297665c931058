"""A forward pass measured by the protocol: any callable (notebook 02's encoders), a model's forward pass over a
batch, several attention paths of one model interleaved, and padded against packed layouts (notebook 01).

Each returns rows (dicts, units in the column names): latency with its interval (``latency_ci_low_ms``/``_high_ms``,
``n``, ``ci_reached``, ``stopped_by``), the GPU's busy share and ``host_bound`` (see ``protocol``), memory peaks
(``timing.peak_memory``), and for a model's forward pass TFLOP/s against the card's ceilings (``workload``,
``ceilings``). A generation's rows: ``generation``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch

from ..machine.hardware import device_info, sync
from ..models import checkpoints
from ..models.loading import Loaded
from .agreement import relative_error
from .batches import make_batch, pack_batch, pad_batch
from .ceilings import SpeedOfLight
from .protocol import Call, Protocol, Samples, time_interleaved, time_one
from .timing import peak_memory
from .workload import against_sol, forward_flops, weight_bytes


def call_row(
    fn: Callable[[], object],
    *,
    real_tokens: int,
    protocol: Protocol | None = None,
    device: torch.device | str | None = None,
    context=None,
) -> dict:
    """Latency (by ``protocol``; ``None``: the default ``Protocol()``), memory peaks and real tokens per second of
    any callable (notebook 02's encoders), with the protocol's columns."""
    timing = time_one(Call(fn, context), protocol, device=device)
    mem = peak_memory(fn, device=device, context=context)
    return {
        **timing.summary("latency"),
        "tokens_per_s": real_tokens / (timing.median_ms / 1e3),
        **mem.summary(),
        **timing.flags(),
    }


def forward(
    loaded: Loaded,
    batch_size: int,
    seq_len: int,
    *,
    protocol: Protocol | None = None,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
    beyond_positions: bool = False,
) -> dict:
    """One forward pass (no KV cache) over a (batch_size, seq_len) batch, by ``protocol``: latency with its
    interval, memory, TFLOP/s.

    This is the workload of the 2023 guide's speed-up figures (notebook 01). ``beyond_positions``: allow a
    length past the model's trained positions (see ``batches.check_length``).
    """
    kw = dict(protocol=protocol, pad_fraction=pad_fraction, sol=sol, beyond_positions=beyond_positions)
    return forwards(loaded, [loaded.request.attention], batch_size, seq_len, **kw)[0]


COMPILED_ON_FIRST_USE = ("flex",)  # attention paths compiled at their first call (torch's flex_attention)


def _forward_fn(loaded, batch_size, seq_len, pad_fraction=0.0, beyond_positions=False):
    batch = make_batch(loaded, batch_size, seq_len, pad_fraction, beyond_positions=beyond_positions)

    def fn():
        with torch.inference_mode():
            return loaded.model(**batch, use_cache=False)

    fn.batch, fn.pad_fraction = batch, pad_fraction
    return fn


def _forward_row(loaded, fn, timing: Samples, sol) -> dict:
    batch = fn.batch
    batch_size, seq_len = batch["input_ids"].shape
    mem = peak_memory(fn, device=loaded.device, context=loaded.context)
    real_tokens = int(batch["attention_mask"].sum())
    flops = forward_flops(loaded.model, batch_size, seq_len)
    row = {
        **loaded.describe(),
        "device": device_info().name,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "pad_fraction": fn.pad_fraction,
        "tokens": real_tokens,
        **timing.summary("latency"),
        "tokens_per_s": real_tokens / (timing.median_ms / 1e3),
        "tflops": flops / (timing.median_ms / 1e3) / 1e12,
        **mem.summary(),
        "weights_gib": weight_bytes(loaded.model) / 2**30,
        **timing.flags(),
    }
    return against_sol(row, sol)


def forwards(
    loaded: Loaded,
    attentions: list[str],
    batch_size: int,
    seq_len: int,
    *,
    protocol: Protocol | None = None,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
    beyond_positions: bool = False,
    busy="auto",
) -> list[dict]:
    """``forward`` for several attention paths of one model, timed interleaved by ``protocol`` (the model switches
    path before each call, untimed, and back to its own after). Rows in the order of ``attentions``, each with
    ``latency_ci_low_ms``/``_high_ms``, ``n``, ``ci_reached``, ``stopped_by``, ``busy_share``, ``host_bound``.
    A path that compiles at its first call (``COMPILED_ON_FIRST_USE``) makes that call before the protocol's own
    warm-up; its row's ``compile_s`` is what it took beyond a timed pass, written to the cache's ledger of one-time
    costs, which a chapter's own time leaves out."""
    fn = _forward_fn(loaded, batch_size, seq_len, pad_fraction, beyond_positions)
    switch = len(attentions) > 1
    calls = {
        a: Call(fn, loaded.context, setup=(lambda a=a: loaded.switch_attention(a)) if switch else None)
        for a in attentions
    }
    before, firsts = loaded.request.attention, {}
    try:
        for a in attentions:
            if a in COMPILED_ON_FIRST_USE:
                checkpoints.keep_compiled_kernels()
                loaded.switch_attention(a)
                t0 = time.perf_counter()
                with loaded.context():
                    fn()
                sync(loaded.device)
                firsts[a] = time.perf_counter() - t0
        samples = time_interleaved(calls, protocol, device=loaded.device, busy=busy)
        rows = []
        for a in attentions:
            loaded.switch_attention(a)
            rows.append(_forward_row(loaded, fn, samples[a], sol))
            if a in firsts:
                what, warm_s = f"{loaded.request.model} {a} attention", rows[-1]["latency_ms"] / 1e3
                rows[-1]["compile_s"] = checkpoints.note_compiled(what, firsts[a], warm_s)
    finally:
        loaded.switch_attention(before)
    return rows


def padding_vs_packing(
    loaded: Loaded, seqs: list[torch.Tensor], *, protocol: Protocol | None = None
) -> pd.DataFrame:
    """The same sequences three ways (notebook 01): a left-padded batch; packed into one row with
    position ids restarting at each sequence; and concatenated with no boundaries (the mistake that
    packing avoids: later sequences attend to earlier ones). The three are timed interleaved by ``protocol``.

    One row per layout: positions computed, real tokens, latency with its interval, and how far each token's
    logits are from running its sequence alone (relative L2 error; bf16 rounding alone gives about 1e-2).
    """
    dev = loaded.device
    pad_id = loaded.model.config.pad_token_id or 0
    packed = pack_batch(seqs)
    layouts = {
        "padded": pad_batch(seqs, pad_id),
        "packed": packed,
        "concatenated, no boundaries": {
            "input_ids": packed["input_ids"],
            "position_ids": torch.arange(packed["input_ids"].shape[1])[None],
        },
    }
    with torch.inference_mode(), loaded.context():
        alone = torch.cat(
            [loaded.model(input_ids=s[None].to(dev), use_cache=False).logits[0].float() for s in seqs]
        )
    layouts = {name: {k: v.to(dev) for k, v in batch.items()} for name, batch in layouts.items()}

    def logits_of(batch):
        def fn():
            with torch.inference_mode():
                return loaded.model(**batch, use_cache=False).logits

        return fn

    calls = {name: Call(logits_of(batch), loaded.context) for name, batch in layouts.items()}
    timed = time_interleaved(calls, protocol, device=dev)
    rows = []
    for name, batch in layouts.items():
        with loaded.context():
            logits = calls[name].fn().float()
        if name == "padded":
            got = torch.cat([logits[i, logits.shape[1] - len(s) :] for i, s in enumerate(seqs)])
        else:
            got = logits[0]
        positions = batch["input_ids"].numel()
        real = sum(len(s) for s in seqs)
        rows.append(
            {
                **loaded.describe(),
                "layout": name,
                "positions": positions,
                "real_tokens": real,
                "padding_share": 1 - real / positions,
                **timed[name].summary("latency"),
                "real_tokens_per_s": real / (timed[name].median_ms / 1e3),
                "rel_error_vs_alone": relative_error(got, alone),
                **timed[name].flags(),
            }
        )
    return pd.DataFrame(rows)
