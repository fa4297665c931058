"""What this machine is, what can run on it, how fast it could possibly go, and which sizes to use.

Notebook 00 explains the report; notebook 07 uses the speed-of-light figures. Every capability in
the report comes from actually running a tiny instance of it here, not from a version check.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from . import variants
from .errors import WorkbookError


def device() -> torch.device:
    """The device the workbook measures on: the first CUDA GPU, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


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
        raise WorkbookError(f"WORKBOOK_GPU_MEMORY_GIB={value!r} is not a number.", "Set it to GiB, e.g. 15, or unset it.") from None
    if cap <= 0:
        raise WorkbookError(f"WORKBOOK_GPU_MEMORY_GIB={value!r} must be positive.", "Set it to GiB, e.g. 15, or unset it.")
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
        return DeviceInfo("cuda", p.name, torch.cuda.device_count(), round(total, 1),
                          f"{p.major}.{p.minor}", torch.cuda.is_bf16_supported(), cpu, cores)
    return DeviceInfo("cpu", f"CPU ({cpu}, {cores} cores)", 0, None, None, True, cpu, cores)


def card_slug(info: DeviceInfo | None = None) -> str:
    """A folder name for results of this card: ``nvidia-h100-80gb-hbm3``, ``cpu``."""
    info = info or device_info()
    if info.kind == "cpu":
        return "cpu"
    return "".join(c if c.isalnum() else "-" for c in info.name.lower()).strip("-").replace("--", "-")


PACKAGES = ["torch", "transformers", "accelerate", "bitsandbytes", "peft", "flash-attn",
            "flash-attn-3", "flash-attn-4", "kernels", "optimum", "plotly", "ipywidgets", "pandas"]


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
        return (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16", "fp32"]
    return ["fp32", "bf16"]


# --------------------------------------------------------------------------- attention probes

def _probe_dtype(dev: torch.device) -> torch.dtype:
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@functools.lru_cache(maxsize=None)
def _sdpa_backend_runs(backend: str, dtype: torch.dtype, dev: str, head_dim: int) -> tuple[bool, str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import warnings

    q = torch.randn(1, 2, 16, head_dim, device=dev, dtype=dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True, "ran a causal call"
    except RuntimeError as e:
        return False, str(e).splitlines()[0][:200]


def sdpa_backend_runs(backend: str, dtype: torch.dtype, dev: torch.device | str | None = None,
                      head_dim: int = 64) -> tuple[bool, str]:
    """Run one tiny causal SDPA call pinned to ``backend``; return (ran, why)."""
    dev = torch.device(dev) if dev is not None else device()
    return _sdpa_backend_runs(backend, dtype, str(dev), head_dim)


def has_module(name: str) -> bool:
    """True if ``name`` (dotted names too) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def flash_package_problem(variant: variants.AttentionVariant, dtype: torch.dtype,
                          dev: torch.device) -> str | None:
    """Why ``fa2``/``fa3``/``fa4`` cannot run here, or ``None`` if it can."""
    from transformers.utils import is_flash_attn_2_available

    if dev.type != "cuda":
        return "needs an NVIDIA GPU (this is a CPU)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16 or bf16, not {variants.dtype_name(dtype)}"
    if variant.name == "fa2" and not is_flash_attn_2_available():
        return "the flash-attn package is not installed"
    if variant.name == "fa3" and not has_module("flash_attn_interface"):
        return "the FlashAttention-3 package (flash_attn_interface) is not installed"
    if variant.name == "fa4" and not has_module("flash_attn.cute"):
        return "the FlashAttention-4 package (flash_attn.cute) is not installed"
    return None


@functools.lru_cache(maxsize=None)
def _flex_runs(dtype: torch.dtype, dev: str) -> tuple[bool, str]:
    try:
        from torch.nn.attention.flex_attention import flex_attention

        import warnings

        q = torch.randn(1, 2, 16, 64, device=dev, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex_attention(q, q, q)
        return True, "ran uncompiled (transformers compiles it)"
    except Exception as e:  # noqa: BLE001 - any failure means "cannot run here"
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def attention_problem(name: str, dtype: torch.dtype, dev: torch.device | None = None,
                      head_dim: int = 64) -> str | None:
    """Why the attention path ``name`` cannot run with ``dtype`` here, or ``None`` if it can."""
    dev = dev or device()
    v = variants.attention_variant(name)
    if v.package:
        return flash_package_problem(v, dtype, dev)
    if v.sdpa_backend:
        ok, why = sdpa_backend_runs(v.sdpa_backend, dtype, dev, head_dim)
        return None if ok else why
    if v.name == "flex":
        ok, why = _flex_runs(dtype, str(dev))
        return None if ok else why
    return None


def attention_support(dtype: torch.dtype | None = None) -> pd.DataFrame:
    """One row per attention path: does it run here with ``dtype`` (default: bf16/fp16 on GPU, fp32 on CPU)?"""
    dev = device()
    dtype = dtype or _probe_dtype(dev)
    rows = []
    for name, v in variants.ATTENTION.items():
        problem = attention_problem(name, dtype, dev)
        rows.append({"attention": name, "implementation": v.implementation,
                     "dtype": variants.dtype_name(dtype), "runs_here": problem is None,
                     "detail": problem or "runs", "what_it_is": v.description})
    return pd.DataFrame(rows)


def flash_path(dtype: torch.dtype | None = None) -> tuple[str, str]:
    """The FlashAttention path to use here and a sentence saying what it is.

    The flash-attn package (``fa2``) when it runs; otherwise PyTorch SDPA pinned to its
    FlashAttention-2 kernels (``sdpa-flash``); otherwise plain ``sdpa``, which picks what runs.
    """
    dev = device()
    dtype = dtype or _probe_dtype(dev)
    if attention_problem("fa2", dtype, dev) is None:
        return "fa2", "the flash-attn package (attn_implementation='flash_attention_2')"
    if attention_problem("sdpa-flash", dtype, dev) is None:
        where = "CUDA FlashAttention-2 kernels" if dev.type == "cuda" else "CPU flash-attention kernel"
        return "sdpa-flash", (f"flash-attn is not installed: PyTorch SDPA pinned to its {where} "
                              "(attn_implementation='sdpa' + sdpa_kernel(FLASH_ATTENTION))")
    return "sdpa", "no flash kernel runs here: PyTorch SDPA with the kernel it picks"


# --------------------------------------------------------------------------- quantization probes

@functools.lru_cache(maxsize=None)
def _quant_runs(mode: str, dev: str) -> tuple[bool, str]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install bitsandbytes)"
    try:
        import bitsandbytes as bnb

        dtype = torch.float16 if dev.startswith("cuda") else torch.float32
        if mode == "int8":
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=dtype, quant_type=mode)
        layer = layer.to(dev)
        layer(torch.randn(2, 64, device=dev, dtype=dtype))
        return True, f"a 64x64 {mode} layer ran on {dev}"
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def quantization_problem(mode: str | None, dev: torch.device | None = None) -> str | None:
    """Why bitsandbytes ``mode`` (``int8``/``fp4``/``nf4``) cannot run here, or ``None``."""
    if mode is None:
        return None
    dev = dev or device()
    ok, why = _quant_runs(mode, str(dev))
    return None if ok else why


def quantization_support() -> pd.DataFrame:
    """One row per bitsandbytes mode: does a tiny layer of it run on this device?"""
    dev = device()
    rows = []
    for mode in variants.QUANT_MODES[1:]:
        problem = quantization_problem(mode, dev)
        rows.append({"quant": mode, "runs_here": problem is None, "detail": problem or _quant_runs(mode, str(dev))[1]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- speed of light

# Vendor datasheet figures: dense (no sparsity) bf16 tensor-core throughput and memory bandwidth.
# For cards without bf16 (T4, V100) the fp16 tensor-core figure is given.
KNOWN_GPUS: dict[str, tuple[float, float]] = {
    # name fragment (lower case): (peak dense bf16 TFLOP/s, memory GB/s)
    "h200": (989.0, 4800.0),
    "h100 nvl": (835.0, 3900.0),
    "h100 pcie": (756.0, 2000.0),
    "h100": (989.0, 3350.0),  # SXM5 80GB HBM3
    "gh200": (989.0, 4000.0),
    "b200": (2250.0, 8000.0),
    "a100-sxm4-80gb": (312.0, 2039.0),
    "a100 80gb pcie": (312.0, 1935.0),
    "a100": (312.0, 1555.0),
    "l40s": (362.0, 864.0),
    "l4": (121.0, 300.0),
    "a10g": (125.0, 600.0),
    "a10": (125.0, 600.0),
    "rtx 4090": (165.0, 1008.0),
    "rtx 3090": (71.0, 936.0),
    "v100": (125.0, 900.0),
    "t4": (65.0, 320.0),
}


@dataclass
class SpeedOfLight:
    """The two ceilings of a card: arithmetic (TFLOP/s) and memory bandwidth (GB/s).

    ``source`` says where each figure came from ("datasheet: ..." or "measured: ...").
    Decode is bounded by bytes / bandwidth, prefill by FLOPs / throughput (notebook 07).
    """

    peak_tflops: float | None
    bandwidth_gbs: float | None
    source: str
    measured_tflops: float | None = None
    measured_gbs: float | None = None

    @property
    def tflops(self) -> float | None:
        """The best figure for comparisons: measured if available, else the datasheet's."""
        return self.measured_tflops or self.peak_tflops

    @property
    def gbs(self) -> float | None:
        return self.measured_gbs or self.bandwidth_gbs


def datasheet(name: str) -> tuple[float, float, str] | None:
    """Datasheet (TFLOP/s, GB/s, matched key) for a card name, or ``None`` if unknown."""
    low = name.lower()
    for key, (tf, bw) in KNOWN_GPUS.items():
        if key in low:
            return tf, bw, key
    return None


def measure_peaks(size: int | None = None, reps: int = 10) -> tuple[float, float]:
    """Measure (TFLOP/s of a square matmul, GB/s of a device copy counting read + write) here.

    bf16 on a GPU (8192-wide by default), fp32 on the CPU (1024-wide): a quick, honest ceiling.
    """
    from .measure import time_callable

    dev = device()
    gpu = dev.type == "cuda"
    n = size or (8192 if gpu else 1024)
    dtype = _probe_dtype(dev)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    t = time_callable(lambda: a @ b, device=dev, warmup=3, reps=reps)
    tflops = 2 * n**3 / (t.median_ms / 1e3) / 1e12
    nbytes = (2**30 if gpu else 2**26)
    src = torch.empty(nbytes // 4, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = time_callable(lambda: dst.copy_(src), device=dev, warmup=3, reps=reps)
    gbs = 2 * nbytes / (t.median_ms / 1e3) / 1e9
    return tflops, gbs


def speed_of_light(measure: bool = False) -> SpeedOfLight:
    """The card's ceilings from the datasheet table, and measured here if ``measure=True``."""
    info = device_info()
    sheet = datasheet(info.name) if info.kind == "cuda" else None
    sol = SpeedOfLight(sheet[0] if sheet else None, sheet[1] if sheet else None,
                       f"datasheet ({sheet[2]})" if sheet else "no datasheet entry for this device")
    if measure:
        sol.measured_tflops, sol.measured_gbs = measure_peaks()
        sol.source += "; measured here: matmul and device copy"
    return sol


# --------------------------------------------------------------------------- hardware profile

@dataclass
class Profile:
    """Sizes chosen from the hardware, so one notebook is a CPU test in CI and a GPU benchmark.

    Override with ``profile("cpu")`` or the environment variable ``WORKBOOK_PROFILE``.
    """

    name: str
    decoder: str  # catalog name of the main decoder model
    small_decoder: str  # a smaller decoder for sweeps that need many loads
    dtype: str
    seq_lens: list[int]
    batch_sizes: list[int]
    long_seq: int
    warmup: int
    reps: int
    new_tokens: int
    decoders: list[str] = field(default_factory=list)  # the architectures a comparison runs on
    memory_seq_lens: list[int] = field(default_factory=list)  # up to (and past) where eager attention fits
    short_seq: int = 512
    sweep_reps: int = 5  # reps for heavy sweeps (many points, long sequences)
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: str(v) for k, v in asdict(self).items()}]).T.rename(columns={0: "value"})


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", "llama-2-7b-tiny", "llama-2-7b-tiny", "fp32", [64, 128, 256], [1, 2, 4], 256,
                   warmup=1, reps=5, new_tokens=8, decoders=["llama-2-7b-tiny", "falcon-7b-tiny"],
                   memory_seq_lens=[64, 128, 256, 512], short_seq=64, sweep_reps=3),
    "small-gpu": Profile("small-gpu", "llama-1.1b", "opt-350m", "bf16", [512, 1024, 2048], [1, 2, 4, 8], 2048,
                         warmup=2, reps=10, new_tokens=64, decoders=["llama-1.1b", "opt-350m"],
                         memory_seq_lens=[512, 1024, 2048, 4096, 8192, 16384], short_seq=512, sweep_reps=5),
    "large-gpu": Profile("large-gpu", "llama-2-7b", "llama-1.1b", "bf16", [512, 1024, 2048, 4096], [1, 2, 4, 8], 4096,
                         warmup=3, reps=10, new_tokens=128, decoders=["llama-2-7b", "falcon-7b"],
                         memory_seq_lens=[1024, 2048, 4096, 8192, 16384, 32768], short_seq=512, sweep_reps=3),
}


def profile(name: str | None = None) -> Profile:
    """Pick the sizes for this machine (or the named profile).

    large-gpu: 40 GiB or more (a bf16 7B model, 13.5 GB, plus long activations fits);
    small-gpu: any smaller GPU (a 15 GB T4 cannot hold a bf16 7B model); cpu: no GPU.
    """
    import copy

    name = name or os.environ.get("WORKBOOK_PROFILE") or None
    info = device_info()
    if name is None:
        if info.kind == "cpu":
            name, reason = "cpu", "no GPU: tiny models of the same architectures"
        elif (info.memory_gib or 0) >= 40:
            name, reason = "large-gpu", f"{info.name} has {info.memory_gib} GiB: real 7B sizes"
        else:
            name, reason = "small-gpu", f"{info.name} has {info.memory_gib} GiB: ~1B models"
        if info.kind == "cuda" and gpu_memory_cap() is not None:
            reason += f" (capped by WORKBOOK_GPU_MEMORY_GIB={gpu_memory_cap():g})"
    else:
        reason = "chosen by name"
    if name not in PROFILES:
        raise WorkbookError(f"Unknown profile {name!r}.", f"Use one of {list(PROFILES)} or leave it unset.")
    p = copy.deepcopy(PROFILES[name])
    p.reason = reason
    if name != "cpu" and info.kind == "cuda" and not info.bf16:
        p.dtype = "fp16"
        p.notes.append(f"{info.name} has no bf16: fp16 instead")
    if name != "cpu" and info.kind == "cpu":
        p.notes.append("a GPU profile on a CPU: expect it to be very slow")
    return p


# --------------------------------------------------------------------------- the report

@dataclass
class EnvironmentReport:
    """Everything the numbers depend on. ``to_frame()`` for a table; fields for code."""

    device: DeviceInfo
    versions: dict
    attention: pd.DataFrame
    quantization: pd.DataFrame
    speed_of_light: SpeedOfLight

    def to_frame(self) -> pd.DataFrame:
        rows = {f"device.{k}": v for k, v in asdict(self.device).items()}
        rows.update({f"version.{k}": v for k, v in self.versions.items()})
        sol = self.speed_of_light
        rows.update({"sol.peak_tflops": sol.peak_tflops, "sol.bandwidth_gbs": sol.bandwidth_gbs,
                     "sol.measured_tflops": sol.measured_tflops, "sol.measured_gbs": sol.measured_gbs,
                     "sol.source": sol.source})
        return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))

    def runs(self, attention: str | None = None, quant: str | None = None) -> bool:
        """``report.runs(attention="sdpa-flash")`` / ``report.runs(quant="nf4")``."""
        if attention:
            return bool(self.attention.set_index("attention").loc[attention, "runs_here"])
        return bool(self.quantization.set_index("quant").loc[quant, "runs_here"])


def report(measure: bool = False) -> EnvironmentReport:
    """Probe this machine: device, versions, attention paths, quantization modes, speed of light."""
    return EnvironmentReport(device_info(), versions(), attention_support(), quantization_support(),
                             speed_of_light(measure=measure))
