"""What the reader asks a model to be, checked before anything loads: dtype, attention path, weight format and
bitsandbytes options (``Request``), refused with the fix named when this machine or architecture cannot run it.

``models.load`` builds its request here (``Request.of``); notebook 04 passes the LLM.int8 options through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import variants
from ..errors import WorkbookError
from ..machine import probes, profiles
from ..machine.hardware import device, device_info
from . import catalog
from .architectures import head_dim


@dataclass
class Request:
    """What the reader asked for. ``attention`` and ``weights`` use the names of ``variants``."""

    model: str
    dtype: str
    attention: str
    quant: str | None = None
    double_quant: bool = False
    compute_dtype: str | None = None
    device_map: object = None
    max_memory: dict | None = None
    int8_threshold: float | None = None  # llm_int8_threshold (bitsandbytes' default 6.0 when None)
    int8_skip_modules: tuple[str, ...] | None = None  # llm_int8_skip_modules: kept in high precision
    int8_fp32_cpu_offload: bool = False  # llm_int8_enable_fp32_cpu_offload: what spills to the CPU stays fp32

    @classmethod
    def of(cls, name: str, *, weights: str | None = None, **asked) -> Request:
        """The request for ``models.load``'s keywords, checked at the door. ``weights`` (a name of
        ``variants.WEIGHTS``: ``bf16``, ``int8``, ``nf4-dq``, ...) sets dtype and quantization in one word; ``dtype``
        is then the dtype of what stays unquantized (default: the hardware profile's half precision). Every other
        keyword is a field of ``Request``; an unknown one is refused with the names that exist."""
        fields = [f for f in cls.__dataclass_fields__ if f != "model"]
        unknown = sorted(set(asked) - set(fields))
        if unknown:
            raise WorkbookError(
                f"models.load got unknown option(s) {unknown}.", f"Use weights= or one of {fields}."
            )
        if not isinstance(name, str) or not name:
            raise WorkbookError(
                f"model={name!r} is not a model name.", "Name a catalog model, e.g. 'llama-2-7b'."
            )
        quant, double_quant, dtype = (
            asked.pop("quant", None),
            asked.pop("double_quant", False),
            asked.pop("dtype", None),
        )
        if weights is not None:
            if quant is not None:
                raise WorkbookError(
                    f"weights={weights!r} and quant={quant!r} both given.",
                    "Give one: weights='nf4', or quant='nf4' with a dtype.",
                )
            fmt = variants.weight_format(weights)
            dtype = fmt.dtype or dtype or profiles.pick().half
            quant, double_quant = (
                fmt.quant,
                fmt.double_quant or double_quant,
            )  # weights="nf4", double_quant=True
        _check_options(asked)
        return cls(
            name,
            dtype or profiles.pick().dtype,
            asked.pop("attention", "sdpa"),
            quant,
            double_quant,
            **asked,
        )

    @property
    def weights(self) -> str:
        """The weight-format name: ``bf16``, ``int8``, ``nf4``, ``nf4-dq``, ..."""
        if self.quant is None:
            return self.dtype
        return self.quant + ("-dq" if self.double_quant else "")


def refuse_unrunnable(req: Request, cfg=None, model_class=None) -> None:
    """Refuse, with the fix named, any combination this machine or architecture cannot run."""
    dev = device()
    dtype = variants.dtype_of(req.dtype)
    v = variants.attention_variant(req.attention)
    if (
        dev.type == "cuda"
        and dtype == torch.bfloat16
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise WorkbookError(
            f"{device_info().name} has no bf16 support.",
            "Use dtype='fp16' (the profile picks it for you on such cards).",
        )
    if model_class is not None and not catalog.supports(model_class, v):
        ok = [n for n, a in variants.ATTENTION.items() if catalog.supports(model_class, a)]
        raise WorkbookError(
            f"{model_class.__name__} has no {v.implementation} attention in transformers.",
            f"Use attention={ok[0]!r}" + (f" (this architecture supports {ok})" if len(ok) > 1 else "") + ".",
        )
    compute = variants.dtype_of(req.compute_dtype) if req.compute_dtype else dtype
    attn_dtype = compute if req.quant in ("fp4", "nf4") else dtype
    problem = probes.attention_problem(req.attention, attn_dtype, dev, head_dim(cfg) if cfg else 64)
    if problem:
        raise WorkbookError(
            f"Attention {req.attention!r} cannot run here: {problem}.", _attention_fix(v, dev, attn_dtype)
        )
    if req.quant is not None:
        if req.quant not in variants.QUANT_MODES:
            raise WorkbookError(
                f"Unknown quantization {req.quant!r}.",
                "Use quant=None, 'int8', 'fp4' or 'nf4' (one of them: 4-bit and 8-bit exclude each other).",
            )
        problem = probes.quantization_problem(req.quant, dev)
        if problem:
            fix = (
                "pip install bitsandbytes"
                if "not installed" in problem
                else "Use quant=None, or a machine where bitsandbytes supports this device."
            )
            raise WorkbookError(f"Quantization {req.quant!r} cannot run here: {problem}.", fix)
    if req.double_quant and req.quant not in ("fp4", "nf4"):
        raise WorkbookError(
            "double_quant applies to 4-bit weights only.", "Use quant='nf4' or 'fp4', or double_quant=False."
        )
    int8_options = req.int8_threshold is not None or req.int8_skip_modules or req.int8_fp32_cpu_offload
    if int8_options and req.quant != "int8":
        raise WorkbookError(
            "int8_threshold, int8_skip_modules and int8_fp32_cpu_offload apply to int8 weights only.",
            "Use weights='int8' (quant='int8'), or leave those options unset.",
        )
    if req.int8_threshold is not None and req.int8_threshold < 0:
        raise WorkbookError(
            f"int8_threshold={req.int8_threshold} is negative.",
            "Use 6.0 (the paper's default), 0 to quantize every feature, or another positive value.",
        )


def _attention_fix(v: variants.AttentionVariant, dev: torch.device, dtype: torch.dtype) -> str:
    if dev.type != "cuda" and (v.package or v.sdpa_backend in ("CUDNN_ATTENTION", "EFFICIENT_ATTENTION")):
        return "On a CPU use attention='sdpa' (PyTorch's fused CPU kernels) or 'eager'."
    if dtype == torch.float32 and (v.package or v.sdpa_backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION")):
        return "Load the model with dtype='bf16' (or 'fp16'): flash kernels have no float32 version."
    if v.package:
        return (
            f"pip install {v.package} (no binary wheels: it builds from source, which takes hours), "
            "or use attention='sdpa-flash', PyTorch's built-in FlashAttention-2 kernels."
        )
    return "Use attention='sdpa' and let PyTorch pick a kernel that runs here."


def bnb_config(req: Request):
    """The ``BitsAndBytesConfig`` for a request (``None`` without quantization)."""
    from transformers import BitsAndBytesConfig  # transformers is heavy: imported on first load

    if req.quant is None:
        return None
    if req.quant == "int8":
        extra = {} if req.int8_threshold is None else {"llm_int8_threshold": req.int8_threshold}
        if req.int8_skip_modules:
            extra["llm_int8_skip_modules"] = list(req.int8_skip_modules)
        return BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=req.int8_fp32_cpu_offload, **extra
        )
    compute = variants.dtype_of(req.compute_dtype or req.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=req.quant,
        bnb_4bit_use_double_quant=req.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def _check_options(asked: dict) -> None:
    """Types and ranges of the bitsandbytes and placement options, refused with the fix named (in place)."""
    threshold = asked.get("int8_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise WorkbookError(
            f"int8_threshold={threshold!r} is not a number.",
            "Use a number of standard deviations: 6.0 (the paper's default), 0 to quantize every feature.",
        )
    skip = asked.get("int8_skip_modules")
    if isinstance(skip, str):
        asked["int8_skip_modules"] = (skip,)  # one module name, not its letters
    elif skip is not None:
        if not all(isinstance(m, str) for m in skip):
            raise WorkbookError(
                f"int8_skip_modules={skip!r} holds something other than module names.",
                "Use a list of module names, e.g. ['lm_head'].",
            )
        asked["int8_skip_modules"] = tuple(skip)
    where = asked.get("device_map")
    if isinstance(where, str) and where.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbookError(
            f"device_map={where!r} on a machine without a CUDA GPU.",
            "Leave device_map=None (the model goes where the device is) or use device_map='auto'.",
        )
