"""What a weight format costs in quality: perplexity, agreement with a reference, answers to fixed questions.

Measured on the workbook's trained model, ``smollm2-135m`` (``helpers.trained``): random-weight models
have no quality to lose. ``table`` gives one row per weight format; the functions behind it
also take any ``models.Loaded`` decoder with a tokenizer.

- **perplexity**: exp of the mean negative log-likelihood per predicted token of a fixed English text,
  the workbook's own prose frozen in ``data/corpus/workbook_prose.txt``, cut into non-overlapping windows
  of ``window`` tokens (each scored from its own start, no special tokens). Lower is better.
- **top-1 agreement**: the share of positions where the model's most likely next token is the
  reference's (a bf16 load of the same model unless said otherwise). 100 % means the same greedy text.
  Near-ties make rounding alone flip some choices: an fp32 or fp16 row shows how much, so a format's
  loss is what it adds beyond that.
- **mean KL**: KL(reference || model) of the next-token distributions in nats, averaged over positions.
- **answers**: greedy replies to short factual questions through the tokenizer's chat template; a reply
  is correct when one of the expected words appears in it.

Window counts come from the device: ``CPU_WINDOWS`` on a CPU (seconds per format), the whole corpus on
a GPU; pass ``n_windows`` to choose. Every result says how many tokens it scored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import models
from ..errors import WorkbookError
from ..machine.hardware import device
from .answers import FIXED_PROMPTS, Prompt, ask

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "workbook_prose.txt"
WINDOW = 256
CPU_WINDOWS = 8
MODEL = "smollm2-135m"
FORMATS = ("bf16", "fp32", "fp16", "int8", "fp4", "nf4", "nf4-dq")


# --------------------------------------------------------------------------- the corpus


def corpus_text(path: Path | str = CORPUS) -> str:
    """The fixed corpus (see ``data/corpus/README.md``)."""
    return Path(path).read_text()


def default_windows() -> int | str:
    """How many windows to score when not told: ``CPU_WINDOWS`` on a CPU, ``"all"`` on a GPU."""
    return CPU_WINDOWS if device().type == "cpu" else "all"


def windows(
    tokenizer, texts: str | list[str] | None = None, window: int = WINDOW, n_windows: int | str | None = None
) -> torch.Tensor:
    """Token ids of shape (n_windows, window): non-overlapping windows spread evenly over the text.

    ``texts``: a string, several (joined by blank lines) or ``None`` for the corpus. ``n_windows``: a
    number, ``"all"`` (every full window) or ``None`` (``default_windows()``). The same tokenizer and
    arguments give the same windows, always.
    """
    text = corpus_text() if texts is None else texts if isinstance(texts, str) else "\n\n".join(texts)
    ids = torch.tensor(
        tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long
    )
    available = len(ids) // window
    n_windows = default_windows() if n_windows is None else n_windows
    n = available if n_windows == "all" else n_windows
    if not 1 <= n <= available:
        raise WorkbookError(
            f"The text has {len(ids)} tokens: {available} windows of {window}, not {n}.",
            f"Ask for n_windows between 1 and {available}, or a shorter window.",
        )
    starts = torch.linspace(0, available - 1, n).round().long() * window
    return torch.stack([ids[s : s + window] for s in starts.tolist()])


def _score(
    loaded: models.Loaded,
    ids: torch.Tensor,
    batch_size: int,
    ref: Reference | None = None,
    keep: bool = False,
) -> tuple[dict, list]:
    """One pass over the windows, a batch at a time: the negative log-likelihood of each next token and,
    with ``ref``, agreement and KL against it; with ``keep``, the log-probabilities (fp16) and top-1 tokens
    (kept on the CPU). The arithmetic over the vocabulary (49k entries a position) runs where the logits are, so a
    GPU does it instead of the host, and only sums and the kept tensors cross to the CPU."""
    nll, same, kl, kept = 0.0, 0, 0.0, []
    with torch.inference_mode(), loaded.context():
        for i in range(0, len(ids), batch_size):
            window = ids[i : i + batch_size]
            logits = loaded.model(input_ids=window.to(loaded.device), use_cache=False).logits
            batch = window.to(logits.device)
            lp = torch.log_softmax(logits.float(), dim=-1)
            nll -= lp[:, :-1].gather(-1, batch[:, 1:, None]).sum().item()
            top1 = lp.argmax(-1)
            if ref is not None:
                ref_lp = ref.logprobs[i : i + len(batch)].to(lp.device).float()
                same += (top1 == ref.top1[i : i + len(batch)].to(lp.device)).sum().item()
                kl += (ref_lp.exp() * (ref_lp - lp)).sum().item()
            if keep:
                kept.append((lp.half().cpu(), top1.cpu()))
    tokens, positions = ids[:, 1:].numel(), ids.numel()
    out = {
        "perplexity": math.exp(nll / tokens),
        "nll_nats_per_token": nll / tokens,
        "tokens": tokens,
        "windows": len(ids),
        "window_tokens": ids.shape[1],
    }
    if ref is not None:
        out.update(
            top1_agreement_pct=100.0 * same / positions,
            mean_kl_nats=kl / positions,
            positions=positions,
            reference=ref.label,
        )
    return out, kept


# --------------------------------------------------------------------------- perplexity and agreement


def perplexity(
    loaded: models.Loaded,
    texts: str | list[str] | None = None,
    *,
    window: int = WINDOW,
    n_windows: int | str | None = None,
    batch_size: int = 4,
) -> dict:
    """Perplexity of ``loaded`` on the corpus (or ``texts``), scored in windows of ``window`` tokens.

    Returns ``perplexity``, ``nll_nats_per_token``, ``tokens`` (predicted tokens scored: window - 1 per
    window), ``windows``, ``window_tokens``. ``n_windows``: as in ``windows`` (``None``: the device's default).
    """
    return _score(loaded, windows(loaded.tokenizer, texts, window, n_windows), batch_size)[0]


@dataclass
class Reference:
    """A reference model's next-token distributions over fixed windows (what ``agreement`` compares with).

    ``ids`` (n, window) are the windows; ``logprobs`` (n, window, vocab) are kept in fp16 on the CPU
    (8 windows of 256 tokens over a 49k vocabulary take 200 MB; that rounding puts a model's KL against
    itself near 1e-5 nats, not 0); ``top1`` is the reference's own choice, taken before rounding;
    ``scores`` is its perplexity on the windows.
    """

    label: str
    ids: torch.Tensor
    logprobs: torch.Tensor
    top1: torch.Tensor
    scores: dict


def reference(
    loaded: models.Loaded,
    texts: str | list[str] | None = None,
    *,
    window: int = WINDOW,
    n_windows: int | str | None = None,
    batch_size: int = 4,
) -> Reference:
    """Score ``loaded`` once on the windows and keep its distributions for ``agreement``."""
    ids = windows(loaded.tokenizer, texts, window, n_windows)
    scores, kept = _score(loaded, ids, batch_size, keep=True)
    return Reference(
        loaded.request.weights,
        ids,
        torch.cat([lp for lp, _ in kept]),
        torch.cat([t for _, t in kept]),
        scores,
    )


def against_reference(
    loaded: models.Loaded,
    ref: Reference | models.Loaded,
    *,
    window: int = WINDOW,
    n_windows: int | str | None = None,
    batch_size: int = 4,
) -> dict:
    """How closely ``loaded`` follows the reference on the same windows.

    ``ref``: a ``Reference`` (its windows are used) or a loaded model (scored now, on the corpus).
    Returns ``top1_agreement_pct``, ``mean_kl_nats`` (KL(reference || model) per position), ``positions``,
    ``reference`` (its weight format) and the model's own perplexity on those windows.
    """
    if not isinstance(ref, Reference):
        ref = reference(ref, window=window, n_windows=n_windows, batch_size=batch_size)
    return _score(loaded, ref.ids, batch_size, ref=ref)[0]


# --------------------------------------------------------------------------- one row per format


def load_options(fmt: str | dict, dtype: str = "bf16") -> tuple[str, dict]:
    """(label, ``models.load`` keyword arguments) for a weight format.

    ``fmt``: a name of ``variants.WEIGHTS`` (``bf16``, ``int8``, ``nf4-dq``, ...; quantized formats keep
    the other weights and compute in ``dtype``), or a dict of ``models.load`` options with an optional
    ``label``, such as ``{"label": "nf4, fp32 compute", "weights": "nf4", "compute_dtype": "fp32"}``.
    """
    opts = {"dtype": dtype, **fmt} if isinstance(fmt, dict) else {"weights": fmt, "dtype": dtype}
    label = opts.pop("label", None)
    req = models.Request.of(MODEL, **opts)  # an unknown format is refused here, with the names that exist
    return label or req.weights, opts


def row(
    loaded: models.Loaded,
    ref: Reference,
    *,
    label: str | None = None,
    prompts: tuple[Prompt, ...] = FIXED_PROMPTS,
    max_new_tokens: int = 24,
    batch_size: int = 4,
) -> dict:
    """Every quality number of one loaded model against ``ref``, as one table row."""
    t0 = time.perf_counter()
    scores = against_reference(loaded, ref, batch_size=batch_size)
    said = ask(loaded, prompts, max_new_tokens)
    r = loaded.request
    return {
        "weights": label or r.weights,
        "dtype": r.dtype,
        "compute_dtype": (r.compute_dtype or r.dtype) if r.quant in ("fp4", "nf4") else r.dtype,
        "perplexity": scores["perplexity"],
        "ppl_increase_pct": 100.0 * (scores["perplexity"] / ref.scores["perplexity"] - 1),
        "top1_agreement_pct": scores["top1_agreement_pct"],
        "mean_kl_nats": scores["mean_kl_nats"],
        "answers_correct": int(said.correct.sum()),
        "answers_asked": len(said),
        "footprint_mib": loaded.footprint_gib() * 1024,
        "load_s": loaded.load_s,
        "eval_s": time.perf_counter() - t0,
        "tokens_scored": scores["tokens"],
        "verified": loaded.verification.ok,
        "reference": ref.label,
    }


def table(
    formats=FORMATS,
    model: str = MODEL,
    *,
    reference_format: str | dict = "bf16",
    attention: str = "sdpa",
    window: int = WINDOW,
    n_windows: int | str | None = None,
    batch_size: int = 4,
    prompts: tuple[Prompt, ...] = FIXED_PROMPTS,
    max_new_tokens: int = 24,
    dtype: str = "bf16",
) -> pd.DataFrame:
    """One row per weight format of ``model``: perplexity, its increase over the reference, top-1
    agreement, mean KL, answers correct, footprint, load and evaluation time.

    Loads the reference (``reference_format``, a bf16 load by default) and scores it, then loads each
    format in turn through ``models.load``, scores it against the reference and frees it: one model in
    memory at a time (plus the reference's distributions). A format this machine cannot run gets a row
    with its reason in ``error`` instead of numbers.
    """
    current, opts = load_options(reference_format, dtype)
    loaded = models.load(model, attention=attention, **opts)
    ref = reference(loaded, window=window, n_windows=n_windows, batch_size=batch_size)
    ref.label = current
    rows = []
    for fmt in formats:
        fmt_label, fmt_opts = load_options(fmt, dtype)
        if fmt_label != current:  # the reference's own row reuses it
            models.unload(loaded)
            loaded, current = None, None
            try:
                loaded = models.load(model, attention=attention, **fmt_opts)
            except WorkbookError as e:
                rows.append({"weights": fmt_label, "error": e.problem})
                continue
            current = fmt_label
        rows.append(
            row(
                loaded,
                ref,
                label=fmt_label,
                prompts=prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
        )
    models.unload(loaded)
    return pd.DataFrame(rows)
