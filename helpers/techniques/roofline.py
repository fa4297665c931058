"""The decode roofline and the speed-of-light summary (notebook 07).

- ``decode_ceiling``: the most tokens/s a card can decode at each batch size: bandwidth-bound (the weight bytes a step
  reads and the KV cache, once per step) until the arithmetic of the batch takes over.
- ``sol_summary``: one row per technique in saved result tables, the best share of the speed of light it reached.
"""

from __future__ import annotations

import pandas as pd

from ..measure.workload import count_params, decode_step_bytes, kv_cache_bytes
from ..results import registry


def decode_ceiling(model, batches, *, context_len: int, gbs: float, tflops: float) -> pd.DataFrame:
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
