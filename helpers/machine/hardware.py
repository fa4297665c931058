"""The machine the numbers come from: device, card name, memory cap, versions (notebook 00 reports them).

The lowest layer of the helpers: it imports nothing else from the workbook but ``errors``.
"""

from __future__ import annotations

import functools
import gc
import importlib.metadata
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WorkbookError


def device() -> torch.device:
    """The device the workbook measures on: the first CUDA GPU, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def free_memory() -> None:
    """Collect garbage and return cached GPU memory, so the next measurement starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync(dev: torch.device | str | None = None) -> None:
    """Wait for queued device work; a no-op on the CPU."""
    dev = torch.device(dev) if dev is not None else device()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@dataclass
class DeviceInfo:
    """The card (or CPU) the numbers come from."""

    kind: str  # "cuda" or "cpu"
    name: str
    count: int
    memory_gib: float | None
    compute_capability: str | None
    bf16: bool
    cpu: str
    cpu_cores: int


def gpu_memory_cap() -> float | None:
    """``$WORKBOOK_GPU_MEMORY_GIB``: act as a smaller GPU. The process may then allocate only that much
    (``torch.cuda.set_per_process_memory_fraction``; more raises out-of-memory, as on the smaller card)
    and the profile is chosen for that size. How a 15 GB T4's sizes are tested on a large GPU."""
    value = os.environ.get("WORKBOOK_GPU_MEMORY_GIB")
    if not value:
        return None
    try:
        cap = float(value)
    except ValueError:
        raise WorkbookError(
            f"WORKBOOK_GPU_MEMORY_GIB={value!r} is not a number.", "Set it to GiB, e.g. 15, or unset it."
        ) from None
    if cap <= 0:
        raise WorkbookError(
            f"WORKBOOK_GPU_MEMORY_GIB={value!r} must be positive.", "Set it to GiB, e.g. 15, or unset it."
        )
    return cap


def device_info() -> DeviceInfo:
    cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        total = p.total_memory / 2**30
        cap = gpu_memory_cap()
        if cap is not None and cap < total:
            for i in range(torch.cuda.device_count()):
                torch.cuda.set_per_process_memory_fraction(cap / total, i)
            total = cap
        return DeviceInfo(
            "cuda",
            p.name,
            torch.cuda.device_count(),
            round(total, 1),
            f"{p.major}.{p.minor}",
            torch.cuda.is_bf16_supported(including_emulation=False),
            cpu,
            cores,
        )
    return DeviceInfo("cpu", f"CPU ({cpu}, {cores} cores)", 0, None, None, True, cpu, cores)


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``'s "model name"; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_SMI_FIELDS = {
    "driver_version": "driver_version",
    "clocks.sm": "sm_clock_mhz",
    "clocks.mem": "mem_clock_mhz",
    "clocks.max.sm": "sm_clock_max_mhz",
}


def _nvidia_smi() -> dict:
    """The first GPU's driver version and clocks from ``nvidia-smi`` (empty when it is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    query = ",".join(_SMI_FIELDS)
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    values = [v.strip() for v in out.split(",")]
    return {k: (v if k == "driver_version" else _number(v)) for k, v in zip(_SMI_FIELDS.values(), values)}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]" on cards that do not report a clock
        return None


@functools.cache
def host_info() -> dict:
    """The host beside the card, read once per process ("at start"): CPU model and cores, and on a machine with
    an NVIDIA GPU the driver version and the SM and memory clocks in MHz (from ``nvidia-smi``; None on a CPU).

    Batch-1 decode in eager PyTorch is paced by this CPU (see ``busy``), so a figure is only comparable with the
    host it was measured on; clocks below their maximum at start mean a throttled or power-capped card."""
    info = {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count() or 1}
    info.update(dict.fromkeys(_SMI_FIELDS.values()))
    if torch.cuda.is_available():
        info.update(_nvidia_smi())
    return info


def card_slug(info: DeviceInfo | None = None) -> str:
    """A folder name for results of this card: ``nvidia-h100-80gb-hbm3``, ``cpu``."""
    info = info or device_info()
    if info.kind == "cpu":
        return "cpu"
    return "".join(c if c.isalnum() else "-" for c in info.name.lower()).strip("-").replace("--", "-")


PACKAGES = [
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "peft",
    "flash-attn",
    "flash-attn-3",
    "flash-attn-4",
    "kernels",
    "optimum",
    "plotly",
    "ipywidgets",
    "pandas",
]


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions that matter for the numbers (``None``: not installed)."""
    out = {"python": platform.python_version()}
    out.update({p: package_version(p) for p in PACKAGES})
    out["cuda"] = torch.version.cuda
    out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return out


def dtype_choices(dev: torch.device | None = None) -> list[str]:
    """Floating-point dtypes worth offering here, the profile's default first (for control panels).

    A GPU offers bf16 (when it has it), fp16 and fp32; a CPU offers fp32 and bf16 (fp16 matmuls on a
    CPU are slow enough to mislead). fp32 stays on offer so a reader can see flash kernels refuse it.
    """
    dev = dev or device()
    if dev.type == "cuda":
        return (["bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else []) + [
            "fp16",
            "fp32",
        ]
    return ["fp32", "bf16"]
