"""Decode modes side by side: the dynamic cache, a static cache, torch.compile and a compiled loop (notebook 07).

- ``decode``: one row for a decode mode: ``dynamic`` (transformers' default cache), ``static`` (a pre-allocated
  cache, compilation switched off), ``compiled`` (static cache, and ``generate`` compiles its decode step with CUDA
  graphs) or ``compiled-loop`` (a greedy loop of your own around one compiled step, as gpt-fast does: no
  per-token work in Python beyond launching the graph: ``greedy_loop``), with the first call's time (compilation
  included) apart, and written to the cache's ledger of one-time costs.
- The decode ceiling over batch sizes and every technique's share of the speed of light: ``roofline``.
"""

from __future__ import annotations

import time

import torch

from .. import models
from ..errors import WorkbookError
from ..machine.hardware import sync
from ..measure import generation
from ..measure.batches import make_batch
from ..measure.ceilings import SpeedOfLight
from ..measure.protocol import Protocol
from ..models import checkpoints
from .greedy_loop import GreedyLoop, agreement

MODES = ("dynamic", "static", "compiled", "compiled-loop")


def generate_compiles(loaded: models.Loaded) -> str:
    """Empty if ``generate`` compiles its decode step for this model on this device, else why it does not."""
    if loaded.device.type != "cuda":
        return "generate compiles its decode step only on an accelerator (CUDA here), not on a CPU"
    quantizer = getattr(loaded.model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_compileable:
        return (
            f"transformers does not compile generate for {type(quantizer).__name__} models "
            "(their quantizer is not marked compileable)"
        )
    return ""


def _generate_kwargs(loaded: models.Loaded, mode: str) -> tuple[dict, str]:
    """``generate``'s keywords for a mode and what compiles it (``compiled``: refused where it does not)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    kwargs = {"cache_implementation": "static"} if mode in ("static", "compiled") else {}
    if mode == "static":
        kwargs["disable_compile"] = True
    if mode == "compiled":
        why_not = generate_compiles(loaded)
        if why_not:
            raise WorkbookError(
                f"mode 'compiled': {why_not}.", "Use mode 'compiled-loop', which compiles any model."
            )
    return kwargs, {"compiled": "generate", "compiled-loop": "torch.compile"}.get(mode, "")


def _forget_compiled(loaded: models.Loaded) -> None:
    torch._dynamo.reset()
    if hasattr(loaded.model, "_compiled_call"):
        del loaded.model._compiled_call


def decode(
    loaded: models.Loaded,
    mode: str,
    *,
    batch_size: int = 1,
    prompt_len: int,
    new_tokens: int,
    sol: SpeedOfLight | None = None,
    protocol: Protocol | None = None,
) -> dict:
    """Greedy decode in mode ``mode`` (see ``MODES``), timed per token by ``protocol`` (``decode_modes`` with one
    mode).

    ``compiled`` is transformers' own path: ``generate`` with a static cache compiles the decode step itself where
    it supports it (``generate_compiles`` says why not otherwise: the row is then ``unsupported``).
    ``compiled-loop`` compiles any model, quantized ones included (``GreedyLoop``), and checks itself against
    ``generate``: ``same_tokens_as_generate`` is the share of equal tokens when each runs freely (compiled kernels
    round differently, and after one different choice the two texts part for good), ``next_token_agreement`` the
    share of equal choices when the loop is fed ``generate``'s tokens (teacher forcing): near 1 when only rounding
    differs, near 0 for a broken loop.
    ``first_call_s`` is the first call, compilation included; ``compile_s`` what it took beyond a warm call, for
    the modes that compile (NaN for ``dynamic`` and ``static``), also written to the cache's ledger of one-time
    costs (``checkpoints.note_one_time``), which a chapter's own time leaves out.
    """
    kw = dict(batch_size=batch_size, prompt_len=prompt_len, new_tokens=new_tokens, sol=sol, protocol=protocol)
    return decode_modes(loaded, [mode], **kw)[0]


def decode_modes(
    loaded: models.Loaded,
    modes,
    *,
    batch_size: int = 1,
    prompt_len: int,
    new_tokens: int,
    protocol: Protocol | None = None,
    sol: SpeedOfLight | None = None,
    busy="auto",
) -> list[dict]:
    """Several decode modes of one model, each timed per token inside its runs (``measure.generation``) and
    interleaved by ``protocol`` so drift hits them alike. One row per mode, with ``decode`` 's columns and the
    protocol's. Of several modes, one whose first call is refused (``WorkbookError``: the compiled loop's recompile
    cap) is a row with ``status`` ``unsupported`` and its ``error``, and the others are measured; one mode alone
    raises it. Compilation, refused or not, goes to the cache's ledger of one-time costs."""
    plans = {m: _generate_kwargs(loaded, m) for m in modes}
    if any(by for _, by in plans.values()):
        checkpoints.keep_compiled_kernels()
    batch = make_batch(loaded, batch_size, prompt_len)
    runs, firsts, checks, refused = {}, {}, {}, {}
    what = f"{loaded.request.model} {loaded.request.weights}"  # the ledger's label of a compilation
    try:
        for mode, (kwargs, _) in plans.items():
            t0 = time.perf_counter()
            try:
                if mode == "compiled-loop":
                    loop = GreedyLoop(loaded, batch_size, prompt_len, new_tokens)
                    runs[mode] = lambda stamps=None, loop=loop: loop(new_tokens, stamp=stamps)
                else:
                    runs[mode] = generation.generate_run(loaded, batch, new_tokens, **kwargs)
                with loaded.context():
                    tokens = runs[mode]()
                sync(loaded.device)
                firsts[mode] = time.perf_counter() - t0
                if mode == "compiled-loop":
                    checks[mode] = agreement(loaded, loop, tokens, new_tokens)
            except WorkbookError as e:
                if mode == "compiled-loop":  # refused at the recompile cap, after compiling until it
                    checkpoints.note_compiled(f"{what} {mode} (refused)", time.perf_counter() - t0, 0.0)
                if len(plans) == 1:
                    raise
                refused[mode] = str(e)
                runs.pop(mode, None)
        rows = (
            generation.decode_rows(
                loaded, runs, batch_size, prompt_len, new_tokens, protocol=protocol, sol=sol, busy=busy
            )
            if runs
            else {}
        )
    finally:
        _forget_compiled(loaded)
    compile_s = {  # beyond a warm call, for the modes that compile (a one-time cost, in the ledger); NaN for the
        # others, whose first call's extra time is lazy initialisation (``first_call_s`` keeps it)
        m: checkpoints.note_compiled(f"{what} {m}", firsts[m], rows[m]["total_ms"] / 1e3)
        if plans[m][1]
        else float("nan")
        for m in runs
    }
    return [
        {"mode": m, "compiled_by": plans[m][1], "status": "unsupported", "error": refused[m]}
        if m in refused
        else {
            "mode": m,
            "compiled_by": plans[m][1],
            **rows[m],
            "first_call_s": firsts[m],
            "compile_s": compile_s[m],
            **checks.get(m, {}),
        }
        for m in modes
    ]
