"""Checks that results agree: one relative error, attention kernels against float64, attention paths against
each other (notebooks 01-04 use them to show that a faster path computes the same thing), and, on the trained
model, a tolerance that a wrong attention mask cannot meet (``masked_agreement``, notebook 01).
"""

from __future__ import annotations

import contextlib

import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import variants
from ..machine.hardware import device
from .batches import make_batch


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


def attention_agreement(
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


# --------------------------------------------------------------------------- masks on a trained model

# Largest relative logit error a correct attention path may show against eager attention on the trained model
# (smollm2-135m, notebook 01): float32 differs by summation order only (about 1e-6 measured on a CPU); bf16 and
# fp16 by rounding through 30 layers (bf16: 1.4e-2 measured on a CPU). A wrong mask gives 0.1 to 0.6.
TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "bf16": 4e-2}
MASKS = ("causal", "sees the next token", "sees every token", "misses the first token")


def attention_mask(kind: str, seq_len: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """An additive (1, 1, seq_len, seq_len) mask that transformers uses as it is: 0 where a query may attend to
    a key, the dtype's lowest value where it may not. ``kind``: one of ``MASKS``; only ``causal`` is right for a
    decoder: ``sees the next token`` is an off-by-one, ``sees every token`` a forgotten causal mask, ``misses
    the first token`` hides one position from every later one."""
    i, j = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    allowed = {
        "causal": j <= i,
        "sees the next token": j <= i + 1,
        "sees every token": torch.ones(seq_len, seq_len, dtype=torch.bool),
        "misses the first token": (j <= i) & ((j > 0) | (i == 0)),
    }
    if kind not in allowed:
        raise ValueError(f"mask {kind!r}: choose one of {MASKS}")
    mask = torch.zeros(seq_len, seq_len, dtype=dtype).masked_fill(~allowed[kind], torch.finfo(dtype).min)
    return mask[None, None].to(device)


def masked_agreement(
    loaded, ids: torch.Tensor, paths=("sdpa",), *, masks=MASKS, masked_path: str = "sdpa"
) -> pd.DataFrame:
    """Logits of a trained model on real text ``ids`` against eager attention with the model's own causal mask.

    One row per attention path in ``paths`` (the model's own mask), then one per mask of ``masks`` given to
    ``masked_path`` explicitly (``attention_mask``). Columns: ``attention``, ``mask``, ``correct`` (whether the
    mask is causal), ``rel_l2_error`` and ``top1_agreement_pct`` against the reference, the ``tolerance`` for the
    model's dtype (``TOLERANCE``), ``x_tolerance`` (the error in tolerances), ``within_tolerance`` and ``error``
    (why a kernel refused, else None). A check is only as good as the gap between its correct rows and its
    broken ones (notebook 01 asserts it).
    """

    def logits(path, mask=None):
        loaded.switch_attention(path)
        with torch.inference_mode(), loaded.context():
            out = loaded.model(input_ids=ids.to(loaded.device), attention_mask=mask, use_cache=False)
        return out.logits.float().cpu()

    loaded_with = loaded.request.attention
    ref = logits("eager")
    tol = TOLERANCE[loaded.request.dtype]
    dtype, n = loaded.model.dtype, ids.shape[-1]
    cases = [(p, "causal (the model's own)", None) for p in paths]
    cases += [(masked_path, k, attention_mask(k, n, dtype, loaded.device)) for k in masks]
    rows = []
    for path, kind, mask in cases:
        row = {"attention": path, "mask": kind, "correct": kind.startswith("causal"), "tolerance": tol}
        try:
            out = logits(path, mask)
        except (
            RuntimeError
        ) as e:  # a kernel that refuses these inputs (a GQA model, a mask) is a row, not a crash
            rows.append({**row, "within_tolerance": False, "error": str(e).splitlines()[0]})
            continue
        err = relative_error(out, ref)
        rows.append(
            {
                **row,
                "rel_l2_error": err,
                "x_tolerance": err / tol,
                "top1_agreement_pct": 100.0 * (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                "within_tolerance": err <= tol,
                "error": None,
            }
        )
    loaded.switch_attention(loaded_with)
    return pd.DataFrame(rows)
