"""The multi-GPU measurement of notebooks 03 and 04, on its own: run it once on a machine with 2+ GPUs.

    python tools/multi_gpu.py [model]     (default: llama-2-7b)

Saves ``results/<card>/multi_gpu.csv``; the notebooks show that file where fewer GPUs are present.
"""

import sys

import torch

from helpers import results
from helpers.techniques import placement

if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else "llama-2-7b"
    rows = placement.multi_gpu_rows(model)
    path = results.save(
        rows,
        "multi_gpu",
        meta={"model": model, "gpus": torch.cuda.device_count(), "made_by": "tools/multi_gpu.py"},
    )
    print(rows.filter(regex="^(setup|gpus_used|budget_per_gpu_gib|gib_|prefill_ms|decode_tok_s)").to_string())
    print(path)
