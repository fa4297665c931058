"""The measuring protocol on the CPU: the interval, the stopping rule, interleaving, ratios, the host-bound flag,
per-token decode timing and the reproduction command end to end."""

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import measure, results
from helpers.errors import WorkbookError
from helpers.machine import hardware
from helpers.measure import busy, generation, intervals, protocol
from helpers.measure.batches import make_batch
from helpers.measure.protocol import Call, Protocol
from helpers.techniques import decoding, greedy_loop

ROOT = Path(__file__).resolve().parent.parent


def fake_timer(durations: list[float]):
    """A timer that reads the duration the callable itself reports (simulated time: instant, deterministic)."""

    def timer(fn):
        fn()
        ms = durations[-1]
        return lambda: ms

    return timer


# --------------------------------------------------------------------------- intervals


def test_median_interval_uses_the_binomial_order_statistics():
    """The ranks of the textbook tables: n = 20 -> 6th and 15th, n = 100 -> 40th and 61st; n < 6 has none at 95%."""
    assert intervals.median_ci(range(1, 21)) == (6, 15)
    assert intervals.median_ci(range(1, 101)) == (40, 61)
    assert intervals.median_ci([3, 1, 2]) == (1, 3) and intervals.min_samples(0.95) == 6
    assert intervals.median_ci(list(range(3000)))[0] > 1400, "large n: no float overflow, a narrow interval"


def test_median_interval_covers_the_median_at_least_as_often_as_it_says():
    """Skewed (exponential) samples, whose median is ln 2: the interval holds it in >= 95% of 2000 draws."""
    rng = random.Random(1)
    hits = 0
    for _ in range(2000):
        lo, hi = intervals.median_ci([rng.expovariate(1.0) for _ in range(25)])
        hits += lo <= 0.6931 <= hi
    assert hits / 2000 >= 0.94


def test_ratio_of_medians_carries_its_interval():
    rng = random.Random(0)
    slow = [rng.gauss(20, 0.2) for _ in range(30)]
    fast = [rng.gauss(10, 0.1) for _ in range(30)]
    r = intervals.ratio_of_medians(slow, fast)
    assert r.value == pytest.approx(2.0, rel=0.01) and r.ci_low < r.value < r.ci_high and r.contains(2.0)
    assert r.ci_high - r.ci_low < 0.05
    same = intervals.ratio_of_medians(fast, list(fast))
    assert same.contains(1.0), "one set against itself: the interval holds 1"
    assert set(r.columns("speedup")) == {"speedup", "speedup_ci_low", "speedup_ci_high"}
    memory = intervals.ratio_of_medians([12.96], [17.8])
    assert memory.ci_low == memory.value == memory.ci_high, "one value each (a memory peak): no spread"


# --------------------------------------------------------------------------- the stopping rule


def test_a_quiet_callable_stops_as_soon_as_the_interval_is_reached():
    rng, durations = random.Random(0), []
    s = protocol.time_one(
        lambda: durations.append(rng.gauss(10, 0.05)),
        Protocol(warmup=1, min_reps=6, max_reps=500, target_ci=0.02),
        timer=fake_timer(durations),
        busy=None,
        device="cpu",
    )
    assert s.stopped_by == "ci" and s.ci_reached and len(s.samples_ms) == 6
    lo, hi = s.ci_ms
    assert lo <= s.median_ms <= hi and (hi - lo) / s.median_ms < 0.04
    summary = s.summary("latency")
    assert {
        "latency_ms",
        "latency_p10_ms",
        "latency_p90_ms",
        "latency_ci_low_ms",
        "latency_ci_high_ms",
    } <= set(summary)
    assert summary["n"] == 6 and summary["ci_reached"] is True


def test_a_noisy_callable_stops_at_the_budget_and_says_so():
    rng, durations = random.Random(0), []

    def noisy():
        time.sleep(0.002)
        durations.append(rng.lognormvariate(0, 1.0))

    t0 = time.perf_counter()
    s = protocol.time_one(
        noisy,
        Protocol(warmup=0, min_reps=6, max_reps=100_000, budget_s=0.3),
        timer=fake_timer(durations),
        busy=None,
    )
    assert s.stopped_by == "budget" and not s.ci_reached
    assert 0.3 <= time.perf_counter() - t0 < 2 and len(s.samples_ms) >= 6
    assert len(s.samples_ms) == len(durations), "every sample kept"
    capped = protocol.time_one(
        noisy, Protocol(warmup=0, min_reps=6, max_reps=10), timer=fake_timer(durations), busy=None
    )
    assert capped.stopped_by == "max_reps" and len(capped.samples_ms) == 10


def test_protocol_refuses_settings_that_cannot_work():
    with pytest.raises(WorkbookError, match="min_reps"):
        Protocol(min_reps=10, max_reps=5)
    with pytest.raises(WorkbookError, match="target_ci"):
        Protocol(target_ci=0)
    with pytest.raises(WorkbookError, match="variants"):
        protocol.time_interleaved({})


# --------------------------------------------------------------------------- interleaving


def test_interleaving_makes_drift_hit_every_variant_alike():
    """Each call is slower than the last (a card heating up). Two identical variants measured one after the other
    differ by the drift; interleaved, by less than one call's step."""
    durations: list[float] = []

    def drifting():
        durations.append(10.0 + 0.1 * len(durations))

    p = Protocol(warmup=2, min_reps=30, max_reps=30, target_ci=1e-9)
    kw = dict(timer=fake_timer(durations), busy=None, device="cpu")
    inter = protocol.time_interleaved({"a": drifting, "b": drifting}, p, **kw)
    gap = abs(inter["a"].median_ms / inter["b"].median_ms - 1)
    durations.clear()
    a, b = protocol.time_one(drifting, p, **kw), protocol.time_one(drifting, p, **kw)
    assert gap < 0.01 and b.median_ms / a.median_ms - 1 > 0.1, (gap, a.median_ms, b.median_ms)


def test_every_variant_is_warmed_before_any_is_timed_and_runs_in_its_context():
    log = []

    @contextlib.contextmanager
    def pinned(name):
        log.append(f"enter {name}")
        yield

    variants = {
        k: Call(
            lambda k=k: log.append(f"call {k}"),
            context=lambda k=k: pinned(k),
            setup=lambda k=k: log.append(f"setup {k}"),
        )
        for k in ("x", "y")
    }
    out = protocol.time_interleaved(
        variants, Protocol(warmup=2, min_reps=2, max_reps=2), busy=None, device="cpu"
    )
    calls = [e for e in log if e.startswith("call")]
    assert calls[:4] == ["call x", "call x", "call y", "call y"], "warm-up of each variant first"
    assert calls[4:] == ["call x", "call y", "call y", "call x"], "then rounds, the order rotated"
    assert log.count("enter x") == 4 and log.count("setup y") == 4, "context and setup around every call"
    assert all(len(s.samples_ms) == 2 for s in out.values())


# --------------------------------------------------------------------------- host-bound


def test_host_bound_flag_on_a_deliberately_slow_host_step():
    """A fake device timer: the callable reports how long its 'kernels' ran. One step spends 20 ms on the host for
    2 ms of kernels (host-bound); the other is all kernel time."""
    kernel_ms: list[float] = []

    def slow_host():
        time.sleep(0.02)
        kernel_ms.append(2.0)

    def busy_device():
        time.sleep(0.01)
        kernel_ms.append(10.0)

    def meter(fn):
        t0 = time.perf_counter()
        fn()
        return kernel_ms[-1], (time.perf_counter() - t0) * 1e3

    p = Protocol(warmup=1, min_reps=3, max_reps=3)
    out = protocol.time_interleaved({"host": slow_host, "gpu": busy_device}, p, busy=meter, device="cpu")
    assert out["host"].busy_share < 0.15 and out["host"].host_bound
    assert out["gpu"].busy_share > 0.8 and not out["gpu"].host_bound
    assert out["host"].flags()["host_bound"] is True
    cpu = protocol.time_one(busy_device, p, device="cpu")  # busy="auto": nothing to measure on a CPU
    assert cpu.busy_share != cpu.busy_share and not cpu.host_bound
    assert busy.union_ms([(0, 2), (1, 3), (5, 6)]) == 4


def test_device_spans_read_raw_agree_with_the_profilers_events():
    """The busy meter reads kineto's raw records (``prof.events()`` parses seconds' worth of Python objects for a
    7B generation); on a CPU profile both readings give the same events and the same busy time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    x = torch.ones(64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(200):
            x = torch.tanh(x @ x)

    class Parsed:  # the same run without raw records: the fallback path
        def events(self):
            return prof.events()

    raw, parsed = busy.device_spans_us(prof, DeviceType.CPU), busy.device_spans_us(Parsed(), DeviceType.CPU)
    assert len(raw) == len(parsed) >= 400
    assert busy.union_ms(raw) == pytest.approx(busy.union_ms(parsed), rel=1e-3)
    assert busy.device_spans_us(prof, DeviceType.CUDA) == [], "a CPU run has no kernel on a GPU"


# --------------------------------------------------------------------------- per-token decode timing

QUICK = Protocol(warmup=1, min_reps=2, max_reps=2)


def test_per_token_stamps_sum_to_the_generation_and_count_its_steps(tiny):
    run = generation.generate_run(tiny, make_batch(tiny, 1, 16), 8)
    run()  # warm
    fn = generation.timed(run, "cpu")
    t0 = time.perf_counter()
    read = fn()
    wall = (time.perf_counter() - t0) * 1e3
    got = read()
    assert len(got["decode"]) == 7 and len(got["prefill"]) == 1
    total = sum(got["decode"]) + got["prefill"][0]
    assert 0.8 * wall <= total <= wall, (total, wall)


def test_generate_with_a_protocol_times_each_token_of_each_run(tiny):
    row = measure.generate(tiny, 1, 16, 6, protocol=QUICK)
    assert row["timing"] == "per-token" and row["reps"] == row["runs"] == 2 and row["n"] == 2 * 5
    assert row["decode_tok_s_ci_low"] <= row["decode_tok_s"] <= row["decode_tok_s_ci_high"]
    assert row["prefill_ci_low_ms"] <= row["prefill_ms"] <= row["prefill_ci_high_ms"]
    assert row["decode_ms_per_token"] == row["decode_step_ms"] and row["stopped_by"] == "max_reps"
    if tiny.device.type == "cpu":
        assert row["busy_share"] != row["busy_share"] and row["host_bound"] is False, (
            "a CPU has no busy share"
        )
    else:  # a GPU's busy share, and the flag it sets
        assert 0 < row["busy_share"] <= 1 and row["host_bound"] == (row["busy_share"] < busy.HOST_BOUND_BELOW)


def test_generate_spends_no_call_beyond_its_check_warmup_and_rounds(tiny, monkeypatch):
    calls, real = [], tiny.model.generate
    monkeypatch.setattr(tiny.model, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    row = measure.generate(tiny, 1, 16, 4, protocol=Protocol(warmup=2, min_reps=3, max_reps=3), busy=None)
    # the check call is the first warm-up round, and its allocator peak is the row's memory: 2 + 3 calls
    assert len(calls) == 2 + 3 and row["runs"] == 3, (len(calls), row["runs"])


def test_own_loop_stamps_each_token(tiny):
    loop = greedy_loop.GreedyLoop(tiny, 1, 16, 6)
    loop.step = loop.model  # the eager model: the stamps, not compilation, are under test
    read = generation.timed(lambda stamps: loop(6, stamp=stamps), "cpu")()
    assert len(read()["decode"]) == 5
    torch._dynamo.reset()


def test_decode_modes_are_interleaved_and_compile_time_only_where_something_compiles(tiny):
    rows = decoding.decode_modes(tiny, ["dynamic", "static"], prompt_len=16, new_tokens=4, protocol=QUICK)
    assert [r["mode"] for r in rows] == ["dynamic", "static"]
    for r in rows:
        assert r["first_call_s"] > 0 and r["compile_s"] != r["compile_s"], (
            "nothing compiles: NaN, not a number"
        )
        assert r["n"] == 2 * 3 and r["decode_tok_s"] > 0


def test_compilations_are_timed_apart_and_written_to_the_one_time_ledger(tiny, monkeypatch, tmp_path):
    """flex attention's first call and the compiled loop's are compile time: in the row (``compile_s``) and in the
    cache's ledger, which ``tools/run_notebooks.py`` leaves out of a chapter's own time; what does not compile is
    not written there."""
    from helpers.models import checkpoints

    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored after the test
    torch._dynamo.reset()
    start = time.time()
    rows = {r["attention"]: r for r in measure.forwards(tiny, ["sdpa", "flex"], 1, 32, protocol=QUICK)}
    assert "compile_s" not in rows["sdpa"] and rows["flex"]["compile_s"] > 0
    modes = decoding.decode_modes(
        tiny, ["dynamic", "compiled-loop"], prompt_len=16, new_tokens=4, protocol=QUICK
    )
    noted = checkpoints.one_time_since(start)
    assert [e["what"] for e in noted] == [
        "compile llama-2-7b-tiny flex attention",
        "compile llama-2-7b-tiny fp32 compiled-loop",
    ]
    assert noted[0]["seconds"] == pytest.approx(rows["flex"]["compile_s"], abs=0.01)
    assert noted[1]["seconds"] == pytest.approx(modes[1]["compile_s"], abs=0.01) and modes[1]["compile_s"] > 0
    assert checkpoints.one_time_seconds(start) == pytest.approx(sum(e["seconds"] for e in noted))
    kept = tmp_path / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(kept) and any(kept.rglob("*")), (
        "kernels for the next run"
    )


def test_forward_paths_are_timed_interleaved_and_the_model_keeps_its_path(tiny):
    rows = measure.forwards(tiny, ["eager", "sdpa"], 1, 32, protocol=QUICK)
    assert [r["attention"] for r in rows] == ["eager", "sdpa"] and tiny.request.attention == "sdpa"
    for r in rows:
        assert r["latency_ci_low_ms"] <= r["latency_ms"] <= r["latency_ci_high_ms"] and r["n"] == 2
    speedup = intervals.ratio_of_medians(rows[0]["latency_samples_ms"], rows[1]["latency_samples_ms"])
    assert speedup.ci_low <= speedup.value <= speedup.ci_high, "a ratio's interval from two saved rows"
    one = measure.forward(tiny, 1, 32, protocol=QUICK)
    assert one["attention"] == "sdpa" and {"ci_reached", "host_bound", "busy_share"} <= set(one)
    any_call = measure.call_row(lambda: time.sleep(0.001), real_tokens=10, device="cpu", protocol=QUICK)
    assert any_call["n"] == 2 and "latency_ci_high_ms" in any_call and "host_bound" in any_call


# --------------------------------------------------------------------------- environment and reproduction


def test_every_results_file_records_the_host():
    info = hardware.host_info()
    assert info["cpu_model"] and info["cpu_cores"] >= 1
    if not torch.cuda.is_available():
        assert info["driver_version"] is None and info["sm_clock_mhz"] is None
    import pandas as pd

    path = results.save(pd.DataFrame({"key": ["a"], "value": [1]}), "helpers_exercise_environment")
    assert json.loads(path.with_suffix(".json").read_text())["host"] == json.loads(json.dumps(info))


def test_reproduce_judges_only_gpu_bound_figures_of_the_same_card():
    sys.path.insert(0, str(ROOT / "tools"))
    import pandas as pd
    import reproduce

    row = {"status": "ok", "latency_ms": 103.0, "host_bound": False, "busy_share": 0.97}
    stored = (100.0, 98.0, 104.0)
    fig = reproduce.figure("f", "t", "latency_ms", row, stored, (101.0, 105.0), True)
    assert fig["verdict"] == "reproduced" and fig["inside_stored"] and fig["drift"] == pytest.approx(0.03)
    assert (
        reproduce.figure("f", "t", "latency_ms", {**row, "latency_ms": 110.0}, stored, (0, 0), True)[
            "verdict"
        ]
        == "drifted"
    )
    host = reproduce.figure("f", "t", "latency_ms", {**row, "host_bound": True}, stored, (0, 0), True)
    assert host["verdict"].startswith("host-bound") and not host["compared"]
    assert (
        reproduce.figure("f", "t", "latency_ms", row, stored, (0, 0), False)["verdict"]
        == "other card: not judged"
    )
    assert reproduce.figure("f", "t", "latency_ms", row, None, (0, 0), True)["verdict"] == "no stored value"
    paced = reproduce.figure("f", "t", "latency_ms", row, (*stored, True), (0, 0), True)
    assert (
        paced["verdict"].startswith("host-bound") and paced["stored_host_bound"] and not paced["compared"]
    ), "a stored figure its host paced is no reference either"
    assert (
        reproduce.figure("f", "t", "latency_ms", row, (*stored, False), (0, 0), True)["verdict"]
        == "reproduced"
    )
    unflagged = reproduce.figure("f", "t", "latency_ms", row, (*stored, float("nan")), (0, 0), True)
    assert unflagged["verdict"] == "reproduced" and not unflagged["stored_host_bound"], "NaN: not flagged"
    assert reproduce._host_bound(pd.Series({"host_bound": float("nan")})) is False
    assert reproduce._host_bound(pd.Series({"latency_ms": 1.0})) is False, "an older table without the column"


def test_reproduce_reads_the_stored_h200_tables_of_today():
    """The stored run it compares with is timed per token: the spread comes from its decode steps (a run on the
    H200 crashed in a reader that wanted the columns of an older table)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import reproduce

    dec, _ = reproduce._stored("07_decode", "nvidia-h200")
    pre, _ = reproduce._stored("07_prefill", "nvidia-h200")
    flags = []
    for got, r in (
        (
            reproduce.stored_decode(dec, "llama-2-7b", w, m),
            reproduce._pick(dec, weights=w, mode=m, batch_size=1),
        )
        for w, m in (("bf16", "dynamic"), ("nf4", "compiled-loop"))
    ):
        assert got is not None and got[1] <= got[0] <= got[2], got
        flags.append(got[3])
        assert got[3] is bool(r.busy_share < busy.HOST_BOUND_BELOW), (
            "each stored figure carries its host-bound flag"
        )
    for n in (1024, 4096):
        got, r = reproduce.stored_prefill(pre, "llama-2-7b", n), reproduce._pick(pre, seq_len=n)
        flags.append(got[3])
        assert got[1] <= got[0] <= got[2] and got[3] is bool(r.busy_share < busy.HOST_BOUND_BELOW), (n, got)
    assert True in flags and False in flags, (
        "the stored rows above include host-bound ones and others",
        flags,
    )
    fwd = [(name, reproduce._stored(name, "nvidia-h200")[0]) for name in reproduce.FORWARD_TABLES]
    back, _ = reproduce._stored("01_backends", "nvidia-h200")
    for attention in reproduce.ATTENTIONS:  # the H200 has no helpers' exercise table: notebook 01's backends
        got, table = reproduce.stored_forward(fwd, "llama-2-7b", attention, 4096)
        assert table == "01_backends" and got[1] <= got[0] <= got[2], (attention, table, got)
        assert got[3] is bool(reproduce._pick(back, attention=attention).busy_share < busy.HOST_BOUND_BELOW)
    assert reproduce.stored_forward(fwd, "llama-2-7b", "eager", 123) == (None, "helpers_exercise_forward")
    r = reproduce._pick(dec, model="llama-2-7b", weights="bf16", mode="dynamic", batch_size=1)
    assert reproduce.stored_decode(dec, "llama-2-7b", "bf16", "dynamic")[1] == pytest.approx(
        1e3 / r.decode_step_p90_ms
    ), "the spread is the decode steps' p10-p90, as the forward figures' is their latency's"


def test_reproduce_runs_end_to_end_on_the_cpu():
    sys.path.insert(0, str(ROOT / "tools"))
    import reproduce

    t0 = time.perf_counter()
    path = reproduce.main(["--profile", "cpu"])
    wall = time.perf_counter() - t0
    import pandas as pd

    df = pd.read_csv(path)
    assert path.name.startswith("reproduce_") and path.parent.name == hardware.card_slug()
    assert {
        "figure",
        "stored",
        "new",
        "new_ci_low",
        "new_ci_high",
        "drift",
        "inside_stored",
        "host_bound",
    } <= set(df)
    assert df.figure.str.startswith("forward").sum() == 5 and df.figure.str.startswith("decode").sum() == 4
    ok = df[~df.verdict.str.startswith("not run")]
    assert (ok.new > 0).all() and (ok.new_ci_low <= ok.new).all() and (ok.new <= ok.new_ci_high).all()
    meta = results.meta(path.stem)
    assert meta["protocol"]["target_ci"] == 0.02 and "host" in meta
    saved = {n: reproduce._stored(n, meta["stored_card"])[1].get("saved") for n in reproduce.STORED_TABLES}
    assert meta["stored_saved"] == saved and any(saved.values()), (
        "when the stored tables it met were saved",
        saved,
    )
    print(f"reproduce on the CPU: {wall:.0f} s")


def test_with_interval_gives_a_quick_protocol_the_rounds_an_interval_needs():
    quick = protocol.Protocol(warmup=1, min_reps=2, max_reps=3, budget_s=2)
    sure = quick.with_interval()
    assert (sure.min_reps, sure.max_reps, sure.budget_s) == (6, 6, 2)
    assert protocol.Protocol(min_reps=8, max_reps=20).with_interval() == protocol.Protocol(
        min_reps=8, max_reps=20
    )


def test_reproduce_stopped_half_way_keeps_its_rows(monkeypatch, tmp_path):
    """A reproduction interrupted after its forward figures (a faked Ctrl-C, as SIGTERM becomes) saves them."""
    sys.path.insert(0, str(ROOT / "tools"))
    import reproduce

    monkeypatch.setenv("WORKBOOK_RESULTS", str(tmp_path))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "decode_figures", interrupted)
    path = reproduce.main(["--profile", "cpu"])
    import pandas as pd

    df = pd.read_csv(path)
    assert len(df) == 7 and df.figure.str.startswith("forward").sum() == 5  # 5 paths + 2 prefill lengths
    meta = results.meta(path.stem)
    assert meta["stopped"].startswith("stopped after") and "7 figures" in meta["stopped"]


def test_reproduce_appends_each_figure_as_it_is_measured(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import reproduce

    monkeypatch.setenv("WORKBOOK_RESULTS", str(tmp_path))
    seen = []

    def after_forward(plan, weights, modes, dec, same_card, keep):
        name = f"reproduce_{reproduce.dt.date.today().isoformat()}"
        seen.append(
            len(open(results.path_for(name)).read().splitlines()) - 1
        )  # rows on disk, less the header
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "decode_figures", after_forward)
    reproduce.main(["--profile", "cpu"])
    assert seen == [7]


def test_a_point_stops_on_its_share_of_a_sweep_after_its_minimum_rounds():
    rng, durations = random.Random(1), []

    def noisy():
        time.sleep(0.002)
        durations.append(rng.lognormvariate(0, 1.0))

    p = Protocol(warmup=0, min_reps=6, max_reps=100_000, budget_s=60.0)
    t0 = time.perf_counter()
    with protocol.time_share(0.2):
        s = protocol.time_one(noisy, p, timer=fake_timer(durations), busy=None)
    assert s.stopped_by == "share" and not s.ci_reached and time.perf_counter() - t0 < 2
    with protocol.time_share(0.0):  # a spent share: still the minimum rounds, never fewer
        spent = protocol.time_one(noisy, p, timer=fake_timer(durations), busy=None)
    assert spent.stopped_by == "share" and len(spent.samples_ms) == 6
    outside = protocol.time_one(
        noisy, Protocol(warmup=0, min_reps=6, max_reps=8), timer=fake_timer(durations)
    )
    assert outside.stopped_by == "max_reps", "no share outside the block"
    assert set(protocol.STOPS) == {"ci", "budget", "share", "max_reps"}
