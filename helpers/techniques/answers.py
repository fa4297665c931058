"""Answers to fixed factual questions: greedy replies of a chat model, checked for the expected words; and
greedy continuations of plain text (what an adapter learned, notebook 06).

What a weight format costs is easiest to see in what the model says: ``quality.table`` counts correct
answers per format (notebooks 00, 03 and 04 show them) on the trained ``smollm2-135m``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import WorkbookError
from ..models.loading import Loaded

MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Prompt:
    """A question and the words (any one, case-insensitive, whole word) that a correct answer contains."""

    question: str
    expected: tuple[str, ...]


# Questions that smollm2-135m answers correctly in at most 24 greedy tokens: in fp32, asked one at a time or in one
# batch (tests/test_trained_model.py); in bf16 one at a time. Batched in bf16, rounding can tip a near-tie: on a CPU
# the Red Planet's answer then misses Mars (measured 2026-12-04).
FIXED_PROMPTS: tuple[Prompt, ...] = (
    Prompt("What is the capital of France?", ("Paris",)),
    Prompt("What is the capital of Japan?", ("Tokyo",)),
    Prompt("What is the chemical symbol for water?", ("H2O",)),
    Prompt("How many days are there in a week?", ("7", "seven")),
    Prompt("Which planet is known as the Red Planet?", ("Mars",)),
    Prompt("What is the opposite of hot?", ("cold",)),
)


def ask(
    loaded: Loaded, prompts: tuple[Prompt, ...] = FIXED_PROMPTS, max_new_tokens: int = 24
) -> pd.DataFrame:
    """Greedy answers to ``prompts`` through the tokenizer's chat template, all of them in one left-padded batch:
    one generation of at most ``max_new_tokens`` steps instead of one per prompt (a small model's steps are bound
    by launching kernels on a GPU, so six prompts cost about what one does). A batch rounds differently from a
    prompt alone, so in 16 bits a near-tie can go the other way (see ``FIXED_PROMPTS``).

    Columns: ``prompt``, ``expected``, ``answer``, ``correct`` (an expected word appears, whole word,
    any case), ``new_tokens`` (up to and with the end-of-text token; the padding of a finished row not counted).
    """
    tok = loaded.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise WorkbookError(
            f"{loaded.name!r} has no tokenizer with a chat template, so it cannot be asked questions.",
            f"Use the trained model: models.load({MODEL!r}).",
        )
    columns = ["prompt", "expected", "answer", "correct", "new_tokens"]
    if not prompts:
        return pd.DataFrame([], columns=columns)
    ids = [
        tok.apply_chat_template(
            [{"role": "user", "content": p.question}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        for p in prompts
    ]
    enc = tok.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt").to(
        loaded.device
    )
    width = enc["input_ids"].shape[1]
    with torch.inference_mode(), loaded.context():
        out = loaded.model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    eos = loaded.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    rows = []
    for p, new in zip(prompts, out[:, width:].tolist()):
        end = next((k + 1 for k, t in enumerate(new) if t in eos), len(new))  # a finished row is padded after
        text = tok.decode(new[:end], skip_special_tokens=True).strip()
        hit = any(re.search(rf"\b{re.escape(w)}\b", text, flags=re.I) for w in p.expected)
        rows.append(
            {
                "prompt": p.question,
                "expected": " / ".join(p.expected),
                "answer": text,
                "correct": hit,
                "new_tokens": end,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def continuations(model, tokenizer, prompts: list[str], max_new_tokens: int = 16) -> list[str]:
    """Greedy continuations of plain-text ``prompts`` (no chat template), in one left-padded batch.

    ``model`` is any causal LM (a ``Loaded``'s model, one with an adapter, a merged one); returns the new text
    of each prompt, special tokens dropped. Notebook 06 shows with it what an adapter learned.
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens follow every prompt directly
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = enc.to(next(model.parameters()).device)
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
