"""Load and verify models (notebook 00 walks through it).

``load("llama-2-7b", weights="nf4", attention="sdpa")`` goes through the real ``from_pretrained`` path (the
checkpoint comes from ``checkpoints.resolve``); bitsandbytes options travel in the ``Request``, so every model
of every chapter is loaded here and checked by ``verify`` against what was asked for.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .. import variants
from ..errors import WorkbookError
from ..machine import flash4
from ..machine.hardware import device, free_memory, sync
from . import catalog, checkpoints
from .request import Request, bnb_config, refuse_unrunnable
from .verification import Verification, verify

# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """A loaded model with what was asked for, what is in effect, and how long loading took."""

    model: object
    tokenizer: object
    request: Request
    verification: Verification
    source: str
    load_s: float

    @property
    def name(self) -> str:
        return self.request.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def context(self):
        """The context every forward pass runs in: pins the SDPA backend of ``sdpa-*`` paths."""
        v = variants.attention_variant(self.request.attention)
        if v.sdpa_backend is None:
            return contextlib.nullcontext()
        return sdpa_kernel([getattr(SDPBackend, v.sdpa_backend)])

    def footprint_gib(self) -> float:
        """Bytes of parameters and buffers (transformers' ``get_memory_footprint``), in GiB."""
        return self.model.get_memory_footprint() / 2**30

    def switch_attention(self, attention: str) -> Loaded:
        """Change the attention path in place (no reload), after the same checks as ``load``.

        Architectures whose attention classes are fixed at load time (Falcon, for one) cannot switch:
        that raises a ``WorkbookError`` and the model keeps its attention (``OneAtATime`` reloads).
        """
        req = Request(**{**self.request.__dict__, "attention": attention})
        refuse_unrunnable(req, self.model.config, type(self.model))
        impl = variants.attention_variant(attention).implementation
        if impl != self.model.config._attn_implementation:
            if not cannot_switch_attention(self):
                self.model.set_attn_implementation(impl)
            if self.model.config._attn_implementation != impl:
                raise WorkbookError(
                    f"{type(self.model).__name__} cannot change its attention in place.",
                    f"Load it again with attention={attention!r} (models.OneAtATime does this).",
                )
        self.request = req
        self.verification = verify(self.model, req)
        return self

    def describe(self) -> dict:
        """The labels a result row carries: model, weights, attention, dtype; for ``fa4`` also the package and
        version that ran (``kernel_package``)."""
        r = self.request
        row = {"model": r.model, "weights": r.weights, "attention": r.attention, "dtype": r.dtype}
        return {**row, **(flash4.describe() if r.attention == "fa4" else {})}


def load(name: str, *, strict: bool = False, **asked) -> Loaded:
    """Load a catalog model, local folder or hub id through ``from_pretrained`` and verify it.

    The keywords are a ``Request``'s (checked by ``Request.of`` before anything loads): ``weights``, a
    weight-format name (``bf16``, ``int8``, ``fp4``, ``nf4``, ``nf4-dq``), or ``dtype`` (``fp32``/``fp16``/``bf16``;
    default: the hardware profile's) and ``quant`` (``int8``/``fp4``/``nf4``) apart; ``attention``, a name from
    ``variants.ATTENTION`` (default ``sdpa``); ``double_quant`` and ``compute_dtype`` refine 4-bit;
    ``int8_threshold``, ``int8_skip_modules`` and ``int8_fp32_cpu_offload`` refine LLM.int8 (notebook 04);
    ``device_map``/``max_memory`` go to accelerate as they are. strict: raise if verification finds an option
    not in effect (otherwise it is reported).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # heavy: imported on first load

    req = Request.of(name, **asked)
    path, source = checkpoints.resolve(name)
    try:
        cfg = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise WorkbookError(
            f"Could not read a model config for {name!r} ({str(e).splitlines()[0]}).",
            "Check the name, or use a catalog name: this machine may have no hub access.",
        ) from e
    auto = AutoModel if source == "encoder" else catalog.auto_class(cfg)
    model_class = catalog.model_class(cfg) if source != "encoder" else None
    refuse_unrunnable(req, cfg, model_class)
    dev = device()
    kwargs = dict(
        dtype=variants.dtype_of(req.dtype),
        attn_implementation=variants.attention_variant(req.attention).implementation,
        device_map=req.device_map if req.device_map is not None else str(dev),
    )
    if req.quant:
        kwargs["quantization_config"] = bnb_config(req)
    if req.max_memory is not None:
        kwargs["max_memory"] = req.max_memory
    t0 = time.perf_counter()
    model = auto.from_pretrained(path, **kwargs)
    model.eval()
    if req.quant in ("fp4", "nf4"):
        keep_4bit_layout_on_cpu(model)
    sync(dev)
    load_s = time.perf_counter() - t0
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    ver = verify(model, req)
    if strict and not ver.ok:
        raise WorkbookError(
            "Not in effect: " + "; ".join(ver.problems), "Check the request against the verification table."
        )
    return Loaded(model, tokenizer, req, ver, source, load_s)


def keep_4bit_layout_on_cpu(model) -> int:
    """Keep bitsandbytes' 4-bit layers on a CPU in the layout they were quantized in; returns how many were set.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weights in place at its first forward pass
    in eval mode without gradients (``Linear4bit.support_avx512bf16_for_cpu``), for a fused kernel that computes in
    bf16. From then on every forward of that layer takes the fused kernel, in training too, and that kernel has no
    backward (PyTorch warns: "bitsandbytes::gemv_4bit: an autograd kernel was not registered"): after one
    ``generate`` no gradient flows through the frozen 4-bit layers, so QLoRA trains on almost
    nothing (measured on SmolLM2-135M: the gradient norm of a q_proj adapter fell from 0.62 to 0.0), and its inverse
    repacking, which ``state_dict`` runs, returns wrong weights (the loss went from 7.1 to 17.0). The workbook turns
    the repacking off, so on every CPU a 4-bit layer dequantizes and multiplies in its compute dtype, trains after
    inference and saves correctly, and a CPU's figures do not depend on whether it has AVX512-BF16 (notebook 06).
    Layers on a GPU are left alone (the flag is only read for CPU inputs)."""
    n = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def cannot_switch_attention(loaded: Loaded) -> bool:
    """True for models whose attention is fixed at load time (transformers' AttentionInterface not used)."""
    return not loaded.model._can_set_attn_implementation()


class OneAtATime:
    """Keeps one model loaded: ``slot.get(name, **options)`` reuses it while name and options match,
    otherwise frees it and loads the new one (7B models do not fit side by side on every card)."""

    def __init__(self):
        self.loaded: Loaded | None = None
        self._key = None

    def get(self, name: str, **options) -> Loaded:
        attention = options.pop("attention", "sdpa")
        key = (name, tuple(sorted(options.items(), key=lambda kv: kv[0])))
        if self._key != key:
            self.release()
            self.loaded = load(name, attention=attention, **options)
            self._key = key
        elif self.loaded.request.attention != attention:
            try:
                self.loaded.switch_attention(attention)
            except WorkbookError:
                if cannot_switch_attention(self.loaded):
                    self.release()
                    return self.get(name, attention=attention, **options)
                raise
        return self.loaded

    def release(self) -> None:
        unload(self.loaded)
        self.loaded, self._key = None, None


class _Unloaded:
    """Stands in for a model after ``unload``: any use says so, with the fix, instead of a bare AttributeError."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        raise WorkbookError(
            f"{self._name!r} was unloaded (models.unload) to free memory.",
            "Load it again with models.load, or keep it in a models.OneAtATime slot that reloads it.",
        )


def unload(loaded: Loaded | None) -> None:
    """Drop a loaded model and free its memory; using it afterwards raises a ``WorkbookError``."""
    if loaded is not None:
        loaded.model = _Unloaded(loaded.request.model)
    free_memory()
