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


# Questions that the bf16 load of smollm2-135m answers correctly in at most 24 greedy tokens.
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
    """Greedy answers to ``prompts`` through the tokenizer's chat template, one prompt at a time.

    Columns: ``prompt``, ``expected``, ``answer``, ``correct`` (an expected word appears, whole word,
    any case), ``new_tokens``.
    """
    tok = loaded.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise WorkbookError(
            f"{loaded.name!r} has no tokenizer with a chat template, so it cannot be asked questions.",
            f"Use the trained model: models.load({MODEL!r}).",
        )
    rows = []
    for p in prompts:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": p.question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(loaded.device)
        with torch.inference_mode(), loaded.context():
            out = loaded.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        new = out[0, enc["input_ids"].shape[1] :]
        text = tok.decode(new, skip_special_tokens=True).strip()
        hit = any(re.search(rf"\b{re.escape(w)}\b", text, flags=re.I) for w in p.expected)
        rows.append(
            {
                "prompt": p.question,
                "expected": " / ".join(p.expected),
                "answer": text,
                "correct": hit,
                "new_tokens": len(new),
            }
        )
    return pd.DataFrame(rows, columns=["prompt", "expected", "answer", "correct", "new_tokens"])


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
