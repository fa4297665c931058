"""bitsandbytes quantization, opened up: where the bytes go, LLM.int8() by hand, where layers land.

- ``bytes_breakdown``: every byte of a loaded model by kind (packed 4-bit or int8 weights, their
  quantization constants, and what stays in high precision), which is why a "4-bit" model is not
  8x smaller than fp32 (notebook 03).
- ``outlier_activations`` and ``int8_matmul``: the LLM.int8() algorithm in plain PyTorch, vector-wise
  absmax int8 with or without the mixed-precision decomposition of outlier features, and
  ``bnb_int8_linear`` for bitsandbytes' own layer (notebook 04).
- ``load_sized``: a model's size three ways (footprint, byte breakdown, allocator growth), notebooks 03-04.
Where the bytes land under a memory budget is ``placement``'s subject.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import torch
from torch import nn

from .. import models
from ..errors import WorkbookError
from ..machine.hardware import device_info, free_memory
from ..measure.workload import quant_state_bytes

GIB = 2**30


def _kind(name: str, module: nn.Module, param_name: str) -> str:
    cls = type(module).__name__
    if cls == "Linear4bit":
        return "4-bit weights (packed)" if param_name == "weight" else "biases"
    if cls == "Linear8bitLt":
        return {"weight": "int8 weights", "SCB": "quantization constants"}.get(param_name, "biases")
    if isinstance(module, nn.Embedding):
        return "embeddings"
    if "norm" in cls.lower() or "norm" in name.rsplit(".", 1)[-1].lower():
        return "norms"
    if name.endswith("lm_head"):
        return "output head (lm_head)"
    if isinstance(module, nn.Linear) or cls == "Conv1D":
        return "linear layers kept in high precision" if param_name == "weight" else "biases"
    return "other buffers"


def bytes_breakdown(model) -> pd.DataFrame:
    """Bytes of a model's parameters, buffers and 4-bit quantization states, by kind.

    Tied weights are counted once. ``get_memory_footprint()`` counts parameters and buffers but not
    the 4-bit quantization states (they are attributes), so the total here can exceed it slightly.
    Columns: kind, values (numbers stored, a packed byte holding two 4-bit values counts two), bytes, gib, share.
    """
    seen: set[int] = set()
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, module in model.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for pname, t in tensors:
            if t is None or t.data_ptr() in seen and t.numel() > 0:
                continue
            seen.add(t.data_ptr())
            kind = _kind(name, module, pname)
            qs = getattr(t, "quant_state", None)
            values = int(torch.Size(qs.shape).numel()) if qs is not None else t.numel()
            rows[kind][0] += values
            rows[kind][1] += t.numel() * t.element_size()
            if qs is not None:
                rows["quantization constants"][1] += quant_state_bytes(qs)
            scb = getattr(t, "SCB", None)  # int8: one fp32 scale per output row, kept beside the weight
            if isinstance(scb, torch.Tensor) and scb.data_ptr() not in seen:
                seen.add(scb.data_ptr())
                rows["quantization constants"][1] += scb.numel() * scb.element_size()
    df = pd.DataFrame([{"kind": k, "values": v, "bytes": b} for k, (v, b) in rows.items()])
    df["gib"] = df.bytes / GIB
    df["share"] = df.bytes / df.bytes.sum()
    return df.sort_values("bytes", ascending=False, ignore_index=True)


def bits_per_value(
    breakdown: pd.DataFrame, kinds: tuple[str, ...] = ("4-bit weights (packed)", "int8 weights")
) -> float:
    """Average bits per quantized weight, quantization constants included (4-bit: about 4.5, or 4.127 with
    double quantization; int8: about 8.03)."""
    b = breakdown.set_index("kind")
    quantized = [k for k in kinds if k in b.index]
    if not quantized:
        return float("nan")
    extra = b.bytes.get("quantization constants", 0)
    return float(8 * (b.loc[quantized, "bytes"].sum() + extra) / b.loc[quantized, "values"].sum())


# --------------------------------------------------------------------------- LLM.int8() by hand


def outlier_activations(
    tokens: int,
    features: int,
    *,
    outliers: int = 4,
    magnitude: float = 60.0,
    seed: int = 0,
    dtype=torch.float16,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states like a large trained transformer's: N(0, 1) except a few feature columns whose
    values are tens of times larger (the "emergent outliers" of the LLM.int8() paper).

    Returns the activations and the indices of the outlier columns.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, features, generator=g)
    cols = torch.randperm(features, generator=g)[:outliers]
    x[:, cols] *= magnitude
    return x.to(device=device, dtype=dtype), cols


def _absmax_int8(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale = t.abs().amax(dim=dim, keepdim=True).clamp(min=1e-12) / 127
    return (t / scale).round().clamp(-127, 127), scale


def int8_matmul(x: torch.Tensor, weight: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """``x @ weight.T`` the LLM.int8() way, computed in float32 so it runs anywhere.

    Vector-wise quantization: each row of ``x`` (a token) and each row of ``weight`` (an output
    feature) gets its own absmax scale, values are rounded to int8, multiplied exactly, and scaled
    back. With ``threshold``, every input feature where some |x| exceeds it is taken out and
    multiplied in 16-bit instead (the mixed-precision decomposition). ``threshold=None``: all int8.
    """
    x, w = x.float(), weight.float()
    out = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
    keep = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
    if threshold is not None and threshold > 0:
        keep = ~(x.abs() > threshold).any(dim=0)
        out += x[:, ~keep].half().float() @ w[:, ~keep].half().float().T
    xq, sx = _absmax_int8(x[:, keep], dim=1)
    wq, sw = _absmax_int8(w[:, keep], dim=1)
    return out + (xq @ wq.T) * sx * sw.T


def bnb_int8_linear(linear: nn.Linear, threshold: float, device) -> nn.Module:
    """bitsandbytes' ``Linear8bitLt`` with ``linear``'s weights, quantized on ``device`` (inference form)."""
    try:
        import bitsandbytes as bnb  # optional on machines without it: the error names the fix
    except ImportError as e:
        raise WorkbookError(
            "bitsandbytes is not installed.", "Install the workbook's pinned set: ./workbook lab"
        ) from e
    layer = bnb.nn.Linear8bitLt(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        has_fp16_weights=False,
        threshold=threshold,
    )
    layer.weight = bnb.nn.Int8Params(
        linear.weight.data.clone().cpu(), requires_grad=False, has_fp16_weights=False
    )
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data.clone().cpu(), requires_grad=False)
    # inference mode, as in a loaded model: bitsandbytes 0.50's CPU path runs LLM.int8() only there (in training
    # mode it multiplies dequantized weights, and the threshold changes nothing)
    return layer.to(device).eval()


def load_sized(name: str, **load_kwargs):
    """Load ``name`` with ``load_kwargs`` and measure its size three ways: transformers' footprint,
    the byte breakdown (quantization states included), and on a GPU the allocator's growth during
    loading. Returns (loaded, row, breakdown); free the model with ``models.unload`` when done."""
    free_memory()
    cuda = torch.cuda.is_available()
    before = torch.cuda.memory_allocated() if cuda else 0
    loaded = models.load(name, **load_kwargs)
    allocated = (torch.cuda.memory_allocated() - before) / GIB if cuda else float("nan")
    b = bytes_breakdown(loaded.model)
    high = ~b.kind.isin(["4-bit weights (packed)", "int8 weights", "quantization constants"])
    row = {
        **loaded.describe(),
        "footprint_gib": loaded.footprint_gib(),
        "breakdown_gib": b.gib.sum(),
        "allocated_gib": allocated,
        "bits_per_quantized_weight": bits_per_value(b),
        "high_precision_share": float(b[high].bytes.sum() / b.bytes.sum()),
        "load_s": loaded.load_s,
        "device": device_info().name,
    }
    return loaded, row, b.assign(weights=row["weights"])
