"""Workload arithmetic: FLOPs, bytes and parameter counts of a model, and the share of the speed of light reached.

Notebook 07 explains the two ceilings; every measured row can carry ``sol_fraction_*`` through ``against_sol``.
"""

from __future__ import annotations

import torch

from ..models.architectures import dims
from .ceilings import SpeedOfLight


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
    layers, heads, head_dim, _ = dims(model.config)
    linear = 2 * count_params(model) * batch_size * seq_len
    attn = 4 * batch_size * seq_len**2 * heads * head_dim * layers * (0.5 if causal else 1.0)
    return float(linear + attn)


def weight_bytes(model) -> int:
    """Bytes of parameters and buffers as stored (quantized weights at their packed size)."""
    return int(model.get_memory_footprint())


def quant_state_bytes(qs) -> int:
    """Bytes of a 4-bit ``QuantState``: block absmax (and, with double quantization, its own
    constants: 8-bit absmax of the absmax, their fp32 scales, the offset) plus the 16-entry code."""
    n = qs.absmax.numel() * qs.absmax.element_size() + qs.code.numel() * qs.code.element_size()
    if getattr(qs, "nested", False):
        s2 = qs.state2
        n += s2.absmax.numel() * s2.absmax.element_size() + s2.code.numel() * s2.code.element_size()
        n += qs.offset.numel() * qs.offset.element_size()
    return int(n)


def decode_step_bytes(model, batch_size: int = 1) -> int:
    """Weight bytes one decode step reads (notebook 07's speed of light; the KV cache is ``kv_cache_bytes``).

    Counted: every parameter and buffer as stored (quantized weights at their packed size), the 4-bit
    quantization constants (block absmax, with double quantization their own constants) and int8 row
    scales, which ``get_memory_footprint`` leaves out; of each input embedding table only the
    ``batch_size`` rows the step looks up (the whole table only when it is also the output head). For an
    encoder-decoder, the decoder and output head only (the encoder ran once, at prefill). Tied tensors
    count once."""
    out_emb = model.get_output_embeddings()
    head = {id(p) for p in out_emb.parameters()} if out_emb is not None else set()
    skip: set[int] = set()
    if getattr(model.config, "is_encoder_decoder", False):
        keep = {id(p) for p in model.get_decoder().parameters()} | head
        skip = {id(p) for p in model.get_encoder().parameters() if id(p) not in keep}
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        for t in tensors:
            key = t.data_ptr() if t is not None and t.numel() else id(t)
            if t is None or id(t) in skip or key in seen:
                continue
            seen.add(key)
            if isinstance(module, torch.nn.Embedding) and id(t) not in head:
                total += batch_size * t.shape[-1] * t.element_size()  # one row per sequence
                continue
            total += t.numel() * t.element_size()
            qs = getattr(t, "quant_state", None)
            if qs is not None:
                total += quant_state_bytes(qs)
            scb = getattr(t, "SCB", None)  # int8: one fp32 scale per output row
            if isinstance(scb, torch.Tensor) and scb.data_ptr() not in seen:
                seen.add(scb.data_ptr())
                total += scb.numel() * scb.element_size()
    return int(total)


def kv_cache_bytes(model, batch_size: int, seq_len: int) -> int:
    """Bytes of the key/value cache for ``seq_len`` positions (2 tensors per layer)."""
    layers, _, head_dim, kv_heads = dims(model.config)
    elem = (
        2
        if next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
        or getattr(model, "is_quantized", False)
        else 4
    )
    return 2 * layers * batch_size * seq_len * kv_heads * head_dim * elem


def against_sol(row: dict, sol: SpeedOfLight | None) -> dict:
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
