"""The learning rate over a training run, and the gradient clip: the recipe that gives notebook 06 its margin.

- ``Schedule``: linear warm-up, cosine decay, gradient clipping; ``lr_at(step, steps, lr)``.
- ``RECIPE``: the workbook's schedule (``training.train`` uses it unless told otherwise).
- ``CONSTANT``: the plain AdamW loop at one rate, for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """How the learning rate moves over a run, and the gradient's largest norm.

    A linear warm-up over ``warmup_share`` of the steps (at least one step; none at 0) from a tenth of ``lr``, then
    a cosine decay to ``final_share`` x ``lr`` at the last step; each step's gradient is clipped to
    ``max_grad_norm``. The warm-up keeps AdamW's first updates, taken while its estimate of each gradient's size
    rests on one step, from throwing the adapter off; the decay lets a run that has learned settle instead of
    oscillating at the peak rate; the clip caps the step a single steep batch can take. Notebook 06 shows the
    margin this gives (``tools/training_margin.py``: seeds, threads, kernel families, learning rates on a CPU).
    """

    warmup_share: float = 0.2
    final_share: float = 0.1
    max_grad_norm: float | None = 1.0

    def lr_at(self, step: int, steps: int, lr: float) -> float:
        """The learning rate of ``step`` (from 0) of a run of ``steps`` steps at peak rate ``lr``."""
        warmup = max(1, round(self.warmup_share * steps)) if self.warmup_share > 0 else 0
        if step < warmup:
            return lr * (0.1 + 0.9 * step / warmup)
        done = (step - warmup) / max(1, steps - 1 - warmup)
        return lr * (
            self.final_share + (1 - self.final_share) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        )


# the plain AdamW loop, for comparison
CONSTANT = Schedule(warmup_share=0.0, final_share=1.0, max_grad_norm=None)

RECIPE = Schedule()
