"""Shared helpers of the Single-GPU Inference Workbook.

Import the modules you need by name, e.g. ``from helpers import environment, models, measure, plots``.
A chapter sets up with ``ch = environment.chapter("05", ...)``. The modules, lowest layer first:

- ``errors``: the one exception type, whose message always names the fix.
- ``notices``: library notices explained once instead of printed everywhere (bitsandbytes' optional CPU kernel).
- ``variants``: the names of attention paths and weight formats, defined once.
- ``hardware``: the device, the card's name and memory, versions, freeing memory.
- ``timing``: CUDA-event and perf_counter timers, allocator peaks.
- ``intervals``: confidence intervals of a median (order statistics) and of a ratio of medians (bootstrap).
- ``busy``: the GPU's busy share of a timed call (kernel time / wall time) and the host-bound flag.
- ``protocol``: the one measuring protocol: warm-up, interleaved variants, repeat until the median is known to
  ±2% or a time budget is spent; every figure with its interval.
- ``flash4``: FlashAttention-4 (the flash-attn-4 package), found by running it; its compile time apart.
- ``probes``: which attention paths and bitsandbytes modes run here, found by running them.
- ``ceilings``: the card's speed of light, from its datasheet and measured here.
- ``profiles``: sizes chosen from the hardware, one table per chapter.
- ``environment``: the environment report and each chapter's set-up (``chapter``).
- ``architectures``: the published configurations of the catalog's architectures.
- ``catalog``: real architectures by name, with their configs and tiny CPU-sized twins.
- ``checkpoints``: catalog models built once with random weights; where every model is read from.
- ``verification``: what was asked for against what is in effect after loading.
- ``request``: what a model is asked to be (dtype, attention, weights, bitsandbytes options), checked first.
- ``models``: load any model with any attention path and weight format, verified.
- ``workload``: FLOPs, bytes and parameter counts; the share of the speed of light reached.
- ``batches``: input batches (random ids, padded, packed), sizes checked at the door.
- ``steps``: decode timed where it happens: a timestamp per generated token inside one generation.
- ``checks``: one relative error; kernels and attention paths checked against each other; on real logits, a
  tolerance per dtype that wrong attention masks miss.
- ``measure``: a forward pass, a generation (prefill, decode), padded against packed layouts.
- ``registry``: every result table by name: the chapter that writes it, its columns and metadata.
- ``results``: save and load result tables under ``results/<card>/``.
- ``sweeps``: OOM-safe sweeps (``sweeps.run``) with progress; failures become rows.
- ``tables``: speed-ups and ratios against a baseline.
- ``trained``: the one trained decoder, SmolLM2-135M-Instruct, converted once from a packaged GGUF file.
- ``answers``: greedy answers of a chat model to fixed factual questions, checked for the expected words;
  greedy continuations of plain text.
- ``quality``: perplexity, agreement with a reference and answers to fixed questions, per weight format.
- ``charts``: static charts of a results table (bars, faceted bars, the Pareto front); log ticks in full.
- ``plots``: live figures that gain a point per measurement.
- ``widgets``: control panels whose errors show in the panel, never kill the kernel.
- ``legacy``: translate the 2023 guide's calls into today's API.
- ``prose``: sentences that state a measured figure, written by code from the results (``prose.say``); the rule
  that markdown states none.
- ``texts``: real English sentences and paraphrases for the encoder chapters.
- ``fastpath``: PyTorch's nested-tensor encoder fast path (what BetterTransformer ran).
- ``quant``: bitsandbytes opened up: where the bytes go, LLM.int8() by hand.
- ``placement``: memory budgets, where ``device_map`` put each layer, several GPUs.
- ``roofline``: the decode ceiling over batch sizes; every technique's share of the speed of light.
- ``speed``: decode modes against the speed of light (interleaved by the protocol), the roofline; the compiled
  greedy loop against ``generate`` on a real prompt.
- ``recommend``: the Pareto front and a recommender over measured tables, with an optional perplexity limit.
- ``schedules``: the learning rate over a run (warm-up, cosine decay) and the gradient clip.
- ``training``: LoRA training on the workbook's own prose, padded or packed; sentences to teach a trained model.
"""

from . import notices

notices.install()  # before anything imports bitsandbytes

__version__ = "0.1.0"
