"""What the machine is: the device and its memory, library versions, which attention paths and bitsandbytes modes
run here (found by running them), FlashAttention-4's first call, the hardware profiles that size every chapter, and
library notices explained once.

- ``hardware``: the device, the card's name and memory, versions, freeing memory.
- ``notices``: library notices explained once instead of printed everywhere (bitsandbytes' optional CPU kernel).
- ``flash4``: FlashAttention-4 (the flash-attn-4 package), found by running it; its compile time apart.
- ``probes``: which attention paths and bitsandbytes modes run here, found by running them.
- ``profiles``: sizes chosen from the hardware, one table per chapter.
- ``budgets``: each chapter's time budget per profile and the share of it each sweep spends.
"""

from . import budgets, flash4, hardware, notices, probes, profiles
from .hardware import device, device_info, free_memory, sync
from .profiles import Profile

__all__ = [
    "budgets",
    "flash4",
    "hardware",
    "notices",
    "probes",
    "profiles",
    "device",
    "device_info",
    "free_memory",
    "sync",
    "Profile",
]
