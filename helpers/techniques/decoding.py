"""Decode modes side by side: the dynamic cache, a static cache, torch.compile and a compiled loop (notebook 07).

- ``decode``: one row for a decode mode: ``dynamic`` (transformers' default cache), ``static`` (a pre-allocated
  cache, compilation switched off), ``compiled`` (static cache, and ``generate`` compiles its decode step with CUDA
  graphs) or ``compiled-loop`` (a greedy loop of your own around one compiled step, as gpt-fast does: no
  per-token work in Python beyond launching the graph), with the first call's time (compilation included) apart.
- The decode ceiling over batch sizes and every technique's share of the speed of light: ``roofline``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from .. import models
from ..errors import WorkbookError
from ..machine.hardware import sync
from ..measure import generation
from ..measure.batches import make_batch
from ..measure.ceilings import SpeedOfLight
from ..measure.protocol import Protocol

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


class GreedyLoop:
    """Greedy decoding without ``generate``: the prompt runs eagerly into a static cache, then each new token is one
    call of the model compiled with ``mode="reduce-overhead"`` (CUDA graphs on a GPU).

    The prefill stays eager so that the cache is allocated outside the compiled region (transformers marks its
    tensors as static addresses there, which CUDA graphs need). ``loop(n)`` returns the ``n`` new tokens.

    int8 layers break the graph inside every linear layer (bitsandbytes' outlier columns have a data-dependent
    shape), and the part of each attention layer after the break is compiled once per layer, specialised on
    ``self.layer_idx`` (seen with ``TORCH_LOGS=recompiles``: a 10-layer int8 model compiled that frame 10 times,
    every other frame at most 3 times, once per weight shape). Dynamo's default limit of 8 compilations per frame
    left the 24 later layers of a 32-layer model running that part eagerly; the loop raises the limit to the
    number of layers plus 8 while it compiles and runs. That limit is also a cap: on an H200 (torch 2.11) a 32-layer
    int8 model recompiled bitsandbytes' matmul once per layer and weight shape ("tensor 'A' size mismatch at index
    1. expected 4096, actual 11008") until it hit it, then ran that part uncompiled (the H100 run of 2026-11-26
    measured that loop slower than int8's ``generate``); hitting the cap now ends the first call with a
    ``WorkbookError`` (the row is ``unsupported``, with that reason) instead.
    ``batch``: a real prompt of that shape (a tokenizer's output); ``None``: random token ids.
    """

    def __init__(
        self, loaded: models.Loaded, batch_size: int, prompt_len: int, max_new_tokens: int, batch=None
    ):
        from transformers import StaticCache  # heavy: imported on first use

        self.loaded, self.model = loaded, loaded.model
        batch = make_batch(loaded, batch_size, prompt_len) if batch is None else batch
        self.batch = {k: v.to(loaded.device) for k, v in batch.items()}
        self.cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + max_new_tokens)
        self.step = torch.compile(self.model, mode="reduce-overhead", fullgraph=False, dynamic=False)
        layers = getattr(self.model.config, "num_hidden_layers", 0) or 0
        self.recompile_limit = max(torch._dynamo.config.recompile_limit, layers + 8)
        self.positions = [
            torch.full((batch_size, 1), prompt_len + i, dtype=torch.long, device=loaded.device)
            for i in range(max_new_tokens)
        ]

    def __call__(
        self, new_tokens: int, forced: torch.Tensor | None = None, stamp: Callable[[], object] | None = None
    ) -> torch.Tensor:
        """The greedy choice at each of ``new_tokens`` steps. With ``forced`` (batch x new_tokens tokens), step ``i``
        is fed ``forced[:, i - 1]`` instead of its own previous choice (teacher forcing), so one early difference
        does not change every later step. ``stamp`` is called after each token's logits (``generation.Stamps``)."""
        stamp = stamp or (lambda: None)
        if forced is not None:  # tokens made anywhere follow the model to its device
            forced = forced.to(self.loaded.device)
        limit = torch._dynamo.config.patch(
            recompile_limit=self.recompile_limit, fail_on_recompile_limit_hit=True
        )
        with torch.inference_mode(), self.loaded.context(), limit, _capped(self.recompile_limit):
            self.cache.reset()
            logits = self.model(**self.batch, past_key_values=self.cache, use_cache=True).logits
            stamp()
            token = logits[:, -1:].argmax(-1)
            out = [token]
            for i, pos in enumerate(self.positions[: new_tokens - 1]):
                fed = token if forced is None else forced[:, i : i + 1]
                # the previous step's outputs are read: replay may reuse them
                torch.compiler.cudagraph_mark_step_begin()
                logits = self.step(
                    input_ids=fed,
                    past_key_values=self.cache,
                    position_ids=pos,
                    cache_position=pos[0],
                    use_cache=True,
                ).logits
                stamp()
                token = logits[:, -1:].argmax(-1)
                out.append(token)
        return torch.cat(out, dim=1)


@contextlib.contextmanager
def _capped(limit: int):
    """Dynamo's hard failure at the recompile limit, as the workbook's error (see ``GreedyLoop``)."""
    try:
        yield
    except torch._dynamo.exc.FailOnRecompileLimitHit as e:
        raise WorkbookError(
            f"The compiled loop hit dynamo's recompile limit ({limit} compilations of one function: {e}); past it "
            "dynamo would run that function uncompiled on every later call, so the loop is not what it claims.",
            "Use mode 'dynamic' (or 'compiled' where it runs) for this format; bitsandbytes' int8 matmul is "
            "recompiled per layer and weight shape.",
        ) from e


def _generated(loaded, loop: GreedyLoop, new_tokens: int, exactly: bool = True) -> torch.Tensor:
    """``generate``'s greedy tokens after the prompt: exactly ``new_tokens``, or up to its end-of-text token."""
    least = {"min_new_tokens": new_tokens} if exactly else {}
    with torch.inference_mode(), loaded.context():
        out = loaded.model.generate(
            **loop.batch,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=loaded.model.config.pad_token_id or 0,
            **least,
        )
    return out[:, loop.batch["input_ids"].shape[1] :]


def _agreement(loaded, loop: GreedyLoop, tokens, prompt_len: int, new_tokens: int) -> dict:
    """The loop's tokens against ``generate``'s, running freely and teacher-forced (see ``decode``)."""
    reference = _generated(loaded, loop, new_tokens).to(tokens.device)
    forced = loop(new_tokens, forced=reference)
    return {
        "same_tokens_as_generate": float((tokens == reference).float().mean()),
        "next_token_agreement": float((forced == reference).float().mean()),
    }


def loop_against_generate(loaded: models.Loaded, batch: dict, new_tokens: int) -> dict:
    """The compiled greedy loop and ``generate`` on a real prompt (``batch``: a tokenizer's output), notebook 07.

    Compared over ``generate``'s tokens (it stops at end-of-text): ``loop`` and ``generate`` (the tokens),
    ``same_tokens``, ``first_difference`` (a step, or None) and teacher-forced ``next_token_agreement``. In fp32
    they should be identical; in bf16 compiled kernels round differently, and a near-tie may flip.
    """
    loop = GreedyLoop(loaded, *batch["input_ids"].shape, new_tokens, batch=batch)
    try:
        reference = _generated(loaded, loop, new_tokens, exactly=False)
        n = reference.shape[1]
        tokens = loop(new_tokens)[:, :n].to(reference.device)
        forced = loop(n, forced=reference)
    finally:
        torch._dynamo.reset()
    differ = (tokens != reference).any(0).nonzero()
    return {
        "loop": tokens,
        "generate": reference,
        "same_tokens": not len(differ),
        "first_difference": int(differ[0]) if len(differ) else None,
        "next_token_agreement": float((forced == reference).float().mean()),
    }


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


def _compile_s(mode: str, first_s: float, total_ms: float) -> float:
    """What the first call took beyond a warm one, for the modes that compile; NaN for those that do not
    (their first call's extra time is lazy initialisation, not compilation: ``first_call_s`` keeps it)."""
    return max(first_s - total_ms / 1e3, 0.0) if mode in ("compiled", "compiled-loop") else float("nan")


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
    the modes that compile (NaN for ``dynamic`` and ``static``).
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
    raises it."""
    plans = {m: _generate_kwargs(loaded, m) for m in modes}
    batch = make_batch(loaded, batch_size, prompt_len)
    runs, firsts, checks, refused = {}, {}, {}, {}
    try:
        for mode, (kwargs, _) in plans.items():
            try:
                if mode == "compiled-loop":
                    loop = GreedyLoop(loaded, batch_size, prompt_len, new_tokens)
                    runs[mode] = lambda stamps=None, loop=loop: loop(new_tokens, stamp=stamps)
                else:
                    runs[mode] = generation.generate_run(loaded, batch, new_tokens, **kwargs)
                t0 = time.perf_counter()
                with loaded.context():
                    tokens = runs[mode]()
                sync(loaded.device)
                firsts[mode] = time.perf_counter() - t0
                if mode == "compiled-loop":
                    checks[mode] = _agreement(loaded, loop, tokens, prompt_len, new_tokens)
            except WorkbookError as e:
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
    return [
        {"mode": m, "compiled_by": plans[m][1], "status": "unsupported", "error": refused[m]}
        if m in refused
        else {
            "mode": m,
            "compiled_by": plans[m][1],
            **rows[m],
            "first_call_s": firsts[m],
            "compile_s": _compile_s(m, firsts[m], rows[m]["total_ms"]),
            **checks.get(m, {}),
        }
        for m in modes
    ]
