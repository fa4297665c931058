"""Measuring: timers, memory peaks, forward and generation metrics, OOM-safe sweeps.

How the numbers are taken (notebook 00 shows each step):
- Latency: warm-up calls first (kernel selection, caches, lazy init stay out of the numbers), then
  ``reps`` timed calls. On a GPU each call is timed with CUDA events; on the CPU with
  ``perf_counter``. Every sample is kept; the median is the headline, p10/p90 the spread.
- Memory: allocator peak after ``reset_peak_memory_stats`` -> sync -> run -> sync, both allocated
  (tensors) and reserved (what the caching allocator holds). ``above_weights`` is the peak minus
  what was allocated before the call (weights and cache): the activations and workspace.
  The CPU has no such counter: memory columns are NaN there, never a guess.
- Generation: ``min_new_tokens == max_new_tokens`` so every run makes the same number of tokens;
  prefill is a generate of one token (time to first token); decode is the rest.
- Speed of light: achieved TFLOP/s (prefill, forward) and GB/s (decode: weight + KV-cache bytes
  per token) against the card's ceilings from ``environment.speed_of_light``.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd
import torch

from . import environment, models
from .errors import WorkbookError


# --------------------------------------------------------------------------- timing

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
        return {f"{prefix}_ms": self.median_ms, f"{prefix}_p10_ms": self.quantile_ms(0.1),
                f"{prefix}_p90_ms": self.quantile_ms(0.9), f"{prefix}_std_ms": self.stdev_ms,
                "reps": len(self.samples_ms)}


def time_callable(fn: Callable[[], object], *, device: torch.device | str | None = None, warmup: int = 2,
                  reps: int = 10, context: Callable[[], contextlib.AbstractContextManager] | None = None) -> Timing:
    """Time ``fn`` after ``warmup`` untimed calls: CUDA events on a GPU, ``perf_counter`` on the CPU.

    ``context`` is a factory of the context each call runs in (e.g. ``loaded.context``).
    """
    dev = torch.device(device) if device is not None else environment.device()
    ctx = context or contextlib.nullcontext
    if reps < 1:
        raise WorkbookError(f"reps={reps}: nothing would be timed.", "Use reps >= 1 (10 or more for a stable median).")
    with ctx():
        for _ in range(warmup):
            fn()
        environment.sync(dev)
        if dev.type == "cuda":
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
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


# --------------------------------------------------------------------------- memory

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
        return {"peak_alloc_gib": self.peak_alloc_gib, "peak_reserved_gib": self.peak_reserved_gib,
                "above_weights_gib": self.above_before_gib}


def peak_memory(fn: Callable[[], object], *, device: torch.device | str | None = None,
                context: Callable[[], contextlib.AbstractContextManager] | None = None) -> MemoryPeak:
    """Run ``fn`` once between a peak reset and a read of the allocator's peaks."""
    dev = torch.device(device) if device is not None else environment.device()
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
    return MemoryPeak(torch.cuda.max_memory_allocated(dev) / g, torch.cuda.max_memory_reserved(dev) / g, before / g)


# --------------------------------------------------------------------------- workload arithmetic

def _dims(cfg) -> tuple[int, int, int, int]:
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "d_kv", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or (1 if getattr(cfg, "multi_query", False) else heads)
    return layers, heads, head_dim, kv_heads


def count_params(model, embeddings: bool = False) -> int:
    """Parameter count (4-bit packed weights counted as the numbers they hold); embeddings excluded by default."""
    n = 0
    emb = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    for p in model.parameters():
        if not embeddings and id(p) in emb:
            continue
        qs = getattr(p, "quant_state", None)
        n += int(torch.Size(qs.shape).numel()) if qs is not None else p.numel()
    return n


def forward_flops(model, batch_size: int, seq_len: int, causal: bool = True) -> float:
    """FLOPs of one forward pass: 2 per weight per token, plus attention's two matmuls.

    Attention adds 4 * batch * seq^2 * heads * head_dim per layer, halved for causal masks (the
    convention of the FlashAttention papers), so achieved TFLOP/s compare across kernels.
    """
    layers, heads, head_dim, _ = _dims(model.config)
    linear = 2 * count_params(model) * batch_size * seq_len
    attn = 4 * batch_size * seq_len**2 * heads * head_dim * layers * (0.5 if causal else 1.0)
    return float(linear + attn)


def weight_bytes(model) -> int:
    """Bytes of parameters and buffers as stored (quantized weights at their packed size)."""
    return int(model.get_memory_footprint())


def decode_step_bytes(model) -> int:
    """Weight bytes one decode step reads: all of a decoder-only model; for an encoder-decoder, the
    decoder and output head only (the encoder ran once, at prefill)."""
    if not getattr(model.config, "is_encoder_decoder", False):
        return weight_bytes(model)
    enc = model.get_encoder()
    shared = {id(p) for p in model.get_decoder().parameters()} | {id(p) for p in model.get_output_embeddings().parameters()}
    enc_bytes = sum(p.numel() * p.element_size() for p in enc.parameters() if id(p) not in shared)
    return weight_bytes(model) - enc_bytes


def kv_cache_bytes(model, batch_size: int, seq_len: int) -> int:
    """Bytes of the key/value cache for ``seq_len`` positions (2 tensors per layer)."""
    layers, _, head_dim, kv_heads = _dims(model.config)
    elem = 2 if next(model.parameters()).dtype in (torch.float16, torch.bfloat16) or getattr(model, "is_quantized", False) else 4
    return 2 * layers * batch_size * seq_len * kv_heads * head_dim * elem


def against_sol(row: dict, sol: environment.SpeedOfLight | None) -> dict:
    """Add ``sol_fraction_*`` columns: achieved / ceiling, for the columns a row has."""
    if sol is None:
        return row
    if "tflops" in row and sol.tflops:
        row["sol_tflops"] = sol.tflops
        row["sol_fraction_compute"] = row["tflops"] / sol.tflops
    if "decode_gbs" in row and sol.gbs:
        row["sol_gbs"] = sol.gbs
        row["sol_fraction_bandwidth"] = row["decode_gbs"] / sol.gbs
    return row


# --------------------------------------------------------------------------- model-level measurements

def call_row(fn: Callable[[], object], *, real_tokens: int, device: torch.device | str | None = None,
             warmup: int = 2, reps: int = 10, context=None) -> dict:
    """Latency statistics, memory peaks and real tokens per second of any callable (notebook 02's encoders)."""
    timing = time_callable(fn, device=device, warmup=warmup, reps=reps, context=context)
    mem = peak_memory(fn, device=device, context=context)
    return {**timing.summary("latency"), "tokens_per_s": real_tokens / (timing.median_ms / 1e3), **mem.summary()}


def forward(loaded: models.Loaded, batch_size: int, seq_len: int, *, pad_fraction: float = 0.0,
            warmup: int = 2, reps: int = 10, sol: environment.SpeedOfLight | None = None) -> dict:
    """One forward pass (no KV cache) over a (batch_size, seq_len) batch: latency, memory, TFLOP/s.

    This is the workload of the 2023 guide's speed-up figures (notebook 01).
    """
    batch = models.make_batch(loaded, batch_size, seq_len, pad_fraction)

    def fn():
        with torch.inference_mode():
            return loaded.model(**batch, use_cache=False)

    dev = loaded.device
    timing = time_callable(fn, device=dev, warmup=warmup, reps=reps, context=loaded.context)
    mem = peak_memory(fn, device=dev, context=loaded.context)
    real_tokens = int(batch["attention_mask"].sum())
    flops = forward_flops(loaded.model, batch_size, seq_len)
    row = {**loaded.describe(), "device": environment.device_info().name, "batch_size": batch_size,
           "seq_len": seq_len, "pad_fraction": pad_fraction, "tokens": real_tokens,
           **timing.summary("latency"), "tokens_per_s": real_tokens / (timing.median_ms / 1e3),
           "tflops": flops / (timing.median_ms / 1e3) / 1e12, **mem.summary(),
           "weights_gib": weight_bytes(loaded.model) / 2**30}
    return against_sol(row, sol)


def generate(loaded: models.Loaded, batch_size: int, prompt_len: int, new_tokens: int, *,
             warmup: int = 1, reps: int = 3, pad_fraction: float = 0.0,
             sol: environment.SpeedOfLight | None = None, **generate_kwargs) -> dict:
    """Greedy generation of exactly ``new_tokens`` tokens: prefill (time to first token) and decode.

    decode time = full generate - one-token generate; decode tok/s = batch * (new_tokens - 1) / that.
    Achieved GB/s assumes each decode step reads every weight byte and the KV cache once.
    """
    if new_tokens < 2:
        raise WorkbookError(f"new_tokens={new_tokens}: no decode step to measure.", "Use new_tokens >= 2.")
    batch = models.make_batch(loaded, batch_size, prompt_len, pad_fraction)
    pad = loaded.model.config.pad_token_id
    common = dict(do_sample=False, pad_token_id=pad if pad is not None else 0, **generate_kwargs)

    def gen(n):
        def fn():
            with torch.inference_mode():
                return loaded.model.generate(**batch, max_new_tokens=n, min_new_tokens=n, **common)
        return fn

    dev = loaded.device
    out = gen(new_tokens)()
    made = out.shape[1] - (1 if loaded.model.config.is_encoder_decoder else prompt_len)  # seq2seq: start token first
    assert made == new_tokens, f"generate made {made} tokens, not {new_tokens}"
    prefill = time_callable(gen(1), device=dev, warmup=warmup, reps=reps, context=loaded.context)
    full = time_callable(gen(new_tokens), device=dev, warmup=warmup, reps=reps, context=loaded.context)
    mem = peak_memory(gen(new_tokens), device=dev, context=loaded.context)
    return decode_row(loaded, batch_size, prompt_len, new_tokens, prefill, full, mem, pad_fraction=pad_fraction, sol=sol)


def decode_row(loaded: models.Loaded, batch_size: int, prompt_len: int, new_tokens: int, prefill: Timing,
               full: Timing, mem: MemoryPeak, *, pad_fraction: float = 0.0,
               sol: environment.SpeedOfLight | None = None) -> dict:
    """The row of a generation measured as a one-token run (``prefill``) and a ``new_tokens`` run (``full``).

    decode time = full - prefill over ``new_tokens - 1`` steps. When timing noise hides the decode (the full run
    no slower than its first token), the decode figures are not measured (NaN, with a note) rather than a
    meaningless division by almost nothing.
    """
    hidden = full.median_ms <= prefill.median_ms * 1.02
    decode_s = float("nan") if hidden else (full.median_ms - prefill.median_ms) / 1e3
    steps = new_tokens - 1
    avg_kv = kv_cache_bytes(loaded.model, batch_size, prompt_len + new_tokens // 2)
    bytes_per_step = decode_step_bytes(loaded.model) + avg_kv
    row = {**loaded.describe(), "device": environment.device_info().name, "batch_size": batch_size,
           "prompt_len": prompt_len, "new_tokens": new_tokens, "pad_fraction": pad_fraction,
           **{k: v for k, v in prefill.summary("prefill").items() if k != "reps"},
           **full.summary("total"), "decode_ms_per_token": decode_s * 1e3 / steps,
           "decode_tok_s": batch_size * steps / decode_s, "decode_gbs": bytes_per_step * steps / decode_s / 1e9,
           "tflops": forward_flops(loaded.model, batch_size, prompt_len) / (prefill.median_ms / 1e3) / 1e12,
           **mem.summary(), "weights_gib": weight_bytes(loaded.model) / 2**30,
           "decode_note": "hidden by timing noise: generate more new tokens" if hidden else ""}
    return against_sol(row, sol)


def kernel_agreement(attention: str, dtype: torch.dtype, *, batch_size: int = 1, heads: int = 32,
                     seq_len: int = 1024, head_dim: int = 128, seed: int = 0) -> dict:
    """One causal attention call in ``dtype`` against a float64 reference on the same inputs.

    ``attention`` is ``eager`` (matmul, softmax, matmul in ``dtype``) or an ``sdpa-*`` name.
    Returns the relative L2 error; bf16 carries 8 significant bits, so a correct kernel lands
    around 1e-3 to 1e-2 and a wrong one near 1.
    """
    from . import variants
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = environment.device()
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(batch_size, heads, seq_len, head_dim, generator=g).to(dev, dtype) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(),
                                                           is_causal=True)
    if attention == "eager":
        scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
        scores = scores.masked_fill(torch.ones(seq_len, seq_len, dtype=torch.bool, device=dev).triu(1), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
    else:
        backend = variants.attention_variant(attention).sdpa_backend
        ctx = sdpa_kernel([getattr(SDPBackend, backend)]) if backend else contextlib.nullcontext()
        with ctx:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
    return {"attention": attention, "dtype": str(dtype).replace("torch.", ""), "rel_l2_error_vs_float64": err}


def agreement(loaded: models.Loaded, attention: str, reference: str = "eager", *, batch_size: int = 2,
              seq_len: int = 256, pad_fraction: float = 0.0) -> dict:
    """How closely ``attention`` reproduces ``reference`` on one batch: relative L2 error of the logits
    (‖a − b‖ / ‖b‖, over real tokens) and the largest absolute difference. bf16 kernels land near 1e-2.
    """
    batch = models.make_batch(loaded, batch_size, seq_len, pad_fraction)
    real = batch["attention_mask"].bool()
    out = {}
    for name in (reference, attention):
        loaded.switch_attention(name)
        with torch.inference_mode(), loaded.context():
            out[name] = loaded.model(**batch, use_cache=False).logits[real].float()
    diff = out[attention] - out[reference]
    return {"attention": attention, "reference": reference, "dtype": loaded.request.dtype,
            "rel_l2_error": (diff.norm() / out[reference].norm()).item(), "max_abs_diff": diff.abs().max().item()}


def padding_vs_packing(loaded: models.Loaded, seqs: list[torch.Tensor], *, warmup: int = 1, reps: int = 5) -> pd.DataFrame:
    """The same sequences three ways (notebook 01): a left-padded batch; packed into one row with
    position ids restarting at each sequence; and concatenated with no boundaries (the mistake that
    packing avoids: later sequences attend to earlier ones).

    One row per layout: positions computed, real tokens, latency, and how far each token's logits are
    from running its sequence alone (relative L2 error; bf16 rounding alone gives about 1e-2).
    """
    dev = loaded.device
    pad_id = loaded.model.config.pad_token_id or 0
    packed = models.pack_batch(seqs)
    layouts = {"padded": models.pad_batch(seqs, pad_id), "packed": packed,
               "concatenated, no boundaries": {"input_ids": packed["input_ids"],
                                               "position_ids": torch.arange(packed["input_ids"].shape[1])[None]}}
    with torch.inference_mode(), loaded.context():
        alone = torch.cat([loaded.model(input_ids=s[None].to(dev), use_cache=False).logits[0].float() for s in seqs])
    rows = []
    for name, batch in layouts.items():
        batch = {k: v.to(dev) for k, v in batch.items()}

        def fn():
            with torch.inference_mode():
                return loaded.model(**batch, use_cache=False).logits

        timing = time_callable(fn, device=dev, warmup=warmup, reps=reps, context=loaded.context)
        with loaded.context():
            logits = fn().float()
        if name == "padded":
            got = torch.cat([logits[i, logits.shape[1] - len(s):] for i, s in enumerate(seqs)])
        else:
            got = logits[0]
        positions = batch["input_ids"].numel()
        real = sum(len(s) for s in seqs)
        rows.append({**loaded.describe(), "layout": name, "positions": positions, "real_tokens": real,
                     "padding_share": 1 - real / positions, **timing.summary("latency"),
                     "real_tokens_per_s": real / (timing.median_ms / 1e3),
                     "rel_error_vs_alone": ((got - alone).norm() / alone.norm()).item()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- sweeps

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
NO_KERNEL_MARKERS = ("no available kernel", "no viable backend")


def is_no_kernel(exc: BaseException) -> bool:
    """True for SDPA's refusal when the pinned backend cannot take these inputs (dtype, mask, head size)."""
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in NO_KERNEL_MARKERS)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (whatever class they arrive as)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OOM_MARKERS))


def _is_kernel_reason(text: str) -> bool:
    return "not used because" in text or "kernel not used" in text.lower()


@contextlib.contextmanager
def _kernel_reasons():
    """Collect PyTorch's warnings that say why an SDPA kernel was not used (the reasons behind "No available
    kernel"); every other warning is passed on, once each, as Python's default filter would."""
    reasons: list[str] = []
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                yield reasons
            finally:
                caught = list(record)
                reasons += [" ".join(str(w.message).split()) for w in caught if _is_kernel_reason(str(w.message))]
    finally:
        for w in caught:
            key = (w.category, str(w.message))
            if key not in _SHOWN and not _is_kernel_reason(key[1]):
                _SHOWN.add(key)
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


_SHOWN: set = set()


def sweep(points: Iterable[dict], measure_one: Callable[[dict], dict], *, rows: list | None = None,
          on_row: Callable[[dict], None] | None = None, save_to=None) -> pd.DataFrame:
    """Measure each point; a failure becomes a row, never the end of the sweep.

    Every row has ``status``: ``ok``, ``OOM`` (memory freed, the sweep goes on), ``unsupported``
    (a ``WorkbookError``, or SDPA's "No available kernel" for a pinned backend: the option cannot run
    these inputs here) or ``error`` (with the exception text).
    Rows are appended to ``rows`` (pass your own list to keep them even if you interrupt the
    kernel), handed to ``on_row`` (e.g. a live plot) and, with ``save_to``, appended to that CSV
    as they come.
    """
    from . import results

    rows = [] if rows is None else rows
    for point in points:
        t0 = time.perf_counter()
        try:
            with _kernel_reasons() as reasons:
                row = {**point, **measure_one(dict(point)), "status": "ok", "error": ""}
        except WorkbookError as e:
            row = {**point, "status": "unsupported", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - recorded in the row, the sweep goes on
            if is_oom(e):
                row = {**point, "status": "OOM", "error": str(e).splitlines()[0][:300]}
            elif is_no_kernel(e):
                why = "; ".join(dict.fromkeys(reasons))[:600]
                row = {**point, "status": "unsupported",
                       "error": "No available kernel: " + (why or str(e).splitlines()[0][:300])}
            else:
                row = {**point, "status": "error",
                       "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                       "traceback": traceback.format_exc(limit=3)}
            del e
            models.free_memory()
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        if save_to is not None:
            results.append_row(save_to, row)
        if on_row is not None:
            try:
                on_row(row)
            except Exception as e:  # noqa: BLE001 - a plotting error must not lose a measurement
                warnings.warn(f"on_row failed ({type(e).__name__}: {e}); the row is kept")
    return pd.DataFrame(rows)
