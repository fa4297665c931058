"""Time budgets: what one chapter may take on each hardware profile, and the share of it each sweep spends.

``CHAPTER_BUDGET_S``: one chapter's seconds on a profile, one-time costs (building checkpoints, converting the GGUF:
``./workbook prepare``; compiling flex attention and the decode modes) apart; ``sweep_seconds(profile, chapter)``:
the seconds each of its sweeps spends, split evenly over its points (``sweeps.run(budget_s=...)``), so a slow point
stops on its share after its minimum rounds and says so (``stopped_by="share"``). The rest of a chapter's budget is
loading, checks and single measurements.
``profiles`` puts both into every chapter's table (``ch.time_budget_s``, ``ch.sweep_seconds``).

A point costs at least its warm-up and minimum rounds whatever its share, so the point counts in the profiles, not
the shares, keep a chapter within its budget: sweep points are chosen to show each trend, not every size of the
slowest path. H200 runs of 2026-12-03 (01 took 344 s with batch sizes [1, 2, 4] and three padding fractions,
316 s with [1, 4] and two; 05's grid sweep of 14 points took 294 s of the chapter's 382, int8's points 37-39 s
each) led to the counts of today; on 2026-12-04 (commit ab75321, each chapter alone) 01 took 206 s with [1, 2],
03 228 s, 04 232 s, 05 195 s with 11 points and 07 194 s with its compilations (133 s) apart; with 00 (32 s),
02 (70 s) and 06 (130 s), 1287 s of the workbook's 1500.
"""

from __future__ import annotations

CHAPTER_BUDGET_S = {"cpu": 600.0, "small-gpu": 900.0, "large-gpu": 300.0}
WORKBOOK_BUDGET_S = {"large-gpu": 1500.0}  # all eight chapters on one H100/H200
SWEEP_SECONDS = {
    "00": {"forward": 40},
    "01": {"speed": 90, "padding": 45, "memory": 30, "backends": 25},
    "02": {"encoder": 60, "opt": 25},
    "03": {"speed": 60, "compute": 20},
    "04": {"speed": 40, "offload": 20, "colab": 40},
    "05": {"grid": 160},
    "06": {"layout": 20, "setups": 40},
    "07": {"decode": 110, "prefill": 20, "batches": 30},
}
SWEEP_SCALE = {"cpu": 1.0, "small-gpu": 2.5, "large-gpu": 1.0}


def sweep_seconds(profile: str, chapter: str) -> dict[str, float]:
    """Each sweep's seconds in ``chapter`` on ``profile`` (a small GPU is slower: its shares are larger)."""
    return {name: s * SWEEP_SCALE[profile] for name, s in SWEEP_SECONDS[chapter].items()}
