"""Input batches: random token ids of a given shape, padded and packed layouts (notebooks 01, 02 and 06).

Every size is checked at the door: a batch that would be empty, all padding, or longer than the model can
take is refused with a ``WorkbookError`` that names the fix, before any kernel starts.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import WorkbookError

# Architectures whose positions are a learned table: past its length the model cannot run at all.
LEARNED_POSITIONS = {"opt", "bert", "gpt2", "gpt_neo", "bart", "roberta", "xlm-roberta"}


def check_size(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as a whole number of at least ``minimum``, or a ``WorkbookError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise WorkbookError(
            f"{name}={value!r}: it must be a whole number of at least {minimum}.",
            f"Pass {name}={max(minimum, 1)} or more, e.g. {name}=4.",
        )
    return int(value)  # numpy's whole numbers pass, as plain ints


def max_positions(cfg) -> int | None:
    """The longest sequence the config names (``max_position_embeddings`` or ``n_positions``), or ``None``."""
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def check_length(cfg, seq_len, *, beyond_positions: bool = False) -> int:
    """Refuse a sequence length of 0 or less, or past the model's positions.

    Rotary-position models (Llama, Falcon) run past their trained length; their speed and memory stay real but
    their outputs do not, so that needs ``beyond_positions=True``. Learned position tables (OPT, BERT) cannot
    run past their length at all.
    """
    check_size("seq_len", seq_len)
    limit = max_positions(cfg)
    if limit is None or seq_len <= limit:
        return seq_len
    kind = getattr(cfg, "model_type", "?")
    if kind in LEARNED_POSITIONS:
        raise WorkbookError(
            f"seq_len={seq_len} is past {kind}'s {limit} learned positions: it cannot run.",
            f"Use seq_len <= {limit}.",
        )
    if not beyond_positions:
        raise WorkbookError(
            f"seq_len={seq_len} is past the {limit} positions {kind} was trained for.",
            f"Use seq_len <= {limit}, or pass beyond_positions=True to measure speed and memory "
            "there (rotary positions run, but outputs past the trained length mean little).",
        )
    return seq_len


def _pads(batch_size: int, seq_len: int, pad_fraction: float) -> list[int]:
    if batch_size == 1:
        return [min(round(pad_fraction * seq_len), seq_len - 1)]
    return [
        min(round(2 * pad_fraction * seq_len * i / (batch_size - 1)), seq_len - 1) for i in range(batch_size)
    ]


def pad_lengths(batch_size: int, seq_len: int, pad_fraction: float) -> list[int]:
    """Padding per row for a share ``pad_fraction`` of all positions: spread evenly from 0 to twice the mean,
    so rows differ as real batches do (row 0 has none); every row keeps at least one real token.

    Refused when that share cannot be reached without emptying a row (the reachable share is named).
    """
    if isinstance(pad_fraction, bool) or not isinstance(pad_fraction, numbers.Real):
        raise WorkbookError(f"pad_fraction={pad_fraction!r} is not a number.", "Use a share such as 0.25.")
    if not 0 <= pad_fraction < 1:
        raise WorkbookError(f"pad_fraction={pad_fraction} is outside [0, 1).", "Use a share such as 0.25.")
    pads = _pads(batch_size, seq_len, pad_fraction)
    if abs(sum(pads) / (batch_size * seq_len) - pad_fraction) > 0.02:
        reach = max(
            f / 100
            for f in range(100)
            if abs(sum(_pads(batch_size, seq_len, f / 100)) / (batch_size * seq_len) - f / 100) <= 0.02
        )
        raise WorkbookError(
            f"pad_fraction={pad_fraction} would leave rows of a {batch_size} x {seq_len} batch with no "
            "real token.",
            f"Use pad_fraction <= {reach:.2f} for this shape, or a longer seq_len.",
        )
    return pads


def pad_batch(seqs: list[torch.Tensor], pad_id: int = 0) -> dict:
    """Left-pad token sequences into one (batch, longest) batch with its attention mask."""
    if not seqs or min(len(s) for s in seqs) == 0:
        raise WorkbookError(
            "pad_batch needs at least one sequence, none of them empty.", "Drop empty sequences."
        )
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, longest - len(s) :] = s
        mask[i, longest - len(s) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pack_batch(seqs: list[torch.Tensor]) -> dict:
    """Concatenate sequences into one row; ``position_ids`` restart at 0 for each sequence.

    With ``use_cache=False`` and no attention mask, transformers reads the restarts as sequence
    boundaries: FlashAttention's varlen kernels, SDPA and eager then keep the sequences apart
    (a block-diagonal causal mask), so no position is padding (notebook 01 checks the logits).
    """
    if not seqs or min(len(s) for s in seqs) == 0:
        raise WorkbookError(
            "pack_batch needs at least one sequence, none of them empty.", "Drop empty sequences."
        )
    return {
        "input_ids": torch.cat(seqs)[None],
        "position_ids": torch.cat([torch.arange(len(s)) for s in seqs])[None],
    }


def make_batch(
    loaded,
    batch_size: int,
    seq_len: int,
    pad_fraction: float = 0.0,
    seed: int = 0,
    *,
    beyond_positions: bool = False,
) -> dict:
    """Random token ids of shape (batch, seq_len) on the model's device, left-padded.

    ``pad_fraction`` is the share of all positions that are padding (see ``pad_lengths``). Sizes are checked
    first: see ``check_size`` and ``check_length``.
    """
    cfg = loaded.model.config
    check_size("batch_size", batch_size)
    check_length(cfg, seq_len, beyond_positions=beyond_positions)
    pads = pad_lengths(batch_size, seq_len, pad_fraction)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, cfg.vocab_size, (batch_size, seq_len), generator=g)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    pad_id = cfg.pad_token_id or 0
    for i, p in enumerate(pads):
        ids[i, :p] = pad_id
        mask[i, :p] = 0
    dev = loaded.device
    return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
