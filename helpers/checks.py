"""Checks that results agree: one relative error, attention kernels against float64, attention paths against
each other (notebooks 01-04 use them to show that a faster path computes the same thing).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import variants
from .batches import make_batch
from .hardware import device


def relative_error(got: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """``||got - reference|| / ||reference||`` (L2 over every element), computed in ``dtype`` (float32 by default).

    The workbook's one measure of "how different": bf16 rounding alone gives about 1e-2 on logits, a correct
    kernel 1e-3 to 1e-2 against float64, a wrong one near 1.
    """
    got, reference = got.detach().to(dtype), reference.detach().to(dtype)
    return float((got - reference).norm() / reference.norm())


def kernel_agreement(
    attention: str,
    dtype: torch.dtype,
    *,
    batch_size: int = 1,
    heads: int = 32,
    seq_len: int = 1024,
    head_dim: int = 128,
    seed: int = 0,
) -> dict:
    """One causal attention call in ``dtype`` against a float64 reference on the same inputs.

    ``attention`` is ``eager`` (matmul, softmax, matmul in ``dtype``) or an ``sdpa-*`` name.
    Returns the relative L2 error; bf16 carries 8 significant bits, so a correct kernel lands
    around 1e-3 to 1e-2 and a wrong one near 1.
    """
    dev = device()
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (
        torch.randn(batch_size, heads, seq_len, head_dim, generator=g).to(dev, dtype) for _ in range(3)
    )
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.double().cpu(), k.double().cpu(), v.double().cpu(), is_causal=True
    )
    if attention == "eager":
        scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
        scores = scores.masked_fill(
            torch.ones(seq_len, seq_len, dtype=torch.bool, device=dev).triu(1), float("-inf")
        )
        out = torch.softmax(scores, dim=-1) @ v
    else:
        backend = variants.attention_variant(attention).sdpa_backend
        ctx = sdpa_kernel([getattr(SDPBackend, backend)]) if backend else contextlib.nullcontext()
        with ctx:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    err = relative_error(out.double().cpu(), ref, dtype=torch.float64)
    return {"attention": attention, "dtype": str(dtype).replace("torch.", ""), "rel_l2_error_vs_float64": err}


def agreement(
    loaded,
    attention: str,
    reference: str = "eager",
    *,
    batch_size: int = 2,
    seq_len: int = 256,
    pad_fraction: float = 0.0,
) -> dict:
    """How closely ``attention`` reproduces ``reference`` on one batch: relative L2 error of the logits
    (‖a − b‖ / ‖b‖, over real tokens) and the largest absolute difference. bf16 kernels land near 1e-2.
    """
    batch = make_batch(loaded, batch_size, seq_len, pad_fraction)
    real = batch["attention_mask"].bool()
    out = {}
    for name in (reference, attention):
        loaded.switch_attention(name)
        with torch.inference_mode(), loaded.context():
            out[name] = loaded.model(**batch, use_cache=False).logits[real].float()
    diff = out[attention] - out[reference]
    return {
        "attention": attention,
        "reference": reference,
        "dtype": loaded.request.dtype,
        "rel_l2_error": relative_error(out[attention], out[reference]),
        "max_abs_diff": diff.abs().max().item(),
    }
