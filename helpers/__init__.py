"""Shared helpers of the Single-GPU Inference Workbook.

Import the modules you need by name, e.g. ``from helpers import models, measure, plots``.

- ``errors``: the one exception type, whose message always names the fix.
- ``variants``: the names of attention paths and weight formats, defined once.
- ``environment``: what this machine is, what can run on it, its speed of light, its profile.
- ``catalog``: real architectures by name, with their configs and tiny CPU-sized twins.
- ``models``: build/cache random-weight checkpoints, load them, verify what is in effect.
- ``trained``: the one trained decoder, SmolLM2-135M-Instruct, converted once from a packaged GGUF file.
- ``quality``: perplexity, agreement with a reference and answers to fixed questions, per weight format.
- ``legacy``: translate the 2023 guide's calls into today's API.
- ``measure``: timers, memory peaks, forward and generation metrics, OOM-safe sweeps.
- ``results``: save and load tidy result tables under ``results/``.
- ``plots``: live figures that gain a point per measurement.
- ``widgets``: control panels whose errors show in the panel, never kill the kernel.
"""

__version__ = "0.1.0"
