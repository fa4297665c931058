"""A greedy decode loop of your own around one compiled step, as gpt-fast does (notebook 07's ``compiled-loop``).

- ``GreedyLoop``: the prompt runs eagerly into a static cache, then each new token is one call of the model compiled
  with CUDA graphs; int8 layers stay uncompiled (``eager_int8_layers``); dynamo's recompile limit is a cap that
  ends in a ``WorkbookError``.
- ``loop_against_generate``: the loop and ``generate`` on a real prompt, token by token, freely and teacher-forced.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from .. import models
from ..errors import WorkbookError
from ..machine.hardware import sync
from ..measure.batches import make_batch
from ..models import checkpoints


class GreedyLoop:
    """Greedy decoding without ``generate``: the prompt runs eagerly into a static cache, then each new token is one
    call of the model compiled with ``mode="reduce-overhead"`` (CUDA graphs on a GPU).

    The prefill stays eager so that the cache is allocated outside the compiled region (transformers marks its
    tensors as static addresses there, which CUDA graphs need). ``loop(n)`` returns the ``n`` new tokens.

    int8 layers break the graph inside every linear layer (bitsandbytes' outlier columns have a data-dependent
    shape). Left to dynamo, the frames of bitsandbytes' matmul after that break were compiled again for every layer
    and weight shape: on an H200 (torch 2.11) a 32-layer int8 model hit the recompile limit after 56 s of compiling
    ("tensor 'A' size mismatch at index 1. expected 4096, actual 11008"), and past the limit dynamo runs the frame
    uncompiled. So the loop runs each int8 linear layer eagerly (``torch.compiler.disable`` on its ``forward``:
    ``eager_int8_layers``) and compiles what lies between them: on a 2-layer CPU twin that removed every
    compilation of bitsandbytes' code (22 of 48 frames) and cut the first call from 11 s to 5 s. The part of each
    attention layer after a break is still compiled once per layer (``self.layer_idx`` is specialised), so the
    loop raises dynamo's limit of 8 to the number of layers plus 8 while it compiles and runs; hitting that cap
    ends the first call with a ``WorkbookError`` (the row is ``unsupported``, with that reason) instead of running
    on uncompiled.
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
        self.eager_layers = eager_int8_layers(self.model)
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
                # a forced token is copied into a tensor laid out as the loop's own (a column of ``forced`` has
                # its strides, and dynamo guards on strides: fed as a view, it compiled the step a second time)
                fed = (
                    token
                    if forced is None
                    else forced[:, i : i + 1].clone(memory_format=torch.contiguous_format)
                )
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


def eager_int8_layers(model: torch.nn.Module) -> int:
    """Keep dynamo out of every bitsandbytes int8 linear layer of ``model`` (``torch.compiler.disable`` around the
    layer's ``forward``, accelerate's hook included), so a compiled model calls them as they are instead of
    recompiling their insides per layer and shape (see ``GreedyLoop``). Outside ``torch.compile`` the wrapper
    costs about half a microsecond a call (measured on a CPU): for the 224 int8 layers of a 7B model, about 0.1 ms
    a token, under 0.1% of int8's step. Returns how many layers are kept out now (0 for a model without int8
    layers, or called again)."""
    try:
        from bitsandbytes.nn import Linear8bitLt  # heavy: imported on first use
    except ImportError:  # no bitsandbytes: no int8 layers
        return 0
    layers = [
        m
        for m in model.modules()
        if isinstance(m, Linear8bitLt) and not getattr(m.forward, "_torchdynamo_disable", False)
    ]
    for m in layers:
        m.forward = torch.compiler.disable(m.forward)
    return len(layers)


@contextlib.contextmanager
def _capped(limit: int):
    """Dynamo's hard failure at the recompile limit, as the workbook's error (see ``GreedyLoop``)."""
    try:
        yield
    except torch._dynamo.exc.FailOnRecompileLimitHit as e:
        raise WorkbookError(
            f"The compiled loop hit dynamo's recompile limit ({limit} compilations of one function: {e}); past it "
            "dynamo would run that function uncompiled on every later call, so the loop is not what it claims.",
            "Use mode 'dynamic' (or 'compiled' where it runs) for this format.",
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


def agreement(loaded, loop: GreedyLoop, tokens, new_tokens: int) -> dict:
    """The loop's ``tokens`` against ``generate``'s, running freely and teacher-forced (``decoding.decode``)."""
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
    ``compile_s``: what the loop's first call took beyond the same call again, written to the cache's ledger of
    one-time costs as the decode modes' compilations are.
    """
    checkpoints.keep_compiled_kernels()
    loop = GreedyLoop(loaded, *batch["input_ids"].shape, new_tokens, batch=batch)
    try:
        reference = _generated(loaded, loop, new_tokens, exactly=False)
        n = reference.shape[1]
        t0 = time.perf_counter()
        tokens = loop(new_tokens)[:, :n].to(reference.device)  # every step runs (and compiles) even if n is 1
        sync(loaded.device)
        t1 = time.perf_counter()
        loop(new_tokens)  # the same call warm: what the first took beyond it is compilation
        sync(loaded.device)
        first_s, warm_s = t1 - t0, time.perf_counter() - t1
        forced = loop(n, forced=reference)
    finally:
        torch._dynamo.reset()
    compile_s = checkpoints.note_compiled(
        f"{loaded.request.model} {loaded.request.weights} loop", first_s, warm_s
    )
    differ = (tokens != reference).any(0).nonzero()
    return {
        "compile_s": compile_s,
        "loop": tokens,
        "generate": reference,
        "same_tokens": not len(differ),
        "first_difference": int(differ[0]) if len(differ) else None,
        "next_token_agreement": float((forced == reference).float().mean()),
    }
