"""How close to the speed of light: decode with a static cache and torch.compile, and the roofline (notebook 07).

- ``decode``: one row for a decode mode: ``dynamic`` (transformers' default cache), ``static`` (a pre-allocated
  cache, compilation switched off), ``compiled`` (static cache, and ``generate`` compiles its decode step with CUDA
  graphs) or ``compiled-loop`` (a greedy loop of your own around one compiled step, as gpt-fast does: no
  per-token work in Python beyond launching the graph), with the first call's time (compilation included) apart.
- ``roofline``: the most tokens/s a card can decode at each batch size: bandwidth-bound (every weight byte and
  the KV cache read once per step) until the arithmetic of the batch takes over.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from . import measure, models, registry
from .batches import make_batch
from .ceilings import SpeedOfLight
from .errors import WorkbookError
from .hardware import sync
from .timing import peak_memory, time_callable
from .workload import count_params, decode_step_bytes, kv_cache_bytes

MODES = ("dynamic", "static", "compiled", "compiled-loop")


def generate_compiles(loaded: models.Loaded) -> str:
    """Empty if ``generate`` compiles its decode step for this model on this device, else why it does not."""
    if loaded.device.type != "cuda":
        return "generate compiles its decode step only on an accelerator (CUDA here), not on a CPU"
    quantizer = getattr(loaded.model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_compileable:
        return (
            f"transformers does not compile generate for {type(quantizer).__name__} models "
            "(their quantizer is not marked compileable)"
        )
    return ""


class GreedyLoop:
    """Greedy decoding without ``generate``: the prompt runs eagerly into a static cache, then each new token is one
    call of the model compiled with ``mode="reduce-overhead"`` (CUDA graphs on a GPU).

    The prefill stays eager so that the cache is allocated outside the compiled region (transformers marks its
    tensors as static addresses there, which CUDA graphs need). ``loop(n)`` returns the ``n`` new tokens.
    """

    def __init__(self, loaded: models.Loaded, batch_size: int, prompt_len: int, max_new_tokens: int):
        from transformers import StaticCache  # heavy: imported on first use

        self.loaded, self.model = loaded, loaded.model
        self.batch = make_batch(loaded, batch_size, prompt_len)
        self.cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + max_new_tokens)
        self.step = torch.compile(self.model, mode="reduce-overhead", fullgraph=False, dynamic=False)
        self.positions = [
            torch.full((batch_size, 1), prompt_len + i, dtype=torch.long, device=loaded.device)
            for i in range(max_new_tokens)
        ]

    def __call__(self, new_tokens: int, forced: torch.Tensor | None = None) -> torch.Tensor:
        """The greedy choice at each of ``new_tokens`` steps. With ``forced`` (batch x new_tokens tokens), step ``i``
        is fed ``forced[:, i - 1]`` instead of its own previous choice (teacher forcing), so one early difference
        does not change every later step."""
        with torch.inference_mode(), self.loaded.context():
            self.cache.reset()
            logits = self.model(**self.batch, past_key_values=self.cache, use_cache=True).logits
            token = logits[:, -1:].argmax(-1)
            out = [token]
            for i, pos in enumerate(self.positions[: new_tokens - 1]):
                fed = token if forced is None else forced[:, i : i + 1]
                # the previous step's outputs are read: replay may reuse them
                torch.compiler.cudagraph_mark_step_begin()
                logits = self.step(
                    input_ids=fed,
                    past_key_values=self.cache,
                    position_ids=pos,
                    cache_position=pos[0],
                    use_cache=True,
                ).logits
                token = logits[:, -1:].argmax(-1)
                out.append(token)
        return torch.cat(out, dim=1)


def _loop_row(loaded, batch_size, prompt_len, new_tokens, sol, reps) -> dict:
    loop = GreedyLoop(loaded, batch_size, prompt_len, new_tokens)
    dev = loaded.device
    try:
        t0 = time.perf_counter()
        tokens = loop(new_tokens)
        sync(dev)
        first = time.perf_counter() - t0
        prefill = time_callable(lambda: loop(1), device=dev, warmup=1, reps=reps)
        full = time_callable(lambda: loop(new_tokens), device=dev, warmup=1, reps=reps)
        mem = peak_memory(lambda: loop(new_tokens), device=dev)
        with torch.inference_mode(), loaded.context():
            reference = loaded.model.generate(
                **loop.batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=loaded.model.config.pad_token_id or 0,
            )
        reference = reference[:, prompt_len:].to(tokens.device)
        forced = loop(new_tokens, forced=reference)
    finally:
        torch._dynamo.reset()
    row = measure.decode_row(loaded, batch_size, prompt_len, new_tokens, prefill, full, mem, sol=sol)
    return {
        **row,
        "first_call_s": first,
        "same_tokens_as_generate": float((tokens == reference).float().mean()),
        "next_token_agreement": float((forced == reference).float().mean()),
    }


def decode(
    loaded: models.Loaded,
    mode: str,
    *,
    batch_size: int = 1,
    prompt_len: int,
    new_tokens: int,
    sol: SpeedOfLight | None = None,
    reps: int = 3,
) -> dict:
    """Greedy decode in mode ``mode`` (see ``MODES``), measured as ``measure.generate`` does.

    ``compiled`` is transformers' own path: ``generate`` with a static cache compiles the decode step itself where
    it supports it (``generate_compiles`` says why not otherwise: the row is then ``unsupported``).
    ``compiled-loop`` compiles any model, quantized ones included (``GreedyLoop``), and checks itself against
    ``generate``: ``same_tokens_as_generate`` is the share of equal tokens when each runs freely (compiled kernels
    round differently, and after one different choice the two texts part for good), ``next_token_agreement`` the
    share of equal choices when the loop is fed ``generate``'s tokens (teacher forcing): near 1 when only rounding
    differs, near 0 for a broken loop.
    ``first_call_s`` is the first call, compilation included; ``compile_s`` what it took beyond a warm call.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    if mode == "compiled-loop":
        row = _loop_row(loaded, batch_size, prompt_len, new_tokens, sol, reps)
        return {
            "mode": mode,
            "compiled_by": "torch.compile",
            **row,
            "compile_s": max(row["first_call_s"] - row["total_ms"] / 1e3, 0.0),
        }
    kwargs, compiled_by = {}, ""
    if mode in ("static", "compiled"):
        kwargs["cache_implementation"] = "static"
    if mode == "static":
        kwargs["disable_compile"] = True
    if mode == "compiled":
        why_not = generate_compiles(loaded)
        if why_not:
            raise WorkbookError(
                f"mode 'compiled': {why_not}.", "Use mode 'compiled-loop', which compiles any model."
            )
        compiled_by = "generate"
    batch = make_batch(loaded, batch_size, prompt_len)
    pad = loaded.model.config.pad_token_id
    try:
        t0 = time.perf_counter()
        with torch.inference_mode(), loaded.context():
            loaded.model.generate(
                **batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad if pad is not None else 0,
                **kwargs,
            )
        sync(loaded.device)
        first = time.perf_counter() - t0
        row = measure.generate(
            loaded, batch_size, prompt_len, new_tokens, warmup=1, reps=reps, sol=sol, **kwargs
        )
    finally:
        if mode == "compiled":
            torch._dynamo.reset()
            if hasattr(loaded.model, "_compiled_call"):
                del loaded.model._compiled_call
    return {
        "mode": mode,
        "compiled_by": compiled_by,
        **row,
        "first_call_s": first,
        "compile_s": max(first - row["total_ms"] / 1e3, 0.0),
    }


def roofline(model, batches, *, context_len: int, gbs: float, tflops: float) -> pd.DataFrame:
    """The decode ceiling at each batch size: ``min(bandwidth bound, compute bound)`` in tokens/s.

    Bandwidth bound: each step reads the weights once and each sequence's KV cache (``context_len`` positions);
    compute bound: 2 FLOPs per parameter per token at the card's peak. ``limited_by`` says which one binds.
    """
    flops_per_token = 2 * count_params(model)
    rows = []
    for b in batches:
        step_bytes = decode_step_bytes(model, b) + kv_cache_bytes(model, b, context_len)
        bw = b * gbs * 1e9 / step_bytes
        compute = tflops * 1e12 / flops_per_token
        rows.append(
            {
                "batch_size": b,
                "bandwidth_bound_tok_s": bw,
                "compute_bound_tok_s": compute,
                "ceiling_tok_s": min(bw, compute),
                "limited_by": "bandwidth" if bw < compute else "compute",
            }
        )
    return pd.DataFrame(rows)


def sol_summary(tables: dict[str, pd.DataFrame], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per technique in saved result tables: the best share of the speed of light it reached.

    Decode tables (with ``decode_gbs``) count against bandwidth, forward and prefill tables against arithmetic.
    Rows are grouped by what the table varies (decode mode, weights, attention path); ``at`` says which
    measurement reached the best share. ``labels``: the registry's (``registry.sol_tables``) by default.
    """
    labels = registry.sol_tables() if labels is None else labels
    out = []
    for name, df in tables.items():
        ok = df[df.get("status", "ok") == "ok"] if "status" in df else df
        decode = "sol_fraction_bandwidth" in ok and ok.sol_fraction_bandwidth.notna().any()
        col = "sol_fraction_bandwidth" if decode else "sol_fraction_compute"
        if col not in ok or ok[col].isna().all():
            continue
        keys = [k for k in ("weights", "mode", "attention") if k in ok and ok[k].nunique() > 1] or [
            k for k in ("weights", "attention") if k in ok
        ][:1]
        for group, part in ok.groupby(keys, sort=False):
            part = part.dropna(subset=[col])
            if part.empty:
                continue
            best = part.loc[part[col].idxmax()]
            group = group if isinstance(group, tuple) else (group,)
            at = ", ".join(
                f"{k} {best[k]}"
                for k in ("batch_size", "prompt_len", "seq_len")
                if k in best and pd.notna(best[k])
            )
            out.append(
                {
                    "technique": f"{labels.get(name, name)}: " + " / ".join(map(str, group)),
                    "ceiling": "bandwidth" if decode else "arithmetic",
                    "best_fraction": float(best[col]),
                    "at": at,
                }
            )
    return pd.DataFrame(out, columns=["technique", "ceiling", "best_fraction", "at"])
