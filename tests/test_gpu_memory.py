"""Memory returns: loading and unloading the 7B architecture again and again leaves the GPU as it was.

A notebook loads and frees models many times (every sweep over weight formats does); if ``models.unload`` left
anything behind, later measurements would start from a fuller card. Needs a CUDA GPU that holds the bf16 7B
model (skipped elsewhere; CI has none): ``python -m pytest tests/test_gpu_memory.py -s``. Its last log is under
``results/<card>/``.
"""

import pytest
import torch

from helpers import models

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
        reason="needs a CUDA GPU of 40 GiB or more",
    ),
]

CYCLES = 20


def _now():
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated(), torch.cuda.memory_reserved()


def test_twenty_load_unload_cycles_leave_memory_as_it_was():
    models.unload(
        models.load("llama-2-7b", weights="bf16", attention="sdpa")
    )  # the checkpoint is built, caches warm
    start_alloc, start_reserved = _now()
    weights = []
    for i in range(CYCLES):
        loaded = models.load("llama-2-7b", weights=("bf16", "nf4")[i % 2], dtype="bf16", attention="sdpa")
        weights.append(torch.cuda.memory_allocated() - start_alloc)
        models.unload(loaded)
        alloc, reserved = _now()
        print(
            f"cycle {i + 1:2d} ({loaded.request.weights}): {weights[-1] / 2**30:6.2f} GiB while loaded; after unload "
            f"allocated {alloc / 2**20:8.1f} MiB (start {start_alloc / 2**20:.1f}), "
            f"reserved {reserved / 2**20:8.1f} MiB "
            f"(start {start_reserved / 2**20:.1f})"
        )
    assert min(weights) > 3 * 2**30, "each cycle really loaded a model"
    assert abs(alloc - start_alloc) <= 0.01 * max(start_alloc, 2**30 / 100) + 2**20, (alloc, start_alloc)
    assert abs(reserved - start_reserved) <= 0.01 * max(start_reserved, 2**30) + 2**20, (
        reserved,
        start_reserved,
    )
