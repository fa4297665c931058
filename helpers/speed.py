"""How close to the speed of light: decode with a static cache and torch.compile, and the roofline (notebook 07).

- ``decode``: one ``measure.generate`` row for a decode mode: ``dynamic`` (transformers' default cache),
  ``static`` (a pre-allocated cache, compilation switched off) or ``compiled`` (static cache and
  ``torch.compile`` with CUDA graphs), with the first call's time (compilation included) reported apart.
- ``roofline``: the most tokens/s a card can decode at each batch size: bandwidth-bound (every weight byte and
  the KV cache read once per step) until the arithmetic of the batch takes over.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from . import environment, measure, models

MODES = ("dynamic", "static", "compiled")


def _compile_forward(model):
    """``torch.compile`` the model's forward (mode ``reduce-overhead``: CUDA graphs on a GPU). Returns the original."""
    original = model.forward
    model.forward = torch.compile(original, mode="reduce-overhead", fullgraph=False, dynamic=False)
    return original


def decode(loaded: models.Loaded, mode: str, *, batch_size: int = 1, prompt_len: int, new_tokens: int,
           sol: environment.SpeedOfLight | None = None, reps: int = 3) -> dict:
    """Generate with decode mode ``mode`` and measure it (see ``measure.generate``).

    ``compiled``: on a GPU, for models transformers knows how to compile, ``generate`` itself compiles the decode
    step when the cache is static (``compiled_by = "generate"``); otherwise (quantized weights, a CPU) the forward
    is wrapped in ``torch.compile`` here (``compiled_by = "torch.compile"``). ``first_call_s`` is the first
    generate call, compilation included; ``compile_s`` what it took beyond a warm call.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    model = loaded.model
    kwargs, original, compiled_by = {}, None, ""
    if mode in ("static", "compiled"):
        kwargs["cache_implementation"] = "static"
    if mode == "static":
        kwargs["disable_compile"] = True
    if mode == "compiled":
        auto = loaded.device.type == "cuda" and not getattr(model, "is_quantized", False)
        if auto:
            compiled_by = "generate"
        else:
            kwargs["disable_compile"] = True
            original, compiled_by = _compile_forward(model), "torch.compile"
    batch = models.make_batch(loaded, batch_size, prompt_len)
    pad = model.config.pad_token_id
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=pad if pad is not None else 0, **kwargs)
        environment.sync(loaded.device)
        first = time.perf_counter() - t0
        row = measure.generate(loaded, batch_size, prompt_len, new_tokens, warmup=1, reps=reps, sol=sol, **kwargs)
    finally:
        if original is not None:
            model.forward = original
        if mode == "compiled":
            torch._dynamo.reset()
            if hasattr(model, "_compiled_call"):
                del model._compiled_call
    return {"mode": mode, "compiled_by": compiled_by, **row, "first_call_s": first,
            "compile_s": max(first - row["total_ms"] / 1e3, 0.0)}


def roofline(model, batches, *, context_len: int, gbs: float, tflops: float) -> pd.DataFrame:
    """The decode ceiling at each batch size: ``min(bandwidth bound, compute bound)`` in tokens/s.

    Bandwidth bound: each step reads the weights once and each sequence's KV cache (``context_len`` positions);
    compute bound: 2 FLOPs per parameter per token at the card's peak. ``limited_by`` says which one binds.
    """
    weights = measure.decode_step_bytes(model)
    flops_per_token = 2 * measure.count_params(model)
    rows = []
    for b in batches:
        step_bytes = weights + measure.kv_cache_bytes(model, b, context_len)
        bw = b * gbs * 1e9 / step_bytes
        compute = tflops * 1e12 / flops_per_token
        rows.append({"batch_size": b, "bandwidth_bound_tok_s": bw, "compute_bound_tok_s": compute,
                     "ceiling_tok_s": min(bw, compute), "limited_by": "bandwidth" if bw < compute else "compute"})
    return pd.DataFrame(rows)


def sol_summary(tables: dict[str, pd.DataFrame], labels: dict[str, str]) -> pd.DataFrame:
    """One row per technique in saved result tables: the best share of the speed of light it reached.

    Decode tables (with ``decode_gbs``) count against bandwidth, forward and prefill tables against arithmetic.
    Rows are grouped by what the table varies (decode mode, weights, attention path); ``at`` says which
    measurement reached the best share.
    """
    out = []
    for name, df in tables.items():
        ok = df[df.get("status", "ok") == "ok"] if "status" in df else df
        decode = "sol_fraction_bandwidth" in ok and ok.sol_fraction_bandwidth.notna().any()
        col = "sol_fraction_bandwidth" if decode else "sol_fraction_compute"
        if col not in ok or ok[col].isna().all():
            continue
        keys = [k for k in ("weights", "mode", "attention") if k in ok and ok[k].nunique() > 1] or \
               [k for k in ("weights", "attention") if k in ok][:1]
        for group, part in ok.groupby(keys, sort=False):
            part = part.dropna(subset=[col])
            if part.empty:
                continue
            best = part.loc[part[col].idxmax()]
            group = group if isinstance(group, tuple) else (group,)
            at = ", ".join(f"{k} {best[k]}" for k in ("batch_size", "prompt_len", "seq_len") if k in best and pd.notna(best[k]))
            out.append({"technique": f"{labels.get(name, name)}: " + " / ".join(map(str, group)),
                        "ceiling": "bandwidth" if decode else "arithmetic", "best_fraction": float(best[col]), "at": at})
    return pd.DataFrame(out, columns=["technique", "ceiling", "best_fraction", "at"])
