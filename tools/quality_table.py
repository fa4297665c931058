"""The trained model's quality per weight format, on its own: perplexity, agreement, answers (helpers.quality).

    python tools/quality_table.py [--windows N|all]     (default: every window of the corpus on a GPU)

Saves ``results/<card>/quality_smollm2.csv`` with the reference, the corpus and the window counts in its
metadata; notebooks 03-05 read it where they quote quality on a card.
"""

import argparse
import time
from pathlib import Path

from helpers import results
from helpers.models import checkpoints, trained
from helpers.techniques import quality

FORMATS = (
    "bf16",
    "fp32",
    "fp16",
    "int8",
    "fp4",
    "nf4",
    "nf4-dq",
    {"label": "nf4, fp16 compute", "weights": "nf4", "compute_dtype": "fp16"},
)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default=None, help="windows of the corpus to score: a number or 'all'")
    args = ap.parse_args()
    windows = None if args.windows is None else args.windows if args.windows == "all" else int(args.windows)
    t0 = time.perf_counter()
    table = quality.table(FORMATS, n_windows=windows)
    folder = checkpoints.build(trained.NAME)
    meta = {
        "model": trained.NAME,
        "reference": "bf16",
        "corpus": str(quality.CORPUS.relative_to(Path(__file__).resolve().parent.parent)),
        "window": quality.WINDOW,
        "tokens_scored": int(table.tokens_scored.max()),
        "weights_source": trained.info(folder)["weights"],
        "made_by": "tools/quality_table.py",
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    path = results.save(table, "quality_smollm2", meta=meta)
    print(table.drop(columns=["reference"], errors="ignore").round(4).to_string())
    print(path)
