"""A small, real fine-tuning loop for LoRA adapters (notebook 06).

- ``corpus``: the workbook's own documentation (README and the notebooks' prose), a text corpus that ships
  with the project.
- ``padded_batches`` and ``packed_batches``: the same documents as padded rows or as packed rows whose
  position ids restart at each document (what the guide recommends for training with flash attention).
- ``lora_param_count``: the LoRA formula, r x (in + out) per adapted layer, to check the trainable count.
- ``train``: AdamW steps over batches on a ``schedules.Schedule``, one row per step (loss, learning rate, tokens,
  time), with a callback for live plots; ``margin_summary``: the recipe's margin (``tools/training_margin.py``).
- ``FACTS`` and ``reproduced``: sentences of the workbook's prose that a trained model cannot know, split into a
  prompt and the rest, and how much of the rest a continuation gives back (what an adapter learned).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import torch

from ..errors import WorkbookError
from ..machine.hardware import sync
from ..measure.protocol import Protocol, time_one
from .schedules import RECIPE, Schedule

ROOT = Path(__file__).resolve().parents[2]

# Sentences of the frozen corpus (data/corpus/workbook_prose.txt), each as (prompt, the rest): a model trained
# before the workbook existed continues the prompts otherwise; an adapter trained on them gives the rest back.
FACTS: tuple[tuple[str, str], ...] = (
    ("Falcon-7B uses", " multi-query attention: 71 query heads share one key/value head."),
    ("Quantization is", " for fitting first."),
    (
        "optimum is not needed:",
        " its BetterTransformer was removed in optimum 2, and native SDPA replaced it.",
    ),
    ("A compiled loop of your own", " lets nf4 overtake bf16 at batch 1; int8 gains nothing from compiling."),
)


def reproduced(continuation: str, rest: str) -> float:
    """The share of the words of ``rest`` that ``continuation`` gives back in order from its start (1.0: all of
    them, 0.0: its first word already differs)."""
    want, got = rest.split(), continuation.split()
    same = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return same / len(want)


def corpus(root: Path = ROOT) -> list[str]:
    """Paragraphs of the README and of every notebook's markdown cells, in reading order."""
    texts = [(root / "README.md").read_text()]
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts += ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    paragraphs = [p.strip() for t in texts for p in t.split("\n\n")]
    return [p for p in paragraphs if len(p) > 40 and not p.startswith(("|", "<!--", "```"))]


def _tokens(tokenizer, docs: list[str], max_len: int) -> list[torch.Tensor]:
    eos = tokenizer.eos_token_id
    out = []
    for d in docs:
        ids = tokenizer(d, add_special_tokens=False)["input_ids"][: max_len - 1] + (
            [eos] if eos is not None else []
        )
        out.append(torch.tensor(ids))
    return out


def padded_batches(tokenizer, docs: list[str], batch_size: int, max_len: int) -> list[dict]:
    """Each batch: ``batch_size`` documents, right-padded to the longest; padding is masked from the loss."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = _tokens(tokenizer, docs, max_len)
    batches = []
    for i in range(0, len(seqs) - batch_size + 1, batch_size):
        group = seqs[i : i + batch_size]
        n = max(len(s) for s in group)
        ids = torch.full((len(group), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(group):
            ids[r, : len(s)], mask[r, : len(s)] = s, 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return batches


def packed_batches(tokenizer, docs: list[str], batch_size: int, max_len: int) -> list[dict]:
    """Documents laid end to end and cut into full rows of ``max_len`` tokens: no padding at all.

    Position ids restart at each document (transformers reads the restarts as document boundaries when no
    attention mask is given, so attention stays inside each document); a document cut at the end of a row
    continues in the next row as a new piece, its positions restarting there too. Each piece's first token has
    no label (it has no context from its own document).
    """
    ids, pos = [], []
    for s in _tokens(tokenizer, docs, max_len):
        ids += s.tolist()
        pos += list(range(len(s)))
    rows = len(ids) // max_len
    batches = []
    for first in range(0, rows - batch_size + 1, batch_size):
        chunk = slice(first * max_len, (first + batch_size) * max_len)
        row_ids = torch.tensor(ids[chunk]).view(batch_size, max_len)
        positions = torch.tensor(pos[chunk]).view(batch_size, max_len)
        positions = positions - _piece_start(positions)  # a row that begins mid-document restarts at 0
        labels = row_ids.clone()
        labels[positions == 0] = -100
        batches.append({"input_ids": row_ids, "position_ids": positions, "labels": labels})
    return batches


def _piece_start(positions: torch.Tensor) -> torch.Tensor:
    """For each row, the offset to subtract so the positions before the row's first restart begin at 0."""
    out = torch.zeros_like(positions)
    for r in range(positions.shape[0]):
        restarts = (positions[r] == 0).nonzero()
        cut = int(restarts[0]) if len(restarts) else positions.shape[1]
        out[r, :cut] = positions[r, 0]
    return out


def lora_param_count(model, r: int, target_modules: Iterable[str]) -> int:
    """r x (in_features + out_features) for every linear layer whose name ends with a target: the count of
    LoRA's A (r x in) and B (out x r) matrices."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise WorkbookError(f"r={r!r}: LoRA's rank is a whole number of at least 1.", "Use r=8 or r=16.")
    targets = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    n = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] in targets and hasattr(module, "in_features"):
            n += r * (module.in_features + module.out_features)
    if n == 0:
        raise WorkbookError(
            f"No linear layer named {targets} in {type(model).__name__}.",
            "Use the module names printed by [n for n, _ in model.named_modules()].",
        )
    return n


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def prepare(model, lora=None, checkpointing: bool = True, seed: int | None = 0):
    """Make a loaded model trainable, in place, the way notebook 06 compares set-ups.

    Quantized weights: ``prepare_model_for_kbit_training`` (base frozen, the unquantized parameters in fp32,
    gradients through the input embeddings). With a ``LoraConfig``: the base is frozen and the adapter added
    (LoRA, or QLoRA on a quantized base). Without one: every weight trains (full fine-tuning).
    ``checkpointing``: recompute activations in the backward pass instead of keeping them. ``seed``: the seed of the
    adapter's random start (LoRA's A matrices), so that a run trains the same adapter wherever it runs, whatever ran
    before it in the kernel; ``None`` leaves torch's random state alone.
    """
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training  # heavy: imported on first use

        if lora is None:
            raise WorkbookError(
                "Quantized weights cannot be trained directly.",
                "Pass a LoraConfig (QLoRA), or load the model in bf16 for full fine-tuning.",
            )
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    else:
        for p in model.parameters():
            p.requires_grad_(lora is None)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        if seed is not None:
            torch.manual_seed(seed)
        model.add_adapter(lora)
        adapters_to_fp32(model)
    return model


def adapters_to_fp32(model) -> int:
    """Keep the trainable (adapter) parameters in fp32, as peft's ``get_peft_model`` does by default
    (``autocast_adapter_dtype``); transformers' ``add_adapter`` creates them in the base model's dtype, and
    AdamW updates to bf16 numbers lose most of their small steps. Returns how many tensors were cast."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


def train_steps(model, batches: list[dict], *, steps: int, lr: float = 1e-3, schedule: Schedule = RECIPE):
    """AdamW over the trainable parameters for ``steps`` steps, cycling through ``batches``, the learning rate
    following ``schedule``; yields one row per step (loss, the step's learning rate and gradient norm before
    clipping, real tokens trained on so far, tokens per second so far), so a live plot can follow."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise WorkbookError(
            "The model has no trainable parameters.",
            "Add an adapter first (model.add_adapter(LoraConfig(...))).",
        )
    opt = torch.optim.AdamW(params, lr=lr)
    device = next(model.parameters()).device
    model.train()
    clip = schedule.max_grad_norm if schedule.max_grad_norm is not None else float("inf")  # inf: norm only
    tokens, t0 = 0, time.perf_counter()
    try:
        for step in range(steps):
            rate = schedule.lr_at(step, steps, lr)
            for group in opt.param_groups:
                group["lr"] = rate
            batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
            loss = model(
                **batch, use_cache=False
            ).loss  # no cache: also what lets transformers read packed boundaries
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += int((batch["labels"] != -100).sum())
            yield {
                "step": step,
                "loss": loss.item(),
                "lr": rate,
                "grad_norm": grad_norm,
                "tokens": tokens,
                "tokens_per_s": tokens / (time.perf_counter() - t0),
            }
    finally:
        model.eval()


def train(
    model,
    batches: list[dict],
    *,
    steps: int,
    lr: float = 1e-3,
    schedule: Schedule = RECIPE,
    on_step: Callable[[dict], None] | None = None,
    log_every: int = 1,
) -> pd.DataFrame:
    """``train_steps`` run to the end: one row per logged step (loss, learning rate, gradient norm, real tokens,
    tokens per second)."""
    rows = []
    for row in train_steps(model, batches, steps=steps, lr=lr, schedule=schedule):
        if row["step"] % log_every == 0 or row["step"] == steps - 1:
            rows.append(row)
            if on_step is not None:
                on_step(row)
    return pd.DataFrame(rows)


def step_cost(model, batches: list[dict], *, protocol: Protocol | None = None, lr: float = 1e-4) -> dict:
    """What a training step costs with these batches, timed by ``protocol`` (each call one optimizer step on the
    next batch): median step time with its interval, real tokens per second, the share of positions that are
    padding, and the peak memory of the steps (GPU allocator; ``nan`` on a CPU).

    Real tokens are the positions with a label (padding and each document's first token have none), so padded
    and packed batches compare on the work that matters (notebook 06).
    """
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise WorkbookError(
            "The model has no trainable parameters.", "Add an adapter first, or unfreeze the weights."
        )
    opt = torch.optim.AdamW(params, lr=lr)
    counter = itertools.count()

    def step():
        batch = {k: v.to(dev) for k, v in batches[next(counter) % len(batches)].items()}
        model(**batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    if dev.type == "cuda":
        sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        timing = time_one(step, protocol, device=dev, busy=None)
    finally:
        model.eval()
    real = sum(int((b["labels"] != -100).sum()) for b in batches) / len(batches)
    positions = sum(b["input_ids"].numel() for b in batches) / len(batches)
    pads = sum(int((b["attention_mask"] == 0).sum()) if "attention_mask" in b else 0 for b in batches)
    pads /= len(batches)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return {
        **timing.summary("step"),  # step_ms with its interval, n, ci_reached: the protocol's row columns
        "step_ms_stdev": timing.stdev_ms,
        "stopped_by": timing.stopped_by,
        "real_tokens_per_step": real,
        "positions_per_step": positions,
        "pad_share": pads / positions,
        "real_tokens_per_s": real / (timing.median_ms / 1e3),
        "peak_alloc_gib": peak,
        "trainable_params": trainable_params(model),
    }


MARGIN_CARD = "cpu-amd-epyc"  # where tools/training_margin.py's committed matrix lies (results/<card>/)


def margin_summary(matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per set-up and learning rate of ``tools/training_margin.py``'s matrix: how many of its cells (seeds x
    threads x kernel families) learned, the most given back before training, the least after it, and the worst
    last-3 loss; notebook 06 shows it as the recipe's margin."""
    grouped = matrix.groupby(["setup", "lr"])
    return pd.DataFrame(
        {
            "cells": grouped.size(),
            "learned": grouped.learned.sum(),
            "most_given_back_before": grouped.given_back_before.max(),
            "least_given_back_after": grouped.given_back_after.min(),
            "worst_loss_last3": grouped.loss_last3.max(),
            "steps": grouped.steps.first(),
        }
    ).reset_index()
