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

from . import catalog, checkpoints, probes, profiles, variants
from .errors import WorkbookError
from .hardware import device, device_info, free_memory, sync
from .verification import Verification, quantized_layers, verify  # noqa: F401 - part of models' API
from .workload import head_dim

# --------------------------------------------------------------------------- request and checks


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

    @property
    def weights(self) -> str:
        """The weight-format name: ``bf16``, ``int8``, ``nf4``, ``nf4-dq``, ..."""
        if self.quant is None:
            return self.dtype
        return self.quant + ("-dq" if self.double_quant else "")


def check_request(req: Request, cfg=None, model_class=None) -> None:
    """Refuse, with the fix named, any combination this machine or architecture cannot run."""
    dev = device()
    dtype = variants.dtype_of(req.dtype)
    v = variants.attention_variant(req.attention)
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
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
    if v.package and dev.type != "cuda":
        return "On a CPU use attention='sdpa' (PyTorch's fused CPU kernels) or 'eager'."
    if dtype == torch.float32 and (v.package or v.sdpa_backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION")):
        return "Load the model with dtype='bf16' (or 'fp16'): flash kernels have no float32 version."
    if v.package:
        return (
            f"pip install {v.package} (no binary wheels: it builds from source, which takes hours), "
            "or use attention='sdpa-flash', PyTorch's built-in FlashAttention-2 kernels."
        )
    return "Use attention='sdpa' and let PyTorch pick a kernel that runs here."


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
        check_request(req, self.model.config, type(self.model))
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
        """The labels a result row carries: model, weights, attention, dtype."""
        r = self.request
        return {"model": r.model, "weights": r.weights, "attention": r.attention, "dtype": r.dtype}


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


def request(
    name: str,
    *,
    weights: str | None = None,
    dtype: str | None = None,
    attention: str = "sdpa",
    quant: str | None = None,
    double_quant: bool = False,
    **options,
) -> Request:
    """The ``Request`` for ``load``'s arguments. ``weights`` (a name of ``variants.WEIGHTS``: ``bf16``, ``int8``,
    ``nf4-dq``, ...) sets dtype and quantization in one word; ``dtype`` is then the dtype of what stays
    unquantized (default: the hardware profile's half precision)."""
    if weights is not None:
        if quant is not None:
            raise WorkbookError(
                f"weights={weights!r} and quant={quant!r} both given.",
                "Give one: weights='nf4', or quant='nf4' with a dtype.",
            )
        fmt = variants.weight_format(weights)
        dtype = fmt.dtype or dtype or profiles.profile().half
        quant, double_quant = (
            fmt.quant,
            fmt.double_quant or double_quant,
        )  # weights="nf4", double_quant=True: nf4-dq
    if options.get("int8_skip_modules") is not None:
        options["int8_skip_modules"] = tuple(options["int8_skip_modules"])
    return Request(name, dtype or profiles.profile().dtype, attention, quant, double_quant, **options)


def load(
    name: str,
    *,
    weights: str | None = None,
    dtype: str | None = None,
    attention: str = "sdpa",
    quant: str | None = None,
    double_quant: bool = False,
    compute_dtype: str | None = None,
    device_map=None,
    max_memory: dict | None = None,
    int8_threshold: float | None = None,
    int8_skip_modules=None,
    int8_fp32_cpu_offload: bool = False,
    strict: bool = False,
) -> Loaded:
    """Load a catalog model, local folder or hub id through ``from_pretrained`` and verify it.

    weights: a weight-format name (``bf16``, ``int8``, ``fp4``, ``nf4``, ``nf4-dq``; see ``request``), or give
    dtype (``fp32``/``fp16``/``bf16``; default: the hardware profile's) and quant (``int8``/``fp4``/``nf4``)
    apart. attention: a name from ``variants.ATTENTION``. ``double_quant`` and ``compute_dtype`` refine 4-bit;
    ``int8_threshold``, ``int8_skip_modules`` and ``int8_fp32_cpu_offload`` refine LLM.int8 (notebook 04).
    ``device_map``/``max_memory`` go to accelerate as they are. strict: raise if verification finds an option
    not in effect (otherwise it is reported).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # heavy: imported on first load

    req = request(
        name,
        weights=weights,
        dtype=dtype,
        attention=attention,
        quant=quant,
        double_quant=double_quant,
        compute_dtype=compute_dtype,
        device_map=device_map,
        max_memory=max_memory,
        int8_threshold=int8_threshold,
        int8_skip_modules=int8_skip_modules,
        int8_fp32_cpu_offload=int8_fp32_cpu_offload,
    )
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
    check_request(req, cfg, model_class)
    dev = device()
    kwargs = dict(
        dtype=variants.dtype_of(req.dtype),
        attn_implementation=variants.attention_variant(attention).implementation,
        device_map=device_map if device_map is not None else str(dev),
    )
    if req.quant:
        kwargs["quantization_config"] = bnb_config(req)
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    t0 = time.perf_counter()
    model = auto.from_pretrained(path, **kwargs)
    model.eval()
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
