"""Model-level measurements: a forward pass, a generation (prefill and decode), a layout comparison.

Each returns one row (a dict, units in the column names) built from ``timing`` (latency, memory peaks) and
``workload`` (FLOPs, bytes, speed-of-light shares). How the numbers are taken: see ``timing``.
- Generation: ``min_new_tokens == max_new_tokens`` so every run makes the same number of tokens;
  prefill is a generate of one token (time to first token); decode is the rest.
- With ``protocol=`` (a ``protocol.Protocol``), the workbook's one measuring protocol instead: warm-up, repeats
  until the median's interval is within ±2% (or a time budget), CI columns, busy share and ``host_bound``; a
  generation is then timed per token inside one run (``steps.generate_timed``), and ``forwards`` times several
  attention paths interleaved.
- Speed of light: achieved TFLOP/s (prefill, forward) and GB/s (decode: weight + KV-cache bytes
  per token) against the card's ceilings from ``ceilings.speed_of_light``.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from .batches import make_batch, pack_batch, pad_batch
from .ceilings import SpeedOfLight
from .checks import relative_error
from .errors import WorkbookError
from .hardware import device_info
from .models import Loaded
from .protocol import Protocol, Variant, measure_interleaved
from .steps import generate_timed
from .timing import MemoryPeak, Timing, peak_memory, time_callable
from .workload import against_sol, decode_step_bytes, forward_flops, kv_cache_bytes, weight_bytes


def call_row(
    fn: Callable[[], object],
    *,
    real_tokens: int,
    device: torch.device | str | None = None,
    warmup: int = 2,
    reps: int = 10,
    context=None,
    protocol: Protocol | None = None,
) -> dict:
    """Latency statistics, memory peaks and real tokens per second of any callable (notebook 02's encoders);
    with ``protocol``, measured by it (its columns added)."""
    if protocol is not None:
        timing = measure_interleaved({"": Variant(fn, context)}, protocol, device=device)[""]
    else:
        timing = time_callable(fn, device=device, warmup=warmup, reps=reps, context=context)
    mem = peak_memory(fn, device=device, context=context)
    return {
        **timing.summary("latency"),
        "tokens_per_s": real_tokens / (timing.median_ms / 1e3),
        **mem.summary(),
        **(timing.flags() if protocol is not None else {}),
    }


def forward(
    loaded: Loaded,
    batch_size: int,
    seq_len: int,
    *,
    pad_fraction: float = 0.0,
    warmup: int = 2,
    reps: int = 10,
    sol: SpeedOfLight | None = None,
    beyond_positions: bool = False,
    protocol: Protocol | None = None,
) -> dict:
    """One forward pass (no KV cache) over a (batch_size, seq_len) batch: latency, memory, TFLOP/s.

    This is the workload of the 2023 guide's speed-up figures (notebook 01). ``beyond_positions``: allow a
    length past the model's trained positions (see ``batches.check_length``). ``protocol``: measure by it
    (``warmup``/``reps`` are then the protocol's) and add its columns.
    """
    if protocol is not None:
        kw = dict(protocol=protocol, pad_fraction=pad_fraction, sol=sol, beyond_positions=beyond_positions)
        return forwards(loaded, [loaded.request.attention], batch_size, seq_len, **kw)[0]
    fn = _forward_fn(loaded, batch_size, seq_len, pad_fraction, beyond_positions)
    dev = loaded.device
    timing = time_callable(fn, device=dev, warmup=warmup, reps=reps, context=loaded.context)
    return _forward_row(loaded, fn, timing, sol)


def _forward_fn(loaded, batch_size, seq_len, pad_fraction=0.0, beyond_positions=False):
    batch = make_batch(loaded, batch_size, seq_len, pad_fraction, beyond_positions=beyond_positions)

    def fn():
        with torch.inference_mode():
            return loaded.model(**batch, use_cache=False)

    fn.batch, fn.pad_fraction = batch, pad_fraction
    return fn


def _forward_row(loaded, fn, timing: Timing, sol, extra: dict | None = None) -> dict:
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
        **(extra or {}),
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
    ``latency_ci_low_ms``/``_high_ms``, ``n``, ``ci_reached``, ``stopped_by``, ``busy_share``, ``host_bound``."""
    fn = _forward_fn(loaded, batch_size, seq_len, pad_fraction, beyond_positions)
    switch = len(attentions) > 1
    variants = {
        a: Variant(fn, loaded.context, setup=(lambda a=a: loaded.switch_attention(a)) if switch else None)
        for a in attentions
    }
    before = loaded.request.attention
    try:
        samples = measure_interleaved(variants, protocol, device=loaded.device, busy=busy)
        rows = []
        for a in attentions:
            loaded.switch_attention(a)
            rows.append(_forward_row(loaded, fn, samples[a], sol, samples[a].flags()))
    finally:
        loaded.switch_attention(before)
    return rows


def generate(
    loaded: Loaded,
    batch_size: int,
    prompt_len: int,
    new_tokens: int,
    *,
    warmup: int = 1,
    reps: int = 3,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
    protocol: Protocol | None = None,
    **generate_kwargs,
) -> dict:
    """Greedy generation of exactly ``new_tokens`` tokens: prefill (time to first token) and decode.

    decode time = full generate - one-token generate; decode tok/s = batch * (new_tokens - 1) / that.
    Achieved GB/s: the bytes a decode step reads (``workload.decode_step_bytes``) and the KV cache, once a step.
    ``protocol``: timed per token inside each generation instead (``steps.generate_timed``; no subtraction).
    """
    if protocol is not None:
        return generate_timed(
            loaded,
            batch_size,
            prompt_len,
            new_tokens,
            protocol=protocol,
            pad_fraction=pad_fraction,
            sol=sol,
            **generate_kwargs,
        )
    if new_tokens < 2:
        raise WorkbookError(f"new_tokens={new_tokens}: no decode step to measure.", "Use new_tokens >= 2.")
    batch = make_batch(loaded, batch_size, prompt_len, pad_fraction)
    pad = loaded.model.config.pad_token_id
    common = dict(do_sample=False, pad_token_id=pad if pad is not None else 0, **generate_kwargs)

    def gen(n):
        def fn():
            with torch.inference_mode():
                return loaded.model.generate(**batch, max_new_tokens=n, min_new_tokens=n, **common)

        return fn

    dev = loaded.device
    out = gen(new_tokens)()
    made = out.shape[1] - (
        1 if loaded.model.config.is_encoder_decoder else prompt_len
    )  # seq2seq: start token first
    assert made == new_tokens, f"generate made {made} tokens, not {new_tokens}"
    prefill = time_callable(gen(1), device=dev, warmup=warmup, reps=reps, context=loaded.context)
    full = time_callable(gen(new_tokens), device=dev, warmup=warmup, reps=reps, context=loaded.context)
    mem = peak_memory(gen(new_tokens), device=dev, context=loaded.context)
    return decode_row(
        loaded, batch_size, prompt_len, new_tokens, prefill, full, mem, pad_fraction=pad_fraction, sol=sol
    )


def decode_row(
    loaded: Loaded,
    batch_size: int,
    prompt_len: int,
    new_tokens: int,
    prefill: Timing,
    full: Timing,
    mem: MemoryPeak,
    *,
    pad_fraction: float = 0.0,
    sol: SpeedOfLight | None = None,
) -> dict:
    """The row of a generation measured as a one-token run (``prefill``) and a ``new_tokens`` run (``full``).

    decode time = full - prefill over ``new_tokens - 1`` steps. When timing noise hides the decode (the full run
    no slower than its first token), the decode figures are not measured (NaN, with a note) rather than a
    meaningless division by almost nothing.
    """
    hidden = full.median_ms <= prefill.median_ms * 1.02
    decode_s = float("nan") if hidden else (full.median_ms - prefill.median_ms) / 1e3
    steps = new_tokens - 1
    avg_kv = kv_cache_bytes(loaded.model, batch_size, prompt_len + new_tokens // 2)
    bytes_per_step = decode_step_bytes(loaded.model, batch_size) + avg_kv
    row = {
        **loaded.describe(),
        "device": device_info().name,
        "batch_size": batch_size,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "pad_fraction": pad_fraction,
        **{k: v for k, v in prefill.summary("prefill").items() if k != "reps"},
        **full.summary("total"),
        "decode_ms_per_token": decode_s * 1e3 / steps,
        "decode_tok_s": batch_size * steps / decode_s,
        "decode_gbs": bytes_per_step * steps / decode_s / 1e9,
        "tflops": forward_flops(loaded.model, batch_size, prompt_len) / (prefill.median_ms / 1e3) / 1e12,
        **mem.summary(),
        "weights_gib": weight_bytes(loaded.model) / 2**30,
        "decode_note": "hidden by timing noise: generate more new tokens" if hidden else "",
    }
    return against_sol(row, sol)


def padding_vs_packing(
    loaded: Loaded, seqs: list[torch.Tensor], *, warmup: int = 1, reps: int = 5
) -> pd.DataFrame:
    """The same sequences three ways (notebook 01): a left-padded batch; packed into one row with
    position ids restarting at each sequence; and concatenated with no boundaries (the mistake that
    packing avoids: later sequences attend to earlier ones).

    One row per layout: positions computed, real tokens, latency, and how far each token's logits are
    from running its sequence alone (relative L2 error; bf16 rounding alone gives about 1e-2).
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
    rows = []
    for name, batch in layouts.items():
        batch = {k: v.to(dev) for k, v in batch.items()}

        def fn(batch=batch):
            with torch.inference_mode():
                return loaded.model(**batch, use_cache=False).logits

        timing = time_callable(fn, device=dev, warmup=warmup, reps=reps, context=loaded.context)
        with loaded.context():
            logits = fn().float()
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
                **timing.summary("latency"),
                "real_tokens_per_s": real / (timing.median_ms / 1e3),
                "rel_error_vs_alone": relative_error(got, alone),
            }
        )
    return pd.DataFrame(rows)
