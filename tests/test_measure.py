import time
import warnings

import pandas as pd
import pytest
import torch

from helpers import measure, results
from helpers.errors import WorkbookError
from helpers.machine import hardware
from helpers.measure import ceilings, protocol, sweeps, timing, workload

ONCE = measure.Protocol(warmup=0, min_reps=1, max_reps=1)  # a row's shape, not a figure


def test_the_protocol_times_a_workload_of_known_duration():
    t = measure.time_one(
        lambda: time.sleep(0.02), measure.Protocol(warmup=1, min_reps=7, max_reps=7), device="cpu"
    )
    assert len(t.samples_ms) == 7
    assert 19.5 <= t.median_ms <= 35, t.samples_ms
    assert t.quantile_ms(0.1) <= t.median_ms <= t.quantile_ms(0.9)
    summary = t.summary("latency")
    assert {"latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_std_ms", "reps"} <= set(summary)


def test_warmup_calls_are_made_and_not_timed():
    calls = []
    t = measure.time_one(
        lambda: calls.append(1), measure.Protocol(warmup=3, min_reps=4, max_reps=4), device="cpu"
    )
    assert len(calls) == 7 and len(t.samples_ms) == 4
    with pytest.raises(WorkbookError):
        measure.Protocol(min_reps=0)


def test_no_old_measuring_path_is_left():
    """One way to measure: no warm-up/reps keywords beside the protocol, no subtract-a-run decode."""
    import inspect

    for fn in (measure.forward, measure.generate, measure.call_row, measure.padding_vs_packing):
        params = inspect.signature(fn).parameters
        assert "protocol" in params and not {"warmup", "reps"} & set(params), fn.__name__
    assert not hasattr(timing, "time_callable") and not hasattr(measure.generation, "decode_row")


def test_memory_peak_is_nan_on_cpu_not_a_guess():
    peak = timing.peak_memory(lambda: torch.ones(10), device="cpu")
    assert all(pd.isna(v) for v in peak.summary().values())


@pytest.mark.gpu  # allocator peaks exist on CUDA only
def test_memory_peak_sees_a_known_allocation():
    peak = timing.peak_memory(
        lambda: torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda"), device="cuda"
    )
    assert peak.above_before_gib == pytest.approx(0.25, abs=0.01)


def test_is_oom_recognises_a_real_allocation_failure():
    with pytest.raises(RuntimeError) as err:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: no machine has it
    assert sweeps.is_oom(err.value)
    assert not sweeps.is_oom(ValueError("shape mismatch"))


def test_sweep_records_oom_and_goes_on(tmp_path):
    def measure_one(p):
        if p["size"] == "huge":
            torch.empty(2**50, dtype=torch.uint8)  # provoked, not pretended
        if p["size"] == "bad":
            raise WorkbookError("cannot run", "do something else")
        if p["size"] == "bug":
            raise KeyError("oops")
        return {"latency_ms": 1.0}

    seen = []
    path = tmp_path / "partial.csv"
    df = sweeps.run(
        [{"size": s} for s in ["small", "huge", "bad", "bug", "last"]],
        measure_one,
        on_row=seen.append,
        save_to=path,
    )
    assert list(df.status) == ["ok", "OOM", "unsupported", "error", "ok"]
    assert "allocate" in df.error[1] and "KeyError" in df.error[3]
    assert len(seen) == 5
    assert list(pd.read_csv(path).status) == list(df.status)


def test_sweep_keeps_measured_points_when_interrupted():
    rows = []

    def measure_one(p):
        if p["i"] == 2:
            raise KeyboardInterrupt  # the reader presses stop
        return {"y": p["i"]}

    with pytest.raises(KeyboardInterrupt):
        sweeps.run([{"i": i} for i in range(4)], measure_one, rows=rows)
    assert [r["y"] for r in rows] == [0, 1]


def test_a_failing_plot_does_not_lose_the_row():
    def broken_plot(row):
        raise RuntimeError("plot broke")

    with pytest.warns(UserWarning, match="row is kept"):
        df = sweeps.run([{"i": 1}], lambda p: {"y": 2}, on_row=broken_plot)
    assert df.y.tolist() == [2]


def test_forward_row(tiny):
    sol = ceilings.SpeedOfLight(1.0, 10.0, "test")
    row = measure.forward(tiny, 2, 32, protocol=measure.Protocol(warmup=1, min_reps=3, max_reps=3), sol=sol)
    assert row["tokens"] == 64 and row["reps"] == 3 and row["latency_ms"] > 0
    assert row["tflops"] > 0 and row["sol_fraction_compute"] == pytest.approx(row["tflops"] / 1.0)
    assert row["attention"] == "sdpa" and row["model"] == "llama-2-7b-tiny"


def test_forward_counts_only_real_tokens_with_padding(tiny):
    row = measure.forward(tiny, 4, 40, pad_fraction=0.25, protocol=ONCE)
    assert row["tokens"] == 120  # pads of 0, 7, 13 and 20 positions


def test_generate_makes_exactly_the_tokens_asked(tiny):
    row = measure.generate(tiny, 2, 16, 6, protocol=measure.Protocol(warmup=0, min_reps=2, max_reps=2))
    assert row["new_tokens"] == 6 and row["decode_tok_s"] > 0 and row["prefill_ms"] > 0
    assert row["total_ms"] > row["prefill_ms"] and row["timing"] == "per-token"
    assert row["n"] == 2 * 5, "two generations of 5 decode steps each, every step a sample"
    assert row["decode_tok_s"] == pytest.approx(2 * 1e3 / row["decode_ms_per_token"])


def test_flop_count_by_hand(tiny):
    cfg = tiny.model.config
    n = workload.count_params(tiny.model)
    # the embedding table is excluded, the lm_head (untied) is a matmul and counts
    emb = cfg.vocab_size * cfg.hidden_size
    assert n == sum(p.numel() for p in tiny.model.parameters()) - emb
    b, s = 2, 32
    attn = 4 * b * s * s * cfg.hidden_size * cfg.num_hidden_layers * 0.5
    assert workload.forward_flops(tiny.model, b, s) == 2 * n * b * s + attn


def test_decode_step_bytes_count_the_rows_read_and_the_4bit_scales(tiny):
    """A step looks up one embedding row per sequence, not the whole table; 4-bit constants are read too."""
    from helpers import models
    from helpers.techniques import quant

    emb = tiny.model.get_input_embeddings().weight
    row, table = emb.shape[1] * emb.element_size(), emb.numel() * emb.element_size()
    weights = workload.weight_bytes(tiny.model)
    assert workload.decode_step_bytes(tiny.model) == weights - table + row
    assert workload.decode_step_bytes(tiny.model, 4) == weights - table + 4 * row
    nf4 = models.load("llama-2-7b-tiny", dtype="fp32", quant="nf4", double_quant=True)
    every_byte = int(quant.bytes_breakdown(nf4.model).bytes.sum())  # quantization constants included
    assert workload.decode_step_bytes(nf4.model) == every_byte - table + row
    assert workload.decode_step_bytes(nf4.model) > workload.weight_bytes(nf4.model) - table + row


def test_kv_cache_bytes(tiny):
    cfg = tiny.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert (
        workload.kv_cache_bytes(tiny.model, 3, 10)
        == 2 * cfg.num_hidden_layers * 3 * 10 * cfg.num_key_value_heads * head_dim * 4
    )


def test_results_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_RESULTS", str(tmp_path))
    df = pd.DataFrame([{"attention": "sdpa", "latency_ms": 1.5}, {"attention": "eager", "latency_ms": 3.0}])
    path = results.save(df, "01_backends", meta={"profile": "cpu"})
    assert path.parent.name == hardware.card_slug()
    back = results.load("01_backends")
    pd.testing.assert_frame_equal(back, df)
    meta = results.meta("01_backends")
    assert meta["profile"] == "cpu" and meta["rows"] == 2 and meta["versions"]["torch"]
    assert results.saved().name.tolist() == ["01_backends"]
    with pytest.raises(WorkbookError, match="No saved results"):
        results.load("01_memory")
    with pytest.raises(WorkbookError, match="registered"):
        results.save(df, "unit", meta={"profile": "cpu"})
    with pytest.raises(WorkbookError, match="key columns"):
        results.save(df.drop(columns="attention"), "01_backends", meta={"profile": "cpu"})
    with pytest.raises(WorkbookError, match="metadata"):
        results.save(df, "01_backends", meta={})


def test_append_row_grows_columns(tmp_path):
    path = tmp_path / "x.csv"
    results.append_row(path, {"a": 1})
    results.append_row(path, {"a": 2, "b": "OOM"})
    results.append_row(path, {"a": 3})
    df = pd.read_csv(path)
    assert df.a.tolist() == [1, 2, 3] and df.b.tolist()[1] == "OOM"


def test_model_sized_oom_is_a_row_not_a_crash(tiny):
    # 16384 x 4096 token ids fit (0.5 GiB); their 64 GiB of hidden states do not: the model's own
    # allocation fails for real, the row says OOM, and the next point is measured
    def point(p):
        return measure.forward(tiny, p["batch_size"], p["seq_len"], protocol=ONCE)

    df = sweeps.run([{"batch_size": 2**14, "seq_len": 4096}, {"batch_size": 1, "seq_len": 16}], point)
    assert df.status.tolist() == ["OOM", "ok"], df.error.tolist()
    assert "allocate" in df.error[0]


def test_sweep_explains_no_available_kernel_with_pytorchs_own_reasons_and_passes_other_warnings_on(recwarn):
    """A real refusal: the flash kernel pinned for values wider than the keys. PyTorch warns "Flash attention kernel
    not used because:" and then, as a separate warning, the reason; the row carries both, joined."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def refused(p):
        warnings.warn(f"an unrelated warning {p['a']}", UserWarning, stacklevel=2)
        q, v = torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 32)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, q, v)

    df = sweeps.run([{"a": 1}, {"a": 1}], refused)
    assert (df.status == "unsupported").all()
    want = "No available kernel: Flash attention kernel not used because: Flash attention requires q,k,v"
    assert df.error.str.startswith(want).all(), df.error[0]
    assert not df.error.str.contains("Triggered internally").any(), "source locations dropped"
    passed_on = [str(w.message) for w in recwarn if "unrelated" in str(w.message)]
    assert passed_on == ["an unrelated warning 1"], "other warnings reach the reader, once"


def test_kernel_reasons_join_each_header_with_the_reasons_after_it():
    got = sweeps.kernel_reasons(
        [
            "Memory efficient kernel not used because: (Triggered internally at sdp_utils.cpp:1.)",
            "Expected query, key and value to all be of dtype: {Half, BFloat16}. (Triggered internally at x.h:2.)",
            "Flash attention kernel not used because: (Triggered internally at sdp_utils.cpp:3.)",
            "Flash attention only supports head dimension up to 256 (Triggered internally at x.h:4.)",
            "Flash attention requires q,k,v to have the same last dimension (Triggered internally at x.h:5.)",
        ]
    )
    assert got == [
        "Memory efficient kernel not used because: Expected query, key and value to all be of dtype: {Half, BFloat16}.",
        "Flash attention kernel not used because: Flash attention only supports head dimension up to 256; "
        "Flash attention requires q,k,v to have the same last dimension",
    ]


def test_an_unsupported_rows_reason_is_the_pinned_kernels_own():
    error = (
        "No available kernel: Memory efficient kernel not used because: For dense input, both fused kernels require "
        "query, key and value to have the same num_heads.; Flash attention kernel not used because: Flash attention "
        "has been runtime disabled.; cuDNN attention kernel not used because: cuDNN attention has been "
        "runtime disabled."
    )
    efficient = sweeps.unsupported_reason("sdpa-efficient", error)
    assert efficient.startswith("Memory efficient kernel") and "Flash" not in efficient, efficient
    assert sweeps.unsupported_reason("sdpa-flash", error) == (
        "Flash attention kernel not used because: Flash attention has been runtime disabled."
    )
    assert sweeps.unsupported_reason("sdpa-cudnn", error).startswith("cuDNN attention kernel")  # torch 2.11
    older = error.replace("; cuDNN attention kernel", "; CuDNN attention kernel")
    assert sweeps.unsupported_reason("sdpa-cudnn", older).startswith("CuDNN attention kernel"), "older torch"
    other = "Attention 'fa2' cannot run here: flash-attn is not installed."
    assert sweeps.unsupported_reason("fa2", other) == other, "a path that pins no kernel: the whole text"
    assert sweeps.unsupported_reason("sdpa-flash", "no header here") == "no header here"
    short = sweeps.unsupported_reason("sdpa-efficient", error, limit=40)
    assert len(short) == 40 and short.endswith("…"), short
    assert sweeps.unsupported_reason("sdpa", float("nan")) == "", "a row read back from a CSV: NaN"


def test_a_sweep_says_how_far_it_is_and_how_long_is_left(monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    monkeypatch.setattr(sweeps.time, "perf_counter", lambda: next(clock))
    progress = sweeps.Progress(4, show=False)
    assert progress.text() == "0 of 4 points, 10 s elapsed"
    assert progress.step("ok") == "1 of 4 points, 20 s elapsed, about 60 s left (1 ok)"
    progress.step("OOM")
    progress.step("ok")
    assert progress.step("ok") == "done: 4 of 4 points in 50 s (3 ok, 1 OOM)"


def test_a_long_sweep_reports_minutes(monkeypatch):
    clock = iter([0.0, 200.0, 200.0])
    monkeypatch.setattr(sweeps.time, "perf_counter", lambda: next(clock))
    progress = sweeps.Progress(3, show=False)
    assert progress.step("ok") == "1 of 3 points, 3 min 20 s elapsed, about 6 min 40 s left (1 ok)"


def test_a_sweep_with_a_budget_gives_each_point_its_share_of_what_is_left():
    left = []

    def point(p):
        left.append(protocol._DEADLINE.get() - time.perf_counter())  # what the protocol inside would see
        time.sleep(0.2 if p["i"] == 0 else 0.0)  # the first point overruns its 0.1 s: the later ones get less
        return {"y": 1}

    df = sweeps.run([{"i": i} for i in range(3)], point, show_progress=False, budget_s=0.3)
    shares = df.time_share_s.tolist()
    assert shares[0] == pytest.approx(0.1, abs=0.01) and left[0] <= shares[0]
    assert shares[1] <= 0.05, "the overrun is taken from the points left"
    assert shares[2] == pytest.approx(2 * shares[1], abs=0.03) and min(shares) >= 0, (
        "a quick point leaves its rest"
    )
    with pytest.raises(WorkbookError, match="positive number of seconds"):
        sweeps.run([{"i": 0}], point, budget_s=0)
    plain = sweeps.run([{"i": 1}], lambda p: {"y": 1}, show_progress=False)
    assert "time_share_s" not in plain and protocol._DEADLINE.get() is None


def test_progress_names_the_sweeps_budget(monkeypatch):
    clock = iter([0.0, 10.0, 20.0])
    monkeypatch.setattr(sweeps.time, "perf_counter", lambda: next(clock))
    progress = sweeps.Progress(2, show=False, budget_s=90)
    assert (
        progress.step("ok") == "1 of 2 points, 10 s elapsed of its 1 min 30 s budget, about 10 s left (1 ok)"
    )
