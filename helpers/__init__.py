"""Shared helpers of the Single-GPU Inference Workbook, in folders by idea, each layer using only those above it.

A chapter sets up with ``ch = environment.chapter("05", globals())`` (its parameters cell read by name) and
imports a few packages by name, e.g. ``from helpers import environment, measure, models, results, show,
techniques``. The map, lowest layer first:

- ``errors``: the one exception type, whose message always names the fix.
- ``variants``: the names of attention paths and weight formats, defined once.
- ``machine``: what this machine is and runs: hardware, probes, FlashAttention-4, profiles, library notices.
- ``results``: the registry of result tables, saving and loading them, shaping them, sentences written from them.
- ``models``: the catalog of real architectures, the trained model, checkpoints, requests, loading and verifying.
- ``measure``: the one measuring protocol and the rows built on it (forward passes, generations), sweeps.
- ``show``: live plots, static charts, control panels.
- ``techniques``: what the chapters teach: the 2023 calls translated, the encoder fast path, bitsandbytes opened
  up, placement, quality, answers, the recommender, LoRA training, decode modes, the roofline.
- ``environment``: the environment report and each chapter's set-up (``chapter``), the one entry point on top.

Each package's ``__init__`` lists its modules and exports its main names in ``__all__``.
"""

from .machine import notices

notices.install()  # before anything imports bitsandbytes

__version__ = "0.1.0"
