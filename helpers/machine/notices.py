"""Library notices the workbook explains once instead of letting them print in every chapter (notebook 00).

One today: on a CPU with AVX512-BF16, importing bitsandbytes 0.50 tries to fetch an optional fused 4-bit CPU kernel
from a model hub through the ``kernels`` package, and logs "Failed to load CPU gemm_4bit_forward from
kernels-community: No module named 'kernels'" when it cannot. Nothing is missing: bitsandbytes then runs the CPU
4-bit kernels it ships itself, and every 4-bit figure on a CPU comes from those (no machine of the workbook reaches
a hub anyway). Importing ``helpers`` installs the filter before bitsandbytes is imported; ``silenced()`` lists what
it held back, with what each notice means.
"""

from __future__ import annotations

import logging

import pandas as pd

# (logger, the start of the message, what it means): each one is held back and explained by ``silenced()``
EXPLAINED = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        "optional fused 4-bit CPU kernel from a model hub (the `kernels` package) not loaded; bitsandbytes runs "
        "the CPU 4-bit kernels it ships instead: nothing to install",
    ),
)
_held: list[dict] = []


class _Explained(logging.Filter):
    def __init__(self, start: str, meaning: str):
        super().__init__()
        self.start, self.meaning = start, meaning

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.start):
            return True
        _held.append({"library": record.name.split(".")[0], "notice": message, "meaning": self.meaning})
        return False


def install() -> None:
    """Hold back the notices in ``EXPLAINED`` (once per process; called when ``helpers`` is imported)."""
    for name, start, meaning in EXPLAINED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Explained) and f.start == start for f in logger.filters):
            logger.addFilter(_Explained(start, meaning))


def silenced() -> pd.DataFrame:
    """The notices held back in this process so far (library, notice, meaning); empty where none was logged."""
    return pd.DataFrame(_held, columns=["library", "notice", "meaning"]).drop_duplicates("notice")
