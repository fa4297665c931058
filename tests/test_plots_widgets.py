import math

import pytest
import torch

from helpers.errors import WorkbookError
from helpers.measure import sweeps
from helpers.results import prose
from helpers.show import charts, live, panels


def test_live_plot_gains_a_point_per_row():
    p = live.LivePlot("seq_len", "latency_ms", "attention")
    for i, s in enumerate([64, 128, 256]):
        p.add({"seq_len": s, "latency_ms": 1.0 + i, "attention": "sdpa", "status": "ok"})
        assert p.point_count() == i + 1
    p.add({"seq_len": 64, "latency_ms": 2.0, "attention": "eager"})
    fig = p.figure()
    assert [t.name for t in fig.data] == ["sdpa", "eager"]
    assert list(fig.data[0].x) == [64, 128, 256]


def test_failed_points_are_drawn_not_dropped():
    p = live.LivePlot("batch_size", "latency_ms", ["attention", "weights"], ceiling=(5.0, "speed of light"))
    p.add({"batch_size": 1, "latency_ms": 3.0, "attention": "eager", "weights": "bf16", "status": "ok"})
    p.add(
        {
            "batch_size": 8,
            "latency_ms": float("nan"),
            "attention": "eager",
            "weights": "bf16",
            "status": "OOM",
            "error": "CUDA out of memory",
        }
    )
    fig = p.figure()
    p.add(
        {
            "batch_size": 8,
            "latency_ms": float("nan"),
            "attention": "sdpa",
            "weights": "bf16",
            "status": "unsupported",
            "error": "No available kernel",
        }
    )
    fig = p.figure()
    crosses = [t for t in fig.data if t.name == "not measured"]
    assert len(crosses) == 1 and list(crosses[0].x) == [8], "one cross per x, however many failed there"
    assert crosses[0].text[0] == "1 OOM / 1 unsupported" and "No available kernel" in crosses[0].hovertext[0]
    assert p.point_count() == 1 and p.failure_count() == 2
    assert fig.layout.shapes, "the ceiling line is drawn"


def test_named_x_values_become_bars_in_arrival_order():
    p = live.LivePlot("attention", "tflops")
    for a, v in [("eager", 1.0), ("sdpa", 3.0), ("flex", 2.0)]:
        p.add({"attention": a, "tflops": v})
    fig = p.figure()
    assert fig.data[0].type == "bar" and list(fig.data[0].x) == ["eager", "sdpa", "flex"]
    assert list(fig.layout.xaxis.categoryarray) == ["eager", "sdpa", "flex"]


def test_mime_bundle_has_lab_and_html_forms():
    p = live.LivePlot("x", "y")
    p.add({"x": 1, "y": 2})
    bundle = live.mime_bundle(p.figure())
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["x"] == [1]
    assert "cdn.plot.ly" in bundle["text/html"] and "<html" not in bundle["text/html"]


def _panel(run, **kw):
    return panels.ControlPanel({"mode": ["a", "b"], "batch_size": [1, 2], "pad": [False, True]}, run, **kw)


def test_panel_click_runs_and_plots_each_row():
    plot = live.LivePlot("batch_size", "latency_ms", "mode")

    def run(p):
        for i in range(3):
            yield {"batch_size": p["batch_size"] + i, "latency_ms": 1.0, "mode": p["mode"]}

    panel = _panel(run, plot=plot)
    panel.set(mode="b", batch_size=2).click()
    assert len(panel.rows) == 3 and plot.point_count() == 3 and not panel.errors
    assert "done: 3" in panel.status.value and not panel.button.disabled
    assert isinstance(panel.controls["pad"], panels.W.Checkbox)
    (shown,) = panel.output.outputs  # one figure in the panel, replaced at each point, never appended
    assert shown["output_type"] == "display_data"
    assert len(shown["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"]) == 3, (
        "the figure holds every row"
    )


def test_panel_shows_workbook_errors_with_the_fix():
    def run(p):
        raise WorkbookError("flash attention needs a GPU", "use attention='sdpa'")

    panel = _panel(run)
    panel.click()  # must not raise
    assert "needs a GPU" in panel.status.value and "Fix: use attention=" in panel.status.value
    assert "Fix:" in panel.last_error and not panel.button.disabled


def test_panel_survives_a_real_out_of_memory():
    def run(p):
        torch.empty(2**50, dtype=torch.uint8)

    panel = _panel(run)
    panel.click()
    assert "Out of memory" in panel.status.value and panel.last_error.startswith("Out of memory")


def test_panel_survives_a_bug_and_shows_the_traceback():
    def run(p):
        return {}["missing"]

    panel = _panel(run)
    panel.click()
    assert "KeyError" in panel.status.value and "traceback" in panel.status.value
    # and keeps working afterwards
    panel.run = lambda p: {"batch_size": 1, "latency_ms": 2.0}
    panel.click()
    assert "done: 1" in panel.status.value


def test_panel_reports_rows_that_failed_in_a_sweep():
    def run(p):
        return sweeps.run([{"batch_size": 1}], lambda q: torch.empty(2**50, dtype=torch.uint8))

    panel = _panel(lambda p: run(p).to_dict("records"))
    panel.click()
    assert "not measured (OOM)" in panel.status.value


def test_panel_refuses_a_value_it_does_not_offer():
    panel = _panel(lambda p: {})
    with pytest.raises(ValueError, match="not offered"):
        panel.set(mode="z")


def test_panel_rows_carry_the_options_they_were_measured_with():
    panel = _panel(lambda p: {"latency_ms": 1.0})
    panel.set(mode="b", batch_size=2).click()
    assert panel.rows[-1] == {"mode": "b", "batch_size": 2, "pad": False, "latency_ms": 1.0}


def test_panel_options_can_carry_labels():
    panel = panels.ControlPanel(
        {"pad": [("natural", None), ("75%", 0.75)], "n": [1, 2]}, lambda p: {"latency_ms": 1.0}
    )
    assert panel.values() == {"pad": None, "n": 1}
    assert panel.controls["pad"].label == "natural" and panel.controls["n"].label == "1"
    panel.set(pad=0.75).click()
    assert panel.rows[-1]["pad"] == 0.75 and panel.controls["pad"].label == "75%"
    panel.set(pad=None)
    assert panel.values()["pad"] is None


def test_speed_of_light_overlay_labels_each_point_and_draws_the_limit():
    rows = [
        {"batch_size": 1, "weights": "bf16", "decode_tok_s": 40.0, "sol_fraction_bandwidth": 0.2},
        {"batch_size": 4, "weights": "bf16", "decode_tok_s": 160.0, "sol_fraction_bandwidth": 0.25},
        {"batch_size": 1, "weights": "nf4", "decode_tok_s": 30.0, "sol_fraction_bandwidth": 0.05},
    ]
    plot = live.LivePlot("batch_size", "decode_tok_s", "weights", sol=True)
    plot.extend(rows)
    traces = {t.name: t for t in plot.figure().data}
    assert list(traces["bf16"].text) == ["20%", "25%"]
    assert list(traces["bf16 · speed of light"].y) == [200.0, 640.0]  # rate / fraction reached
    assert list(traces["nf4 · speed of light"].y) == [600.0]
    assert traces["nf4 · speed of light"].line.color == traces["nf4"].line.color, (
        "a limit wears its line's colour"
    )
    assert traces["nf4 · speed of light"].showlegend is False, "one legend entry per line, its limit included"
    assert plot.point_count() == 3, "the limit lines are not measured points"
    latency = live.LivePlot("seq_len", "latency_ms", sol=True)
    latency.add({"seq_len": 512, "latency_ms": 10.0, "sol_fraction_compute": 0.5})
    assert list({t.name: t for t in latency.figure().data}["latency_ms · speed of light"].y) == [
        5.0
    ]  # time x fraction
    assert live.sol_fraction({"decode_tok_s": 1.0}, "decode_tok_s") is None
    assert live.sol_limit({"tokens_per_s": 100.0, "sol_fraction_compute": 0.5}, "tokens_per_s") == 200.0


def test_many_lines_move_shares_to_hover_and_facets_share_colours():
    rows = [
        {
            "batch_size": b,
            "weights": w,
            "attention": a,
            "decode_tok_s": 10.0 * b,
            "sol_fraction_bandwidth": 0.1,
        }
        for w in ("bf16", "nf4")
        for a in ("eager", "sdpa", "sdpa-flash", "sdpa-efficient", "fa4")
        for b in (1, 4, 16)
    ]
    plot = live.LivePlot("batch_size", "decode_tok_s", "attention", sol=True, facet="weights", log_y=True)
    plot.extend(rows)
    fig = plot.figure()
    lines = [t for t in fig.data if "speed of light" not in t.name]
    assert len(lines) == 10 and plot.point_count() == 30
    assert all(t.text is None and t.hovertext[-1] == f"{t.name}: 10% of the speed of light" for t in lines), (
        "five lines a panel: the shares move from labels to the hover text"
    )
    assert {t.xaxis for t in lines} == {"x", "x2"}, "one panel per weight format"
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["eager", "sdpa", "sdpa-flash", "sdpa-efficient", "fa4"], "each line named once"
    color = {(t.xaxis, t.name): t.line.color for t in lines}
    assert color[("x", "sdpa")] == color[("x2", "sdpa")] != color[("x", "eager")]
    assert [a.text for a in fig.layout.annotations] == ["weights=bf16", "weights=nf4"]
    assert "1,000" in fig.layout.yaxis.ticktext, "log ticks reach the speed of light (100 / 0.1 = 1,000)"
    plot.add(
        {
            "batch_size": 16,
            "weights": "nf4",
            "attention": "fa2",
            "decode_tok_s": None,
            "status": "unsupported",
        }
    )
    cross = next(t for t in plot.figure().data if t.name == "not measured")
    assert cross.xaxis == "x2" and list(cross.text) == ["1 unsupported"] and "fa2" in cross.hovertext[0]
    plot.add({"batch_size": 1, "weights": "int8", "attention": "eager", "decode_tok_s": 20.0})
    crosses = [t for t in plot.figure().data if t.name.startswith("not measured")]
    assert crosses[0].text is None and crosses[0].hovertext[0].startswith("1 unsupported"), (
        "3 panels: no room"
    )
    assert crosses[0].name == "not measured: fa2 unsupported (x1)", "the legend says what is missing"
    limits = [t for t in plot.figure().data if "speed of light" in t.name]
    assert len(limits) == 2 and {t.line.color for t in limits} == {"gray"}, (
        "one shared limit a panel, in gray"
    )
    assert list(cross.y) == [8.0], "crosses sit below the lowest point of any panel (10 x 0.8)"
    log_x = live.LivePlot("batch_size", "decode_tok_s", "weights", log_x=True)
    log_x.extend(rows)
    assert list(log_x.figure().layout.xaxis.ticktext) == ["1", "4", "16"], "a few swept values: ticks at them"


def test_log_ticks_are_labelled_in_full():
    t = charts.log_ticks([12.0, 150.0, float("nan"), None, 0])
    assert t["tickvals"] == [10, 20, 50, 100, 200] and t["ticktext"] == ["10", "20", "50", "100", "200"]
    narrow = charts.log_ticks([31.0, 44.0])
    assert [v for v in narrow["tickvals"] if 31 <= v <= 44] == [], (
        "no 1-2-3-5-7 tick inside: the ends carry it"
    )
    assert narrow["tickvals"] == [30, 50]
    wide = charts.log_ticks([1e-7, 0.5])
    assert wide["tickvals"][0] == 1e-8 and all(abs(math.log10(v) % 1) < 1e-9 for v in wide["tickvals"])
    assert charts.log_ticks([float("nan")]) == {}


def test_facet_bars_write_only_what_did_not_run():
    import pandas as pd

    df = pd.DataFrame(
        {
            "attention": ["eager", "sdpa"] * 2,
            "weights": ["bf16", "bf16", "nf4", "nf4"],
            "workload": ["prompt 512, batch 1"] * 4,
            "prefill_ms": [120.0, 60.0, 80.0, float("nan")],
            "status": ["ok", "ok", "ok", "OOM"],
        }
    )
    fig = charts.facet_bars(df, "attention", "prefill_ms", "weights", "workload", log_y=True)
    assert [a.text for a in fig.layout.annotations] == ["prompt 512, batch 1"]
    assert list(fig.layout.yaxis.ticktext) == ["50", "70", "100", "150"]
    nf4 = next(t for t in fig.data if t.name == "nf4")
    assert list(nf4.text) == ["", "OOM"] and list(nf4.textposition) == ["none", "outside"]
    assert list(nf4.y) == [80.0, 30.0], "on a log axis the stub stands at half the smallest value"
    assert list(nf4.marker.opacity) == [1.0, 0.25], "the stub is faint: it cannot pass for a measurement"
    assert [c[1] for c in nf4.customdata] == [
        "80",
        "not measured (OOM)",
    ] and "customdata[1]" in nf4.hovertemplate
    linear = charts.facet_bars(df, "attention", "prefill_ms", "weights", "workload")
    assert list(next(t for t in linear.data if t.name == "nf4").y) == [80.0, 0.0]
    labelled = next(
        t
        for t in charts.facet_bars(df, "attention", "prefill_ms", "weights", "workload", values=True).data
        if t.name == "nf4"
    )
    assert list(labelled.text) == ["80", "OOM"] and list(labelled.marker.opacity) == [1.0, 0.25]


def test_a_point_that_stopped_on_its_share_says_so_on_hover():
    rows = [
        {
            "batch_size": b,
            "decode_tok_s": 10.0 * b,
            "attention": "sdpa",
            "n": 6,
            "stopped_by": s,
            "ci_reached": r,
        }
        for b, s, r in ((1, "ci", True), (4, "share", False))
    ]
    plot = live.LivePlot("batch_size", "decode_tok_s", "attention")
    plot.extend(rows)
    (line,) = plot.figure().data
    assert line.hovertext[0] == "sdpa<br>6 samples; the interval reached its target"
    assert line.hovertext[1] == (
        "sdpa<br>6 samples; stopped on its share of the chapter's time (interval not reached)"
    )
    assert prose.how_measured({"status": "OOM"}) == ""
