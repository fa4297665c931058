"""What only a GPU can show: CUDA-event timing against a kernel of known duration, allocator peaks, the busy share
from the profiler, CUDA graphs, the SDPA pin inside ``generate``, per-token stamps and the compiled loop on nf4.

Marked ``gpu``: skipped on a CPU. On a GPU: ``python -m pytest tests/test_gpu_protocol.py -v``.
"""

import time

import pytest
import torch

from helpers import measure, models
from helpers.measure import busy, generation, protocol, timing
from helpers.measure.batches import make_batch
from helpers.measure.protocol import Protocol
from helpers.techniques import decoding

pytestmark = pytest.mark.gpu

QUICK = Protocol(warmup=2, min_reps=6, max_reps=30, budget_s=10)


@pytest.fixture(scope="module")
def cycles_per_ms():
    """SM clock cycles per millisecond, calibrated: one 200 ms ``torch.cuda._sleep`` kernel against the wall clock
    (its launch costs microseconds), cross-checked with the card's clock rate where torch reports one."""
    torch.cuda._sleep(1_000_000)  # load the kernel
    torch.cuda.synchronize()
    guess = (torch.cuda.get_device_properties(0).clock_rate or 1_500_000) * 1.0  # kHz: cycles per ms
    t0 = time.perf_counter()
    torch.cuda._sleep(int(200 * guess))
    torch.cuda.synchronize()
    rate = 200 * guess / ((time.perf_counter() - t0) * 1e3)
    assert 0.5 < rate / guess < 2, "the calibrated clock is within a factor of two of the reported one"
    return rate


def test_cuda_events_time_a_kernel_of_known_duration(cycles_per_ms):
    for ms in (2.0, 20.0):
        s = protocol.time_one(lambda ms=ms: torch.cuda._sleep(int(ms * cycles_per_ms)), QUICK, busy=None)
        assert s.median_ms == pytest.approx(ms, rel=0.05), (ms, s.samples_ms)
        assert s.ci_reached and s.stopped_by == "ci", "a sleeping kernel is steady: ±2% within a few reps"


def test_allocator_peak_of_a_known_allocation():
    def allocate():
        a = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        b = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
        return a, b

    peak = timing.peak_memory(allocate, device="cuda")
    assert peak.above_before_gib == pytest.approx(0.75, abs=0.01)


def test_busy_share_of_a_gpu_bound_and_a_host_bound_call(cycles_per_ms):
    gpu = protocol.time_one(lambda: torch.cuda._sleep(int(5 * cycles_per_ms)), QUICK)
    assert gpu.busy_share > 0.9 and not gpu.host_bound

    def host():
        time.sleep(0.01)  # the host's work; the GPU waits
        torch.cuda._sleep(int(0.5 * cycles_per_ms))

    slow = protocol.time_one(host, QUICK)
    assert slow.busy_share < 0.2 and slow.host_bound
    meter = busy.profiler_meter(torch.device("cuda"))
    kernel_ms, wall_ms = meter(lambda: torch.cuda._sleep(int(10 * cycles_per_ms)))
    assert kernel_ms == pytest.approx(10, rel=0.05) and wall_ms >= kernel_ms


def test_a_cuda_graph_replay_is_timed_and_counted_busy(cycles_per_ms):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(1000)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(4):
            torch.cuda._sleep(int(cycles_per_ms))  # four 1 ms kernels in one launch
    s = protocol.time_one(graph.replay, QUICK)
    assert s.median_ms == pytest.approx(4.0, rel=0.05) and s.busy_share > 0.9


@pytest.fixture(scope="module")
def tiny_gpu():
    return models.load("llama-2-7b-tiny", dtype="bf16", attention="sdpa-flash")


def test_the_sdpa_pin_holds_inside_generate(tiny_gpu):
    """Pinned to flash, generate runs flash kernels; given a padded batch (a mask flash refuses), it raises
    "No available kernel" from inside generate instead of falling back to another kernel."""
    from torch.profiler import ProfilerActivity, profile

    run = generation.generate_run(tiny_gpu, make_batch(tiny_gpu, 1, 32), 4)
    with profile(activities=[ProfilerActivity.CUDA]) as prof, tiny_gpu.context():
        run()
    assert any("flash" in e.name.lower() for e in prof.events()), "the flash kernel ran"
    padded = generation.generate_run(tiny_gpu, make_batch(tiny_gpu, 2, 32, pad_fraction=0.25), 4)
    with pytest.raises(RuntimeError, match="(?i)no available kernel"), tiny_gpu.context():
        padded()


def test_per_token_stamps_on_the_gpu_sum_to_the_generation(tiny_gpu):
    run = generation.generate_run(tiny_gpu, make_batch(tiny_gpu, 1, 32), 16)
    with tiny_gpu.context():
        run()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        read = generation.timed(run, "cuda")()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3
    got = read()
    assert len(got["decode"]) == 15
    assert 0.8 * wall <= sum(got["decode"]) + got["prefill"][0] <= 1.01 * wall


def test_batch1_decode_of_a_tiny_model_is_host_bound(tiny_gpu):
    """Kernels of a 2-layer, 256-wide model take microseconds; Python and the launches take the rest."""
    row = measure.generate(tiny_gpu, 1, 32, 16, protocol=QUICK)
    assert row["host_bound"] and row["busy_share"] < 0.8


def test_compiled_loop_on_nf4_matches_generate():
    # fp32 compute: random tiny weights give near-even logits, whose argmax bf16 rounding would flip
    nf4 = models.load("llama-2-7b-tiny", dtype="fp32", quant="nf4")
    row = decoding.decode(
        nf4, "compiled-loop", prompt_len=16, new_tokens=8, protocol=Protocol(warmup=1, min_reps=2, max_reps=3)
    )
    assert row["next_token_agreement"] >= 0.9 and row["decode_tok_s"] > 0 and row["compile_s"] >= 0
    assert row["n"] >= 2 * 7
    models.unload(nf4)
