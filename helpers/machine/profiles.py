"""Sizes chosen from the hardware: one notebook is a CPU test in CI and a real benchmark on a GPU.

Each ``Profile`` holds the shared sizes and a table per chapter (``Profile.chapters["05"]``); notebooks take
them through ``environment.chapter`` and never choose sizes for themselves.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field

import pandas as pd

from ..errors import WorkbookError
from . import budgets
from .hardware import device_info, gpu_memory_cap


@dataclass
class Profile:
    """Sizes chosen from the hardware, so one notebook is a CPU test in CI and a GPU benchmark.

    Override with ``pick("cpu")`` or the environment variable ``WORKBOOK_PROFILE``.
    """

    name: str
    decoder: str  # catalog name of the main decoder model
    small_decoder: str  # a smaller decoder for sweeps that need many loads
    dtype: str
    seq_lens: list[int]
    batch_sizes: list[int]
    long_seq: int
    new_tokens: int
    decoders: list[str] = field(default_factory=list)  # the architectures a comparison runs on
    memory_seq_lens: list[int] = field(default_factory=list)  # up to (and past) where eager attention fits
    short_seq: int = 512
    half: str = "bf16"  # what "16-bit weights" means here: bf16, or fp16 on cards without bf16
    # the measuring protocol's settings (``protocol.Protocol``) for the chapters' sweeps of many points: each
    # point warmed up, then generations until every median is known to +-2% or the budget (seconds) is spent
    protocol: dict = field(
        default_factory=lambda: {"warmup": 2, "min_reps": 3, "max_reps": 20, "budget_s": 10.0}
    )
    chapters: dict[str, dict] = field(
        default_factory=dict
    )  # per-chapter sizes: environment.chapter reads them
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        shown = {k: v for k, v in asdict(self).items() if k != "chapters"}
        return pd.DataFrame([{k: str(v) for k, v in shown.items()}]).T.rename(columns={0: "value"})


# Per-chapter sizes. Keys are what the chapter's parameters cell names (lower case); every chapter also gets
# the profile's shared fields (decoder, dtype, half, seq_lens, ...). One table per profile, nothing in notebooks.
# The trained model (smollm2-135m) has sizes of its own: quality_* (windows of the corpus scored, their length in
# tokens, the reference's dtype, fixed questions asked), answer_tokens (greedy tokens per answer), trained_*.


def _nf4_compute(dtype: str) -> dict:
    """nf4 weights unpacked to another compute dtype, as one ``quality.table`` format."""
    return {"label": f"nf4, {dtype} compute", "weights": "nf4", "compute_dtype": dtype}


_CPU_QUALITY = dict(
    quality_windows=2, quality_window=128, quality_dtype="fp32", quality_prompts=1, answer_tokens=10
)
_CPU_CHAPTERS = {
    "00": dict(measure_peaks=True, answer_tokens=16),
    "01": dict(
        measure_peaks=True,
        models=["llama-2-7b-tiny", "falcon-7b-tiny"],
        batch_sizes=[1, 2, 4],
        pad_fractions=[0.0, 0.1, 0.25, 0.5],
        trained_tokens=128,
    ),
    "02": dict(
        measure_peaks=False,
        encoder_dtype="fp32",
        encoder_batches=[8, 32],
        opt="opt-350m-tiny",
        opt_dtype="fp32",
        # a CPU has no flash kernel for float32 SDPA to refuse; its memory-efficient one refuses instead
        refusing_backend="EFFICIENT_ATTENTION",
        trained_dtype="fp32",
        answer_tokens=12,
    ),
    "03": dict(
        measure_peaks=True,
        model="llama-2-7b-tiny",
        new_tokens=8,  # the profile's own (the GPU profiles make 16 here: their decode points are the slowest)
        gen_batches=[1, 2],
        budget_fraction=0.65,
        encoder_dtype="fp32",
        **_CPU_QUALITY,
        # fp32 is the reference here (bf16 is emulated, slowly, on most CPUs); bf16 is scored for notebook 05
        quality_formats=["fp32", "bf16", "int8", "fp4", "nf4", "nf4-dq", _nf4_compute("bf16")],
    ),
    "04": dict(
        measure_peaks=True,
        model="llama-2-7b-tiny",
        gen_batches=[1, 2],
        new_tokens=4,
        layer_features=1024,
        layer_dtype="fp32",
        colab_models=["t5-11b-tiny", "bloom-3b-tiny"],
        colab_budget_gib=None,
        **_CPU_QUALITY,
    ),
    "05": dict(
        measure_peaks=True,
        model="llama-2-7b-tiny",
        prompts=[32, 128],
        batches=[1, 4],
        new_tokens=8,
        **{**_CPU_QUALITY, "quality_windows": 1, "quality_prompts": 0},
    ),
    "06": dict(
        measure_peaks=False,
        model="llama-2-7b-tiny",
        seq_len=256,
        batch=4,
        trained_dtype="fp32",
        trained_steps=20,  # the margin: tools/training_margin.py (12 steps left the halved learning rate short)
        facts=3,
        answer_tokens=20,
    ),
    # fp32 here: teacher-forced agreement of the compiled loop is checked to 99% on a CPU, which bf16 rounding blurs
    "07": dict(
        measure_peaks=True,
        model="llama-2-7b-tiny",
        half="fp32",
        prompt=32,
        new_tokens=32,
        batches=[1, 2, 4, 8],
        prefill_lens=[64, 128, 256],
        loop_agreement=0.99,  # next-token agreement of the compiled loop with generate, fp32: rounding only
        answer_tokens=16,
    ),
}
_GPU_QUALITY = dict(
    quality_windows="all", quality_window=256, quality_dtype="bf16", quality_prompts=6, answer_tokens=24
)
_GPU_CHAPTERS = {
    "00": dict(measure_peaks=True, answer_tokens=32),
    "01": dict(
        measure_peaks=True,
        models=["llama-2-7b", "falcon-7b"],
        batch_sizes=[1, 2, 4, 8],
        pad_fractions=[0.0, 0.1, 0.25, 0.5],
        trained_tokens=512,
    ),
    "02": dict(
        measure_peaks=False,
        encoder_dtype="fp16",
        encoder_batches=[32, 128, 512],
        opt="opt-350m",
        opt_dtype="fp16",
        refusing_backend="FLASH_ATTENTION",
        trained_dtype="bf16",
        answer_tokens=24,
    ),
    "03": dict(
        measure_peaks=True,
        model="llama-2-7b",
        gen_batches=[1, 8, 32],
        budget_fraction=0.65,
        encoder_dtype="fp16",
        **_GPU_QUALITY,
        quality_formats=["bf16", "fp16", "int8", "fp4", "nf4", "nf4-dq", _nf4_compute("fp16")],
    ),
    "04": dict(
        measure_peaks=True,
        model="llama-2-7b",
        gen_batches=[1, 16],
        new_tokens=64,
        layer_features=4096,
        layer_dtype="fp16",
        colab_models=["t5-11b", "bloom-3b"],
        colab_budget_gib=15.0,
        **_GPU_QUALITY,
    ),
    "05": dict(
        measure_peaks=True,
        model="llama-2-7b",
        prompts=[512, 2048],
        batches=[1, 16],
        new_tokens=16,
        **_GPU_QUALITY,
    ),
    "06": dict(
        measure_peaks=False,
        model="llama-2-7b",
        seq_len=512,
        batch=4,
        trained_dtype="bf16",
        trained_steps=40,
        facts=4,
        answer_tokens=24,
    ),
    "07": dict(
        measure_peaks=True,
        model="llama-2-7b",
        half="bf16",
        prompt=128,
        new_tokens=64,
        batches=[1, 4, 16, 64, 128],
        prefill_lens=[1024, 2048, 4096, 8192, 16384],
        # random weights in bf16: near-ties flip often, and int8 rounds further (58 % of 32 tokens on an H100; over
        # 16 tokens one run varies by about 12 points); a broken loop agrees near 0
        loop_agreement=0.3,
        answer_tokens=32,
    ),
}
for _k, _v in {  # fewer points where the trend shows with fewer (large and small GPUs)
    # 01: batch 2 shows the trend at half batch 4's time (eager and Falcon's SDPA passes took 1.3-3.5 s at batch 4)
    "01": dict(batch_sizes=[1, 2], pad_fractions=[0.0, 0.5]),
    "03": dict(new_tokens=16),
    # 04: int8 decodes at 6-11 tok/s at batch 1 on an H200 (the runs of 2026-12-04); 8 tokens give 7 timed steps
    "04": dict(new_tokens=8),
    # 05 measures quality itself only when 03's table is not on this machine: fewer windows, no sample answers
    "05": dict(quality_windows=16, quality_prompts=0),
    # 07: a short prompt, bound by reading the weights as decoding is, then prompts long enough to fill the card
    "07": dict(new_tokens=16, batches=[1, 16, 128], prefill_lens=[64, 1024, 4096, 16384]),
}.items():
    _GPU_CHAPTERS[_k].update(_v)
# A T4-sized card: ~1B models; T5-11B is left out of the Colab demo (its fp32 offload needs 42 GiB of host memory).
_SMALL_CHAPTERS = {k: {**v} for k, v in _GPU_CHAPTERS.items()}
for _k, _v in {
    "01": dict(models=["llama-1.1b", "opt-350m"]),
    "03": dict(model="llama-1.1b"),
    "04": dict(model="llama-1.1b", colab_models=["bloom-3b"]),
    # llama-1.1b has 2048 positions: the long prompt and its 16 new tokens stay within them
    "05": dict(model="llama-1.1b", prompts=[512, 2032]),
    "06": dict(model="llama-1.1b"),
    "07": dict(model="llama-1.1b", prefill_lens=[64, 1024, 4096, 8192]),
}.items():
    _SMALL_CHAPTERS[_k].update(_v)
for _name, _table in (("cpu", _CPU_CHAPTERS), ("small-gpu", _SMALL_CHAPTERS), ("large-gpu", _GPU_CHAPTERS)):
    for _k, _sizes in _table.items():
        _sizes["time_budget_s"] = budgets.CHAPTER_BUDGET_S[_name]
        _sizes["sweep_seconds"] = budgets.sweep_seconds(_name, _k)


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        "cpu",
        "llama-2-7b-tiny",
        "llama-2-7b-tiny",
        "fp32",
        [64, 128, 256],
        [1, 2, 4],
        256,
        new_tokens=8,
        decoders=["llama-2-7b-tiny", "falcon-7b-tiny"],
        memory_seq_lens=[64, 128, 256, 512],
        short_seq=64,
        half="bf16",
        protocol={"warmup": 1, "min_reps": 2, "max_reps": 3, "budget_s": 2.0},  # CI: a check, not a benchmark
        chapters=_CPU_CHAPTERS,
    ),
    "small-gpu": Profile(
        "small-gpu",
        "llama-1.1b",
        "opt-350m",
        "bf16",
        [512, 1024, 2048],
        [1, 2, 4, 8],
        2048,
        new_tokens=64,
        decoders=["llama-1.1b", "opt-350m"],
        memory_seq_lens=[512, 1024, 2048, 4096, 8192, 16384],
        short_seq=512,
        chapters=_SMALL_CHAPTERS,
    ),
    "large-gpu": Profile(
        "large-gpu",
        "llama-2-7b",
        "llama-1.1b",
        "bf16",
        [512, 1024, 2048, 4096],
        [1, 2, 4, 8],
        4096,
        new_tokens=128,
        decoders=["llama-2-7b", "falcon-7b"],
        memory_seq_lens=[1024, 2048, 4096, 8192, 16384, 32768],
        short_seq=512,
        chapters=_GPU_CHAPTERS,
    ),
}


def pick(name: str | None = None) -> Profile:
    """Pick the sizes for this machine (or the named profile).

    large-gpu: 40 GiB or more (a bf16 7B model, 13.5 GB, plus long activations fits);
    small-gpu: any smaller GPU (a 15 GB T4 cannot hold a bf16 7B model); cpu: no GPU.
    """
    name = name or os.environ.get("WORKBOOK_PROFILE") or None
    info = device_info()
    if name is None:
        if info.kind == "cpu":
            name, reason = "cpu", "no GPU: tiny models of the same architectures"
        elif (info.memory_gib or 0) >= 40:
            name, reason = "large-gpu", f"{info.name} has {info.memory_gib} GiB: real 7B sizes"
        else:
            name, reason = "small-gpu", f"{info.name} has {info.memory_gib} GiB: ~1B models"
        if info.kind == "cuda" and gpu_memory_cap() is not None:
            reason += f" (capped by WORKBOOK_GPU_MEMORY_GIB={gpu_memory_cap():g})"
    else:
        reason = "chosen by name"
    if name not in PROFILES:
        raise WorkbookError(f"Unknown profile {name!r}.", f"Use one of {list(PROFILES)} or leave it unset.")
    p = copy.deepcopy(PROFILES[name])
    p.reason = reason
    if name != "cpu" and info.kind == "cuda" and not info.bf16:
        p.dtype = p.half = "fp16"
        for sizes in p.chapters.values():
            sizes.update({k: "fp16" for k, v in sizes.items() if v == "bf16"})
        p.notes.append(f"{info.name} has no bf16: fp16 instead")
    if name != "cpu" and info.kind == "cpu":
        p.notes.append("a GPU profile on a CPU: expect it to be very slow")
    return p
