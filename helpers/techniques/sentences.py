"""Real English sentences of varied length, for the encoder chapters (02, 03).

Lengths range from a few words to a long paragraph, so a padded batch of them has realistic padding:
most rows are much shorter than the longest. ``PARAPHRASES`` holds pairs that mean the same thing.
"""

import math

import torch

SENTENCES = [
    "The cat sat on the mat.",
    "It is raining again.",
    "Please close the door when you leave the room.",
    "The train to the airport leaves every fifteen minutes from platform two.",
    "She planted tomatoes, basil and three kinds of peppers in the small garden behind the house.",
    "Prices rose.",
    "A graphics card moves data between its memory and its cores far faster than a laptop can.",
    "The museum is closed on Mondays.",
    "After the storm, volunteers spent the whole weekend clearing fallen branches from the roads and "
    "checking on elderly neighbours who had lost power.",
    "He forgot his umbrella.",
    "Quantum computers use qubits, which can be in a superposition of states.",
    "The recipe calls for two cups of flour, one egg, a pinch of salt and enough milk to make a smooth batter.",
    "Our flight was delayed by three hours because of fog.",
    "Dogs bark.",
    "The committee will publish its final report next spring, after consulting the public and several "
    "independent experts on the long-term costs of the project.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I would like a cup of tea, please.",
    "The library lends books, films, music and even tools to anyone with a card.",
    "Researchers measured how quickly glaciers in the region retreated over the past forty years and found "
    "that the pace had roughly doubled since the nineteen nineties.",
    "The meeting starts at nine.",
    "Children learn languages quickly when they hear them every day.",
    "A bicycle is often the fastest way to cross a crowded city centre.",
    "The old bridge was rebuilt in stone after the flood of 1868 swept the wooden one away.",
    "Turn left at the bakery.",
    "Solar panels produce less electricity on cloudy days, but they still work.",
    "The orchestra rehearsed the symphony for weeks before the premiere, and the conductor changed the tempo "
    "of the slow movement twice during the final rehearsal.",
    "My phone battery is almost empty.",
    "The shop sells fresh bread every morning.",
    "Volcanic eruptions can cool the climate for a year or two by filling the upper atmosphere with ash.",
    "Thank you for your help.",
    "A good night's sleep improves memory and concentration.",
    "The software update fixed the bug that made the application crash when files were saved to a network drive.",
]

PARAPHRASES = [
    ("The cat sat on the mat.", "A cat was sitting on the rug."),
    ("It is raining again.", "The rain has started once more."),
    ("Our flight was delayed by three hours because of fog.", "Fog held our plane back for three hours."),
    ("Thank you for your help.", "Thanks a lot for helping me."),
    ("The museum is closed on Mondays.", "On Mondays the museum does not open."),
    (
        "Water boils at one hundred degrees Celsius at sea level.",
        "At sea level, water starts boiling at 100 °C.",
    ),
    ("Dogs bark.", "Dogs make barking sounds."),
    ("My phone battery is almost empty.", "My mobile is nearly out of charge."),
]


def batch(n: int, start: int = 0) -> list[str]:
    """``n`` sentences, cycling through the list from ``start``."""
    return [SENTENCES[(start + i) % len(SENTENCES)] for i in range(n)]


def encode(
    tokenizer, sentences: list[str], pad_share: float | None = None, device=None, seq_len: int | None = None
) -> dict:
    """Tokenize a padded batch of ``sentences``.

    ``pad_share=None`` pads to the longest sentence (the natural share of padding); a number pads
    every row to one longer length so that about that share of all positions is padding.
    ``seq_len`` fixes the padded length instead: see ``encode_to_length``.
    Returns the batch (tensors on ``device``) with ``real_tokens`` and ``pad_share`` (the actual share).
    """
    if seq_len is not None:
        return encode_to_length(tokenizer, len(sentences), seq_len, pad_share or 0.0, device)
    natural = tokenizer(sentences, padding=True, return_tensors="pt")
    real = int(natural["attention_mask"].sum())
    if pad_share is not None:
        length = max(natural["input_ids"].shape[1], math.ceil(real / len(sentences) / (1 - pad_share)))
        natural = tokenizer(sentences, padding="max_length", max_length=length, return_tensors="pt")
    batch = {k: v.to(device) if device is not None else v for k, v in natural.items()}
    mask = batch["attention_mask"]
    return {
        "batch": batch,
        "real_tokens": real,
        "pad_share": 1 - real / mask.numel(),
        "seq_len": mask.shape[1],
    }


def encode_to_length(
    tokenizer, n: int, seq_len: int, pad_share: float = 0.0, device=None, start: int = 0
) -> dict:
    """A batch of ``n`` rows of real running text, every row padded to ``seq_len`` tokens.

    The first row is full (one long document); the others are cut shorter so that about ``pad_share``
    of all positions is padding, as when short queries share a batch with one long document.
    Rows are consecutive sentences of ``SENTENCES`` joined; same result shape as ``encode``.
    """
    if not 0 <= pad_share < 1:
        raise ValueError(f"pad_share must be in [0, 1), not {pad_share}")
    text = " ".join(SENTENCES[start:] + SENTENCES[:start])
    ids = tokenizer(
        " ".join([text] * (1 + 4 * seq_len // max(len(text) // 4, 1))),
        add_special_tokens=False,
        verbose=False,
    )["input_ids"]
    short = seq_len if n == 1 else max(2, round(((1 - pad_share) * n - 1) * seq_len / (n - 1)))
    lengths = [seq_len] + [min(seq_len, short)] * (n - 1)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    rows = torch.full((n, seq_len), pad, dtype=torch.long)
    mask = torch.zeros((n, seq_len), dtype=torch.long)
    for i, length in enumerate(lengths):
        body = ids[(i * 7) % 50 :][: length - 2]
        rows[i, :length] = torch.tensor([cls, *body, sep])
        mask[i, :length] = 1
    batch = {"input_ids": rows, "token_type_ids": torch.zeros_like(rows), "attention_mask": mask}
    batch = {k: v.to(device) if device is not None else v for k, v in batch.items()}
    real = int(mask.sum())
    return {"batch": batch, "real_tokens": real, "pad_share": 1 - real / mask.numel(), "seq_len": seq_len}
