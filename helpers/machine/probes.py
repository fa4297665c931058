"""What can run here, found by running it: attention paths and bitsandbytes modes (notebook 00's tables).

Every answer comes from a tiny instance of the thing, run on this device, never from a version check.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import variants
from . import flash4
from .hardware import device


def probe_dtype(dev: torch.device) -> torch.dtype:
    """The dtype the probes use: bf16 (fp16 without bf16) on a GPU, fp32 on a CPU."""
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.float32


@functools.cache
def _sdpa_backend_runs(backend: str, dtype: torch.dtype, dev: str, head_dim: int) -> tuple[bool, str]:
    q = torch.randn(1, 2, 16, head_dim, device=dev, dtype=dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True, "ran a causal call"
    except RuntimeError as e:
        return False, str(e).splitlines()[0][:200]


def sdpa_backend_runs(
    backend: str, dtype: torch.dtype, dev: torch.device | str | None = None, head_dim: int = 64
) -> tuple[bool, str]:
    """Run one tiny causal SDPA call pinned to ``backend``; return (ran, why)."""
    dev = torch.device(dev) if dev is not None else device()
    return _sdpa_backend_runs(backend, dtype, str(dev), head_dim)


def has_module(name: str) -> bool:
    """True if ``name`` (dotted names too) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def flash_package_problem(
    variant: variants.AttentionVariant, dtype: torch.dtype, dev: torch.device
) -> str | None:
    """Why ``fa2``/``fa3``/``fa4`` cannot run here, or ``None`` if it can (``fa4``: see ``flash4.problem``)."""
    from transformers.utils import is_flash_attn_2_available  # transformers is heavy: only when asked

    if dev.type != "cuda":
        return "needs an NVIDIA GPU (this is a CPU)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16 or bf16, not {variants.dtype_name(dtype)}"
    if variant.name == "fa2" and not is_flash_attn_2_available():
        return "the flash-attn package is not installed"
    if variant.name == "fa3" and not has_module("flash_attn_interface"):
        return "the FlashAttention-3 package (flash_attn_interface) is not installed"
    if variant.name == "fa4":
        return flash4.problem(dtype, dev)
    return None


@functools.cache
def _flex_runs(dtype: torch.dtype, dev: str) -> tuple[bool, str]:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # its import can fail on old builds

        q = torch.randn(1, 2, 16, 64, device=dev, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex_attention(q, q, q)
        return True, "ran uncompiled (transformers compiles it)"
    except Exception as e:  # noqa: BLE001 - any failure means "cannot run here"
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def attention_problem(
    name: str, dtype: torch.dtype, dev: torch.device | None = None, head_dim: int = 64
) -> str | None:
    """Why the attention path ``name`` cannot run with ``dtype`` here, or ``None`` if it can."""
    dev = dev or device()
    v = variants.attention_variant(name)
    if v.package:
        return flash_package_problem(v, dtype, dev)
    if v.sdpa_backend:
        ok, why = sdpa_backend_runs(v.sdpa_backend, dtype, dev, head_dim)
        return None if ok else why
    if v.name == "flex":
        ok, why = _flex_runs(dtype, str(dev))
        return None if ok else why
    return None


def attention_support(dtype: torch.dtype | None = None) -> pd.DataFrame:
    """One row per attention path: does it run here with ``dtype`` (default: bf16/fp16 on GPU, fp32 on CPU)?"""
    dev = device()
    dtype = dtype or probe_dtype(dev)
    rows = []
    for name, v in variants.ATTENTION.items():
        problem = attention_problem(name, dtype, dev)
        rows.append(
            {
                "attention": name,
                "implementation": v.implementation,
                "dtype": variants.dtype_name(dtype),
                "runs_here": problem is None,
                "detail": problem or "runs",
                "what_it_is": v.description,
            }
        )
    return pd.DataFrame(rows)


def flash_path(dtype: torch.dtype | None = None) -> tuple[str, str]:
    """The FlashAttention path to use here and a sentence saying what it is.

    The flash-attn package (``fa2``) when it runs; otherwise PyTorch SDPA pinned to its
    FlashAttention-2 kernels (``sdpa-flash``); otherwise plain ``sdpa``, which picks what runs.
    """
    dev = device()
    dtype = dtype or probe_dtype(dev)
    if attention_problem("fa2", dtype, dev) is None:
        return "fa2", "the flash-attn package (attn_implementation='flash_attention_2')"
    if attention_problem("sdpa-flash", dtype, dev) is None:
        where = "CUDA FlashAttention-2 kernels" if dev.type == "cuda" else "CPU flash-attention kernel"
        return "sdpa-flash", (
            f"flash-attn is not installed: PyTorch SDPA pinned to its {where} "
            "(attn_implementation='sdpa' + sdpa_kernel(FLASH_ATTENTION))"
        )
    return "sdpa", "no flash kernel runs here: PyTorch SDPA with the kernel it picks"


@functools.cache
def _quant_runs(mode: str, dev: str) -> tuple[bool, str]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install bitsandbytes)"
    try:
        import bitsandbytes as bnb  # optional: missing on some machines

        dtype = torch.float16 if dev.startswith("cuda") else torch.float32
        if mode == "int8":
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=dtype, quant_type=mode)
        layer = layer.to(dev)
        layer(torch.randn(2, 64, device=dev, dtype=dtype))
        return True, f"a 64x64 {mode} layer ran on {dev}"
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def quantization_problem(mode: str | None, dev: torch.device | None = None) -> str | None:
    """Why bitsandbytes ``mode`` (``int8``/``fp4``/``nf4``) cannot run here, or ``None``."""
    if mode is None:
        return None
    dev = dev or device()
    ok, why = _quant_runs(mode, str(dev))
    return None if ok else why


def quantization_support() -> pd.DataFrame:
    """One row per bitsandbytes mode: does a tiny layer of it run on this device?"""
    dev = device()
    rows = []
    for mode in variants.QUANT_MODES[1:]:
        problem = quantization_problem(mode, dev)
        rows.append(
            {"quant": mode, "runs_here": problem is None, "detail": problem or _quant_runs(mode, str(dev))[1]}
        )
    return pd.DataFrame(rows)
