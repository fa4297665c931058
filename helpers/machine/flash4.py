"""FlashAttention-4, the ``flash-attn-4`` package (CuTe-DSL kernels compiled just in time), found by running it
(notebooks 00 and 01).

- ``problem``: why ``fa4`` cannot run here, or ``None``. In order: a CPU; a dtype other than fp16/bf16; a card
  that is neither Hopper (SM90) nor Blackwell (SM100/SM103); the package missing (``pip install -e ".[flash]"``
  installs the pinned pre-release ``PIN``); a tiny causal call, with one K/V head as Falcon-7B has, that fails or
  disagrees with PyTorch's SDPA. A version check alone never calls it supported.
- ``first_call``: that call's time including just-in-time compilation, and a warm call's. Compilation is
  measured apart and never inside a timed call: the protocol warms every variant up before timing it.
- Compiled kernels are kept across processes in ``$WORKBOOK_CACHE/fa4-kernels`` (the package's own cache,
  switched on by ``enable_kernel_cache`` unless ``FLASH_ATTENTION_CUTE_DSL_CACHE_*`` are set already).
- ``describe``: which package and version ran, for the rows of an ``fa4`` model.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .hardware import sync

PACKAGE = "flash-attn-4"
PIN = "4.0.0b36"  # the pre-release pyproject's "flash" extra installs
ARCHS = {9: "Hopper (SM90)", 10: "Blackwell (SM100/SM103)"}
TOLERANCE = 2e-2  # relative error against SDPA in bf16/fp16 on the probe's tiny call


@dataclass(frozen=True)
class FirstCall:
    """The probe's call: whether it ran (and agreed with SDPA), why not, and its times in seconds."""

    ran: bool
    why: str
    first_s: float = float("nan")  # the first call: just-in-time compilation included
    warm_s: float = float("nan")  # the same call again, compiled

    @property
    def compile_s(self) -> float:
        return self.first_s - self.warm_s


def version() -> str | None:
    """The installed flash-attn-4 version, or ``None``."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def capability(dev: torch.device) -> tuple[int, int]:
    """The card's compute capability (major, minor)."""
    return torch.cuda.get_device_capability(dev)


def enable_kernel_cache() -> Path:
    """Keep compiled kernels on disk, so only a machine's first process pays the compilation."""
    root = Path(os.environ.get("WORKBOOK_CACHE") or Path.home() / ".cache" / "workbook" / "models")
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", str(root / "fa4-kernels"))
    return Path(os.environ["FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"])


def problem(dtype: torch.dtype, dev: torch.device) -> str | None:
    """Why ``fa4`` cannot run here with ``dtype``, or ``None`` when a tiny call ran and agreed with SDPA."""
    if dev.type != "cuda":
        return "needs an NVIDIA GPU (this is a CPU)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16 or bf16, not {str(dtype).removeprefix('torch.')}"
    major, minor = capability(dev)
    if major not in ARCHS:
        return f"needs a {' or '.join(ARCHS.values())} GPU; this card is SM{major}{minor}"
    if version() is None:
        return f'the {PACKAGE} package is not installed (pip install -e ".[flash]" installs {PACKAGE}=={PIN})'
    call = first_call(dtype, str(dev))
    return None if call.ran else call.why


@functools.cache
def first_call(dtype: torch.dtype, dev: str, head_dim: int = 64, kv_heads: int = 1) -> FirstCall:
    """Run one causal call (batch 1, 128 tokens, 4 query heads, ``kv_heads`` K/V heads) twice and compare it with
    SDPA; cached per process (the kernels themselves per machine, see ``enable_kernel_cache``)."""
    enable_kernel_cache()
    try:
        from flash_attn.cute import flash_attn_func  # optional and heavy: only on a card it supports

        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(1, 128, 4, head_dim, device=dev, dtype=dtype, generator=g)
        k, v = (torch.randn(1, 128, kv_heads, head_dim, device=dev, dtype=dtype, generator=g) for _ in "kv")
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            out = flash_attn_func(q, k, v, causal=True)[0]
            sync(torch.device(dev))
            times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot run here", with its reason
        return FirstCall(False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(t.transpose(1, 2) for t in (q, k, v)), is_causal=True, enable_gqa=True
    ).transpose(1, 2)
    err = float((out.float() - ref.float()).norm() / ref.float().norm())
    if not err <= TOLERANCE:
        return FirstCall(False, f"ran, but differs from SDPA by {err:.3g} (relative; at most {TOLERANCE})")
    why = f"ran a causal call with {kv_heads} K/V head(s), as SDPA within {err:.1g}"
    return FirstCall(True, why, times[0], times[1])


def describe() -> dict:
    """The package that ran an ``fa4`` row, for its ``kernel_package`` column."""
    return {"kernel_package": f"{PACKAGE} {version() or 'not installed'}"}
