"""The techniques the chapters teach, one module each.

- ``legacy``: the 2023 guide's calls translated into today's API (every chapter).
- ``fastpath``: PyTorch's nested-tensor encoder fast path, what BetterTransformer ran (02).
- ``sentences``: real English sentences and paraphrases for the encoder chapters (02, 03).
- ``quant``: bitsandbytes opened up: where the bytes go, LLM.int8() by hand (03, 04).
- ``placement``: memory budgets, where ``device_map`` put each layer, several GPUs (03, 04).
- ``quality``: perplexity and agreement with a reference, per weight format (03, 04, 05).
- ``answers``: greedy answers of a chat model to fixed questions, checked for the expected words (00, 06).
- ``recommend``: the Pareto front and a recommender over measured tables (05).
- ``schedules``: the learning rate over a run (warm-up, cosine decay) and the gradient clip (06).
- ``training``: LoRA and QLoRA training on the workbook's own prose, padded or packed (06).
- ``decoding``: decode modes side by side: dynamic and static caches, torch.compile, a compiled loop (07).
- ``greedy_loop``: that compiled loop of your own, int8 layers left uncompiled, checked against ``generate`` (07).
- ``roofline``: the decode ceiling over batch sizes; every technique's share of the speed of light (07).
"""

from . import (
    answers,
    decoding,
    fastpath,
    greedy_loop,
    legacy,
    placement,
    quality,
    quant,
    recommend,
    roofline,
    schedules,
    sentences,
    training,
)

__all__ = [
    "answers",
    "decoding",
    "fastpath",
    "greedy_loop",
    "legacy",
    "placement",
    "quality",
    "quant",
    "recommend",
    "roofline",
    "schedules",
    "sentences",
    "training",
]
