"""The names used everywhere in the workbook, defined once.

Attention paths (notebooks 01, 02) and weight formats (notebooks 03, 04) each have one short name.
A result row always carries these names, so tables and plots from different notebooks line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import WorkbookError


@dataclass(frozen=True)
class AttentionVariant:
    """How attention is computed.

    ``implementation`` is what ``from_pretrained(attn_implementation=...)`` receives.
    ``sdpa_backend`` (for the ``sdpa-*`` names) pins PyTorch's SDPA to one kernel family with
    ``torch.nn.attention.sdpa_kernel``; ``None`` lets PyTorch choose per call.
    ``package`` is the pip package the path needs beyond PyTorch, if any.
    """

    name: str
    implementation: str
    sdpa_backend: str | None
    package: str | None
    description: str


ATTENTION: dict[str, AttentionVariant] = {
    v.name: v
    for v in [
        AttentionVariant(
            "eager",
            "eager",
            None,
            None,
            "plain PyTorch matmuls and softmax; materialises the full attention matrix",
        ),
        AttentionVariant(
            "sdpa",
            "sdpa",
            None,
            None,
            "torch.nn.functional.scaled_dot_product_attention; PyTorch picks the kernel",
        ),
        AttentionVariant(
            "sdpa-flash",
            "sdpa",
            "FLASH_ATTENTION",
            None,
            "SDPA pinned to its FlashAttention-2 kernels (fp16/bf16 on a GPU; a CPU has an fp32 flash kernel)",
        ),
        AttentionVariant(
            "sdpa-efficient",
            "sdpa",
            "EFFICIENT_ATTENTION",
            None,
            "SDPA pinned to the memory-efficient (xFormers-style) kernels",
        ),
        AttentionVariant(
            "sdpa-cudnn",
            "sdpa",
            "CUDNN_ATTENTION",
            None,
            "SDPA pinned to cuDNN's fused attention (recent NVIDIA GPUs)",
        ),
        AttentionVariant(
            "sdpa-math",
            "sdpa",
            "MATH",
            None,
            "SDPA's reference C++ path: the same algorithm as eager, no fusion",
        ),
        AttentionVariant(
            "flex",
            "flex_attention",
            None,
            None,
            "torch flex_attention: compiled attention with programmable masks",
        ),
        AttentionVariant(
            "fa2",
            "flash_attention_2",
            None,
            "flash-attn",
            "the flash-attn package's FlashAttention-2 kernels (NVIDIA GPUs, fp16/bf16)",
        ),
        AttentionVariant("fa3", "flash_attention_3", None, "flash-attn-3", "FlashAttention-3 (Hopper GPUs)"),
        AttentionVariant(
            "fa4", "flash_attention_4", None, "flash-attn-4", "FlashAttention-4 (Blackwell/Hopper GPUs)"
        ),
    ]
}


@dataclass(frozen=True)
class WeightFormat:
    """How the weights are stored.

    ``quant`` is ``None`` (plain floating point), ``"int8"`` (LLM.int8), ``"fp4"`` or ``"nf4"``.
    ``double_quant`` also quantizes the 4-bit quantization constants. ``dtype`` is the dtype of a plain format
    (``None`` for quantized ones: what stays unquantized takes the chapter's half precision).
    ``models.load(name, weights=...)`` turns a format into load options.
    """

    name: str
    quant: str | None
    double_quant: bool
    description: str

    @property
    def dtype(self) -> str | None:
        return self.name if self.quant is None else None


WEIGHTS: dict[str, WeightFormat] = {
    w.name: w
    for w in [
        WeightFormat("fp32", None, False, "32-bit floats"),
        WeightFormat("fp16", None, False, "16-bit floats"),
        WeightFormat("bf16", None, False, "bfloat16"),
        WeightFormat("int8", "int8", False, "LLM.int8(): int8 weights, fp16 outlier columns"),
        WeightFormat("fp4", "fp4", False, "4-bit float weights"),
        WeightFormat("nf4", "nf4", False, "4-bit NormalFloat weights"),
        WeightFormat("nf4-dq", "nf4", True, "NF4 with double quantization of the constants"),
    ]
}

QUANT_MODES = (None, "int8", "fp4", "nf4")


def weight_format(name: str) -> WeightFormat:
    """Look up a weight format by its workbook name, with a clear error for a typo."""
    if name not in WEIGHTS:
        raise WorkbookError(f"Unknown weight format {name!r}.", f"Use one of {list(WEIGHTS)}.")
    return WEIGHTS[name]


DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16``; a ``torch.dtype`` passes through."""
    if isinstance(name, torch.dtype):
        return name
    aliases = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "half": "fp16", "float": "fp32"}
    key = aliases.get(name, name)
    if key not in DTYPES:
        raise WorkbookError(f"Unknown dtype {name!r}.", f"Use one of {sorted(DTYPES)}.")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"``."""
    for k, v in DTYPES.items():
        if v == dtype:
            return k
    return str(dtype).replace("torch.", "")


def attention_variant(name: str) -> AttentionVariant:
    """Look up an attention path by its workbook name, with a clear error for a typo."""
    if name not in ATTENTION:
        raise WorkbookError(f"Unknown attention path {name!r}.", f"Use one of {list(ATTENTION)}.")
    return ATTENTION[name]
