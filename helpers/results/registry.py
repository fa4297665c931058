"""Every result table by name: the chapter that writes it, what it holds, its columns with units, its metadata.

``results.save`` refuses a name that is not here or a table without its key columns and metadata, so a table
found under ``results/<card>/`` always means what this file says. Notebooks that read another chapter's table
(07's closing table, 05's saved grid) and ``tools/headline.py`` find it here, never by a typed string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import WorkbookError

STORED_CARD = "nvidia-h100-80gb-hbm3"  # the card of the stored run that notebooks and the README quote


@dataclass(frozen=True)
class Table:
    """One result table. ``keys``: label columns every row has; ``units``: measured columns and their unit;
    ``meta``: metadata the saving chapter must record (token counts, model, ...); ``sol_label``: its name in
    the speed-of-light summary of notebook 07 (empty: not part of it)."""

    name: str
    chapter: str
    title: str
    keys: tuple[str, ...]
    units: dict = field(default_factory=dict)
    meta: tuple[str, ...] = ("profile",)
    sol_label: str = ""
    dated: bool = False  # saved as ``<name>_<YYYY-MM-DD>``, one file per run


_FORWARD = {
    "latency_ms": "ms (median)",
    "latency_p10_ms": "ms",
    "latency_p90_ms": "ms",
    "tokens_per_s": "tokens/s",
}
_FORWARD |= {"tflops": "TFLOP/s", "peak_alloc_gib": "GiB", "above_weights_gib": "GiB", "weights_gib": "GiB"}
_GENERATE = {"prefill_ms": "ms (median)", "decode_tok_s": "tokens/s", "decode_ms_per_token": "ms"}
_GENERATE |= {"decode_gbs": "GB/s", "sol_fraction_bandwidth": "share of measured bandwidth"}
_GENERATE |= {"peak_alloc_gib": "GiB", "weights_gib": "GiB"}
# quality of the trained model (helpers.quality): columns of quality.table, against a reference format
_QUALITY = {"perplexity": "per token", "ppl_increase_pct": "% over the reference", "top1_agreement_pct": "%"}
_QUALITY |= {"mean_kl_nats": "nats", "answers_correct": "of answers_asked", "footprint_mib": "MiB"}
_QUALITY_META = ("profile", "model", "reference", "window", "tokens_scored")
_LORA = ({"loss": "cross-entropy"}, ("profile", "model", "rank", "lr", "steps"))

TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "00_start_here",
            "00",
            "forward latency by attention path and sequence length",
            ("attention", "seq_len"),
            _FORWARD,
            ("profile", "model"),
        ),
        Table(
            "01_speedup",
            "01",
            "forward pass at a long sequence over batch sizes, per model and attention path",
            ("model", "attention", "batch_size"),
            _FORWARD,
            ("profile", "flash", "flash_label"),
            "forward pass (01)",
        ),
        Table(
            "01_padding",
            "01",
            "real tokens/s against the share of padding",
            ("seq_len", "pad_fraction", "attention"),
            _FORWARD,
            ("profile", "flash"),
        ),
        Table(
            "01_packing",
            "01",
            "padded, packed and concatenated layouts of the same sequences",
            ("layout",),
            {"latency_ms": "ms", "real_tokens_per_s": "tokens/s", "rel_error_vs_alone": "relative L2"},
        ),
        Table(
            "01_memory",
            "01",
            "peak memory of one forward pass against sequence length",
            ("seq_len", "attention"),
            _FORWARD,
            ("profile", "flash"),
        ),
        Table("01_backends", "01", "achieved TFLOP/s of every attention backend", ("attention",), _FORWARD),
        Table(
            "02_encoder",
            "02",
            "all-MiniLM-L6-v2: eager, SDPA and the fast path on padded text",
            ("batch_size", "path"),
            {"latency_ms": "ms", "tokens_per_s": "real tokens/s"},
            ("profile", "dtype"),
        ),
        Table(
            "02_opt_generate",
            "02",
            "OPT-350m generation with each SDPA kernel",
            ("attention",),
            _GENERATE,
            ("profile", "model"),
        ),
        Table(
            "03_sizes",
            "03",
            "size of the main decoder in six formats",
            ("weights",),
            {
                "footprint_gib": "GiB",
                "breakdown_gib": "GiB (4-bit scales included)",
                "bits_per_quantized_weight": "bits",
            },
            ("profile", "model"),
        ),
        Table(
            "03_speed",
            "03",
            "decode speed of bf16, nf4 and fp4 over batch sizes",
            ("weights", "batch_size"),
            _GENERATE,
            ("profile", "model", "prompt", "new_tokens"),
            "decode, 4-bit vs bf16 (03)",
        ),
        Table(
            "03_encoder_quality",
            "03",
            "MiniLM embeddings by weight format against fp32",
            ("weights",),
            {"min_cosine_vs_fp32": "cosine", "mean_cosine_vs_fp32": "cosine", "paraphrase_found": "share"},
        ),
        Table(
            "03_budget",
            "03",
            "a model over a memory budget: placement and speed",
            ("weights",),
            _GENERATE,
            ("profile", "model", "budget_gib"),
        ),
        Table("03_quality", "03", "smollm2-135m by weight format", ("weights",), _QUALITY, _QUALITY_META),
        Table("04_int8_quality", "04", "smollm2-135m, int8 options", ("weights",), _QUALITY, _QUALITY_META),
        Table(
            "04_sizes",
            "04",
            "size in fp32, bf16 and int8",
            ("weights",),
            {"footprint_gib": "GiB"},
            ("profile", "model"),
        ),
        Table(
            "04_speed",
            "04",
            "decode speed of bf16, int8 and nf4",
            ("weights", "batch_size"),
            _GENERATE,
            ("profile", "model", "prompt", "new_tokens"),
            "decode, int8 (04)",
        ),
        Table(
            "04_colab",
            "04",
            "the 2023 guide's Colab demos under a memory budget",
            ("model",),
            _GENERATE,
            ("profile", "budget_gib"),
        ),
        Table(
            "05_grid",
            "05",
            "every attention path x weight format: prefill, decode, memory",
            ("weights", "attention", "prompt_len", "batch_size"),
            _GENERATE,
            ("profile", "model", "new_tokens"),
            "combinations (05)",
        ),
        Table(
            "06_training",
            "06",
            "LoRA training loss per step",
            ("step",),
            {"loss": "cross-entropy", "tokens_per_s": "tokens/s"},
            ("profile", "model", "rank", "lr", "batch", "seq_len"),
        ),
        Table("06_trained_lora", "06", "LoRA and QLoRA on smollm2-135m", ("setup", "step"), *_LORA),
        Table(
            "06_training_margin",
            "06",
            "the training recipe over adapter seeds, CPU threads, learning rates and kernel families",
            ("setup", "seed", "lr", "threads", "capability"),
            {"given_back_after": "share of the sentences", "loss_last3": "cross-entropy", "seconds": "s"},
            ("schedule",),
        ),
        Table(
            "06_padding_packing",
            "06",
            "training step cost, padded against packed",
            ("layout",),
            {"step_ms": "ms", "real_tokens_per_s": "tokens/s", "pad_share": "share"},
            ("profile", "model", "batch", "seq_len"),
        ),
        Table(
            "06_memory",
            "06",
            "QLoRA, LoRA and full fine-tuning: memory and step time",
            ("setup", "weights"),
            {"peak_alloc_gib": "GiB", "step_ms": "ms", "real_tokens_per_s": "tokens/s"},
            ("profile", "model", "batch", "seq_len"),
        ),
        Table(
            "07_decode",
            "07",
            "batch-1 decode by mode and weight format",
            ("weights", "mode"),
            _GENERATE,
            ("profile", "model", "prompt", "new_tokens"),
            "decode modes (07)",
        ),
        Table(
            "07_prefill",
            "07",
            "prefill TFLOP/s over prompt lengths",
            ("seq_len",),
            _FORWARD,
            ("profile", "model", "attention"),
            "prefill (07)",
        ),
        Table(
            "07_batches",
            "07",
            "decode tokens/s over batch sizes",
            ("batch_size",),
            _GENERATE,
            ("profile", "model", "prompt"),
        ),
        Table(
            "multi_gpu",
            "03",
            "bf16, int8 and nf4 spread over several GPUs",
            ("setup",),
            _GENERATE,
            ("model", "gpus"),
        ),
        Table(
            "quality_smollm2",
            "tools",
            "the trained smollm2-135m per weight format: perplexity, agreement with bf16, answers",
            ("weights",),
            _QUALITY,
            ("model", "reference", "corpus", "tokens_scored"),
        ),
        Table(
            "helpers_exercise_environment",
            "tools",
            "the environment report of the exercise run",
            ("key",),
            {},
            (),
        ),
        Table(
            "helpers_exercise_forward", "tools", "forward pass per attention path", ("attention",), _FORWARD
        ),
        Table("helpers_exercise_generate", "tools", "bf16 generation", ("weights",), _GENERATE),
        Table(
            "reproduce",
            "tools",
            "the headline figures measured again by the protocol, against the stored run",
            ("figure", "table", "metric"),
            {"stored": "stored run", "new": "median now (protocol)", "drift": "new / stored - 1"},
            ("profile", "stored_card", "protocol"),
            dated=True,
        ),
        Table(
            "run_all",
            "tools",
            "each notebook's time in one run of tools/run_notebooks.py, one-time builds and compiles apart",
            ("notebook", "status"),
            {"seconds": "s", "one_time_s": "s (builds while it ran)", "chapter_s": "s (its own)"},
            ("profile", "started"),
            dated=True,
        ),
        Table("helpers_exercise_quant", "tools", "generation per bitsandbytes format", ("quant",), _GENERATE),
    ]
}


def table(name: str) -> Table:
    """The registry entry of ``name`` (a dated table's ``<name>_<YYYY-MM-DD>`` too); an unknown name gets the list."""
    base = re.sub(r"_\d{4}-\d{2}-\d{2}$", "", name)
    if name not in TABLES and base in TABLES and TABLES[base].dated:
        return TABLES[base]
    if name not in TABLES:
        raise WorkbookError(
            f"No result table is registered as {name!r}.",
            f"Use one of {list(TABLES)}, or register a new table in helpers/results/registry.py.",
        )
    return TABLES[name]


def check(name: str, columns, meta: dict) -> Table:
    """Refuse a table whose key columns or metadata are missing (what ``results.save`` calls)."""
    t = table(name)
    missing = [k for k in t.keys if k not in set(columns)]
    if missing:
        raise WorkbookError(
            f"Table {name!r} lacks its key columns {missing}.",
            f"Give every row {list(t.keys)} (see helpers/results/registry.py).",
        )
    absent = [k for k in t.meta if k not in meta]
    if absent:
        raise WorkbookError(
            f"Table {name!r} is saved without metadata {absent}.",
            f"Pass meta={{{', '.join(repr(k) + ': ...' for k in absent)}}} to results.save.",
        )
    return t


def sol_tables() -> dict[str, str]:
    """Tables that count in the speed-of-light summary (notebook 07), with their labels."""
    return {t.name: t.sol_label for t in TABLES.values() if t.sol_label}


def of_chapter(chapter: str) -> list[Table]:
    """The tables one chapter writes."""
    return [t for t in TABLES.values() if t.chapter == chapter]
