import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomllib
import torch

from helpers import environment
from helpers.errors import WorkbookError
from helpers.machine import flash4, hardware, probes, profiles
from helpers.measure import ceilings, timing


def test_report_on_this_machine():
    rep = environment.report()
    assert rep.device.kind == ("cuda" if torch.cuda.is_available() else "cpu")
    assert rep.versions["torch"] and rep.versions["transformers"]
    frame = rep.to_frame()
    assert "device.name" in frame.index and "version.bitsandbytes" in frame.index
    assert set(rep.attention.attention) == set(probes.variants.ATTENTION)


def test_attention_capabilities_come_from_running():
    table = probes.attention_support().set_index("attention")
    assert table.loc["eager", "runs_here"] and table.loc["sdpa", "runs_here"]
    assert table.loc["sdpa-math", "runs_here"]
    if not torch.cuda.is_available():
        assert not table.loc["fa2", "runs_here"]
        assert "NVIDIA GPU" in table.loc["fa2", "detail"]
        # the CUDA-only SDPA kernels really refuse on a CPU
        assert not table.loc["sdpa-efficient", "runs_here"]


@pytest.mark.gpu  # the float32 refusal of the flash kernel is a CUDA behaviour
def test_sdpa_probe_reports_no_kernel_for_float32_flash_on_gpu():
    ok, why = probes.sdpa_backend_runs("FLASH_ATTENTION", torch.float32)
    assert not ok and why


def test_quantization_modes_run_on_this_device():
    table = probes.quantization_support().set_index("quant")
    assert list(table.index) == ["int8", "fp4", "nf4"]
    assert table.runs_here.all(), table.detail.to_dict()  # bitsandbytes 0.50 runs all three on a CPU too


def test_missing_bitsandbytes_names_the_fix(monkeypatch):
    real = probes.importlib.util.find_spec
    monkeypatch.setattr(
        probes.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    probes._quant_runs.cache_clear()
    try:
        problem = probes.quantization_problem("nf4")
        assert "pip install bitsandbytes" in problem
    finally:
        probes._quant_runs.cache_clear()


@pytest.mark.parametrize(
    "name,expected",
    [
        ("NVIDIA H100 80GB HBM3", (989.0, 3350.0)),
        ("NVIDIA H100 PCIe", (756.0, 2000.0)),
        ("NVIDIA H200", (989.0, 4800.0)),
        ("Tesla T4", (65.0, 320.0)),
        ("NVIDIA A100-SXM4-80GB", (312.0, 2039.0)),
    ],
)
def test_datasheet_lookup(name, expected):
    assert ceilings.datasheet(name)[:2] == expected


def test_unknown_card_has_no_datasheet():
    assert ceilings.datasheet("Imaginary Card 9000") is None


def test_measured_peaks_are_positive_and_plausible():
    tflops, gbs = ceilings.measure_peaks(size=256)
    assert 0 < tflops < 5000 and 0 < gbs < 20000


def test_measured_peaks_divide_the_work_by_the_median_time(monkeypatch):
    """The arithmetic, with the timer replaced: a 256-wide matmul is 2 * 256**3 FLOP; the copy on a CPU moves
    2**26 bytes twice (read + write). A wrong count, a mean instead of the median or a unit slip fails here."""
    times = iter([[1.0, 2.0, 9.0], [4.0, 5.0, 50.0]])  # milliseconds; the medians are 2 ms and 5 ms
    monkeypatch.setattr(ceilings, "time_one", lambda fn, protocol, **kw: timing.Timing(next(times), 3))
    monkeypatch.setattr(ceilings, "device", lambda: torch.device("cpu"))
    tflops, gbs = ceilings.measure_peaks(size=256)
    assert tflops == pytest.approx(2 * 256**3 / 2e-3 / 1e12)
    assert gbs == pytest.approx(2 * 2**26 / 5e-3 / 1e9)


def test_profile_from_hardware_and_override(monkeypatch):
    monkeypatch.delenv("WORKBOOK_PROFILE", raising=False)
    auto = profiles.pick()
    info = hardware.device_info()
    expected = "cpu" if info.kind == "cpu" else "large-gpu" if (info.memory_gib or 0) >= 40 else "small-gpu"
    assert auto.name == expected, (auto.name, info)
    monkeypatch.setattr(
        profiles,
        "device_info",
        lambda: hardware.DeviceInfo("cpu", "a CPU", 0, None, None, False, "x86_64", 2),
    )
    assert profiles.pick().name == "cpu"
    monkeypatch.setattr(
        profiles,
        "device_info",
        lambda: hardware.DeviceInfo("cuda", "a card", 1, 80.0, "9.0", True, "x86_64", 16),
    )
    assert profiles.pick().name == "large-gpu"
    assert profiles.pick("large-gpu").decoder == "llama-2-7b"
    monkeypatch.setenv("WORKBOOK_PROFILE", "small-gpu")
    assert profiles.pick().name == "small-gpu"
    with pytest.raises(WorkbookError, match="Unknown profile"):
        profiles.pick("huge")


def test_chapter_reads_the_parameters_cell_and_fills_in_its_nones(monkeypatch):
    monkeypatch.delenv("WORKBOOK_PROFILE", raising=False)
    cell = {"PROFILE": "cpu", "MODEL": None, "GEN_BATCHES": [1, 3], "BUDGET_FRACTION": None, "SOURCE": "x"}
    ch = environment.chapter("03", cell, measure_peaks=False)
    cpu, small = (profiles.pick(n).chapters["03"] for n in ("cpu", "small-gpu"))
    assert ch.profile.name == "cpu" and ch.gen_batches == [1, 3], ch.sizes
    # each None became the value this run uses; names that are not the chapter's sizes stay as they were
    filled = {
        "PROFILE": "cpu",
        "MODEL": cpu["model"],
        "GEN_BATCHES": [1, 3],
        "BUDGET_FRACTION": 0.65,
        "SOURCE": "x",
    }
    assert {k: v for k, v in cell.items() if k != environment.READ_KEY} == filled
    assert "HALF" not in cell and "MEASURE_PEAKS" not in cell, "only the names the cell has are filled in"
    assert cell[environment.READ_KEY]["read"] == ("BUDGET_FRACTION", "GEN_BATCHES", "MODEL")

    cell["HALF"] = cell["NEW_TOKENS"] = "stored by a later cell"  # names of sizes, not in the parameters cell
    # a later cell's name close to an unset parameter's: only a first set-up refuses it
    cell["ENCODER_DTYP"] = "fp16"
    again = environment.chapter("03", cell, measure_peaks=False)  # the set-up cell run again
    assert again.sizes == ch.sizes, "a second set-up reads only what the first one read"

    cell["PROFILE"] = "small-gpu"  # the profile changed, the parameters cell not run again
    moved = environment.chapter("03", cell, measure_peaks=False)
    assert moved.model == cell["MODEL"] == small["model"] != cpu["model"], (
        "a filled-in value follows the profile"
    )
    assert moved.gen_batches == [1, 3], "a value the reader set stays"

    cell.pop(environment.READ_KEY)
    # without the record (a first set-up), a name close to a parameter's is refused, and a later cell's value read
    with pytest.raises(WorkbookError, match="ENCODER_DTYP = 'fp16' .*reads ENCODER_DTYPE"):
        environment.chapter("03", cell, measure_peaks=False)
    del cell["ENCODER_DTYP"]
    with pytest.raises(WorkbookError, match="HALF|NEW_TOKENS"):
        environment.chapter("03", cell, measure_peaks=False)


def test_a_misspelt_name_is_not_refused_once_the_right_one_is_set(monkeypatch):
    monkeypatch.delenv("WORKBOOK_PROFILE", raising=False)
    # renamed to MODEL, MODLE still in the namespace
    fixed = {"PROFILE": "cpu", "MODLE": "llama-1.1b-tiny", "MODEL": "llama-1.1b-tiny"}
    assert environment.chapter("05", fixed, measure_peaks=False).model == "llama-1.1b-tiny"
    with pytest.raises(
        WorkbookError, match=r"MODLE = 'llama-1.1b-tiny', PROMTS = \[64\] .*reads MODEL, PROMPTS"
    ):
        environment.chapter("05", {"PROFILE": "cpu", "MODLE": "llama-1.1b-tiny", "PROMTS": [64]})


def test_card_slug():
    info = hardware.DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 1, 79.2, "9.0", True, "x86_64", 16)
    assert hardware.card_slug(info) == "nvidia-h100-80gb-hbm3"


def test_dtype_choices_start_with_the_profile_default():
    choices = hardware.dtype_choices()
    assert choices[0] == profiles.pick().dtype
    assert "fp32" in choices and len(set(choices)) == len(choices)


@pytest.mark.parametrize(
    "memory,bf16,name,dtype",
    [
        (79.2, True, "large-gpu", "bf16"),
        (15.0, False, "small-gpu", "fp16"),
        (24.0, True, "small-gpu", "bf16"),
    ],
)
def test_profile_fits_the_card(monkeypatch, memory, bf16, name, dtype):
    card = hardware.DeviceInfo("cuda", "a card", 1, memory, "7.5", bf16, "x86_64", 8)
    monkeypatch.setattr(profiles, "device_info", lambda: card)
    p = profiles.pick()
    assert (p.name, p.dtype) == (name, dtype)
    assert str(memory) in p.reason
    if not bf16:
        assert any("no bf16" in n for n in p.notes), "the notebooks say what they chose"


@pytest.mark.parametrize("value", ["abc", "-3"])
def test_a_bad_memory_cap_names_the_fix(monkeypatch, value):
    monkeypatch.setenv("WORKBOOK_GPU_MEMORY_GIB", value)
    with pytest.raises(WorkbookError, match="WORKBOOK_GPU_MEMORY_GIB"):
        hardware.gpu_memory_cap()


def test_fa4_is_unsupported_here_with_a_reason_that_names_the_fix(monkeypatch):
    """On this CPU (CI) fa4 is unsupported, with the reason; on a GPU each gate is tried with a faked card."""
    assert flash4.problem(torch.bfloat16, torch.device("cpu")) == "needs an NVIDIA GPU (this is a CPU)"
    cuda = torch.device("cuda", 0)
    assert "fp16 or bf16" in flash4.problem(torch.float32, cuda)
    monkeypatch.setattr(flash4, "capability", lambda dev: (8, 0))
    assert flash4.problem(torch.bfloat16, cuda) == (
        "needs a Hopper (SM90) or Blackwell (SM100/SM103) GPU; this card is SM80"
    )
    monkeypatch.setattr(flash4, "capability", lambda dev: (9, 0))
    monkeypatch.setattr(flash4, "version", lambda: None)
    assert 'pip install -e ".[flash]"' in flash4.problem(torch.bfloat16, cuda)
    monkeypatch.setattr(flash4, "version", lambda: flash4.PIN)
    monkeypatch.setattr(
        flash4, "first_call", lambda dtype, dev: flash4.FirstCall(False, "ImportError: no cutlass")
    )
    assert flash4.problem(torch.bfloat16, cuda) == "ImportError: no cutlass", (
        "the call decides, not the version"
    )
    ok = flash4.FirstCall(True, "ran", first_s=12.5, warm_s=0.5)
    monkeypatch.setattr(flash4, "first_call", lambda dtype, dev: ok)
    assert flash4.problem(torch.bfloat16, cuda) is None and ok.compile_s == 12.0


def test_fa4_probe_row_and_rows_name_the_package(monkeypatch):
    table = probes.attention_support().set_index("attention")
    if not torch.cuda.is_available():
        assert not table.runs_here["fa4"] and table.detail["fa4"] == "needs an NVIDIA GPU (this is a CPU)"
    monkeypatch.setattr(flash4, "version", lambda: "4.0.0b36")
    assert flash4.describe() == {"kernel_package": "flash-attn-4 4.0.0b36"}


def test_the_flash_extra_pins_the_version_the_probe_names():
    extra = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["flash"]
    assert extra[0].startswith(f"flash-attn-4[cu13]=={flash4.PIN};"), extra


def test_fa4_kernel_cache_goes_under_the_workbook_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    monkeypatch.delenv("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", raising=False)
    monkeypatch.delenv("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", raising=False)
    assert flash4.enable_kernel_cache() == tmp_path / "fa4-kernels"
    assert os.environ["FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"] == "1"


def test_bitsandbytes_kernel_notice_is_held_back_exactly_when_it_is_logged():
    """Importing bitsandbytes alone logs the optional-kernel notice on a CPU with AVX512-BF16; after ``helpers``
    nothing is printed and ``notices.silenced()`` lists it, with what it means (notebook 00)."""
    code = "import helpers, bitsandbytes\nfrom helpers import notices\nprint(notices.silenced().to_json())"
    with_helpers = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    alone = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True)
    assert "kernels-community" not in with_helpers.stderr, with_helpers.stderr
    held = pd.read_json(io.StringIO(with_helpers.stdout.splitlines()[-1]))
    assert len(held) == ("kernels-community" in alone.stderr), (held, alone.stderr[-500:])
    assert held.empty or held.meaning.str.contains("nothing to install").all()
