"""The 2023 guide's calls, translated to today's API (notebooks 01-04 show each one).

transformers 5 removed ``use_flash_attention_2=``, ``load_in_4bit=``/``load_in_8bit=`` (TypeError
now) and ``to_bettertransformer()``; optimum 2 removed ``optimum.bettertransformer``; PyTorch
deprecated ``torch.backends.cuda.sdp_kernel``. Each function here takes the old form, does the
current equivalent, and says what it changed in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import WorkbookError
from ..machine.hardware import device

_BNB_4BIT_KEYS = (
    "bnb_4bit_compute_dtype",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage",
)
_BNB_8BIT_KEYS = (
    "llm_int8_threshold",
    "llm_int8_skip_modules",
    "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight",
)


@dataclass
class Translation:
    """Today's keyword arguments for ``from_pretrained`` and what changed, line by line."""

    kwargs: dict
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.notes) or "nothing to change"

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {n}" for n in self.notes) or "nothing to change"


def translate(fallback: bool = True, **old) -> Translation:
    """Turn 2023-era ``from_pretrained`` kwargs into today's.

    ``use_flash_attention_2=True`` -> ``attn_implementation="flash_attention_2"``; when the
    flash-attn package is missing and ``fallback`` is on, ``"sdpa"`` instead (PyTorch's SDPA, which picks
    one of its kernels per call: FlashAttention-2, cuDNN's or the memory-efficient one), and the notes say so.
    ``load_in_4bit``/``load_in_8bit`` (+ ``bnb_4bit_*``/``llm_int8_*``) -> ``quantization_config``.
    ``torch_dtype`` -> ``dtype``. Unrelated kwargs pass through unchanged.
    """
    from transformers import BitsAndBytesConfig  # heavy: imported on first use
    from transformers.utils import is_flash_attn_2_available  # heavy: imported on first use

    kw = dict(old)
    notes: list[str] = []
    if kw.get("load_in_4bit") and kw.get("load_in_8bit"):
        raise WorkbookError(
            "load_in_4bit and load_in_8bit are both set; a model is quantized one way.",
            "Keep one: load_in_4bit=True (fp4/nf4) or load_in_8bit=True (LLM.int8).",
        )
    if "torch_dtype" in kw:
        kw["dtype"] = kw.pop("torch_dtype")
        notes.append("torch_dtype= -> dtype= (renamed in transformers 5)")
    if "use_flash_attention_2" in kw:
        wanted = kw.pop("use_flash_attention_2")
        if wanted:
            impl = "flash_attention_2"
            if not is_flash_attn_2_available() and fallback:
                impl = "sdpa"
                notes.append(
                    "use_flash_attention_2=True -> attn_implementation='sdpa': the flash-attn package "
                    "is not installed here, so PyTorch's SDPA runs instead (on a recent NVIDIA GPU in "
                    "fp16/bf16 it picks one of its FlashAttention-2, cuDNN and memory-efficient kernels per "
                    "call; pin FlashAttention-2 with attention='sdpa-flash', or install flash-attn-4 for 'fa4')"
                )
            else:
                notes.append("use_flash_attention_2=True -> attn_implementation='flash_attention_2'")
            kw["attn_implementation"] = impl
        else:
            notes.append("use_flash_attention_2=False -> dropped (the default attention is already 'sdpa')")
    for bits, keys in ((4, _BNB_4BIT_KEYS), (8, _BNB_8BIT_KEYS)):
        flag = f"load_in_{bits}bit"
        if flag in kw:
            on = kw.pop(flag)
            extra = {k: kw.pop(k) for k in keys if k in kw}
            if on:
                kw["quantization_config"] = BitsAndBytesConfig(**{flag: True}, **extra)
                moved = f" (with {', '.join(extra)} moved inside)" if extra else ""
                notes.append(f"{flag}=True -> quantization_config=BitsAndBytesConfig({flag}=True){moved}")
            else:
                notes.append(f"{flag}=False -> dropped")
    return Translation(kw, notes)


def from_pretrained(model_id: str, auto_class=None, **old):
    """``AutoModelForCausalLM.from_pretrained`` that accepts the 2023 kwargs; returns (model, Translation)."""
    from transformers import AutoModelForCausalLM  # heavy: imported on first use

    t = translate(**old)
    model = (auto_class or AutoModelForCausalLM).from_pretrained(model_id, **t.kwargs)
    return model, t


def to_bettertransformer(model):
    """What ``model.to_bettertransformer()`` became: switch attention to native SDPA in place.

    BetterTransformer swapped modules for PyTorch's fused fast path; transformers now calls
    ``scaled_dot_product_attention`` itself, so one ``set_attn_implementation("sdpa")`` is all.
    Returns (model, Translation).
    """
    before = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    return model, Translation(
        {},
        [
            f"to_bettertransformer() -> model.set_attn_implementation('sdpa') "
            f"(was {before!r}); or load with attn_implementation='sdpa', the default"
        ],
    )


def reverse_bettertransformer(model):
    """What ``reverse_bettertransformer()`` became: nothing. The modules were never swapped, so
    ``save_pretrained`` writes the canonical checkpoint as it is. Returns (model, Translation)."""
    return model, Translation(
        {}, ["reverse_bettertransformer() -> not needed: save_pretrained() works directly"]
    )


_BACKENDS = (
    ("enable_flash", "FLASH_ATTENTION"),
    ("enable_mem_efficient", "EFFICIENT_ATTENTION"),
    ("enable_math", "MATH"),
    ("enable_cudnn", "CUDNN_ATTENTION"),
)


def sdp_kernel(
    enable_flash: bool = True,
    enable_math: bool = True,
    enable_mem_efficient: bool = True,
    enable_cudnn: bool = True,
):
    """What ``torch.backends.cuda.sdp_kernel(...)`` became: ``torch.nn.attention.sdpa_kernel([...])``.

    Returns (context manager, Translation). With every backend off it refuses, as PyTorch would
    only fail later with "No available kernel".
    """

    flags = dict(
        enable_flash=enable_flash,
        enable_mem_efficient=enable_mem_efficient,
        enable_math=enable_math,
        enable_cudnn=enable_cudnn,
    )
    chosen = [name for arg, name in _BACKENDS if flags[arg]]
    if not chosen:
        raise WorkbookError(
            "Every SDPA backend is disabled; no kernel could run.",
            "Enable at least one, e.g. enable_math=True as a fallback.",
        )
    args = ", ".join(f"SDPBackend.{c}" for c in chosen)
    old = ", ".join(f"{k}={v}" for k, v in flags.items())
    note = f"torch.backends.cuda.sdp_kernel({old}) -> torch.nn.attention.sdpa_kernel([{args}])"
    if device().type == "cpu":
        note += " (on this CPU only the math and flash CPU kernels exist)"
    return sdpa_kernel([getattr(SDPBackend, c) for c in chosen]), Translation({}, [note])


def old_api_fails(model_path: str) -> dict[str, str]:
    """Call the removed kwargs for real and return {kwarg: the error transformers raises today}."""
    from transformers import AutoModelForCausalLM  # heavy: imported on first use

    out = {}
    for kw in ({"use_flash_attention_2": True}, {"load_in_4bit": True}, {"load_in_8bit": True}):
        key = next(iter(kw))
        try:
            AutoModelForCausalLM.from_pretrained(model_path, **kw)
            out[key] = "accepted (no error)"
        except TypeError as e:
            out[key] = f"TypeError: {e}"
    from transformers import PreTrainedModel  # heavy: imported on first use

    out["to_bettertransformer"] = (
        "still exists"
        if hasattr(PreTrainedModel, "to_bettertransformer")
        else "AttributeError: PreTrainedModel has no to_bettertransformer"
    )
    return out
