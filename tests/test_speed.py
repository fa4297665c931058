"""Notebook 07's helpers: decode modes and the roofline, on the tiny model."""

import pandas as pd
import pytest
import torch
from torch._dynamo.utils import counters

from helpers import models
from helpers.errors import WorkbookError
from helpers.measure import ceilings
from helpers.measure.protocol import Protocol
from helpers.techniques import decoding, greedy_loop, roofline

ONCE = Protocol(warmup=0, min_reps=1, max_reps=1)  # a row's shape, not a figure


@pytest.fixture(scope="module")
def tiny():
    return models.load("llama-2-7b-tiny", dtype="fp32")


@pytest.mark.parametrize("mode", [m for m in decoding.MODES if m != "compiled"])
def test_each_decode_mode_generates_and_reports_compile_time_apart(tiny, mode):
    """Timed per token by the protocol: a decode figure for every mode, even on a busy machine, where the
    difference of two runs' medians can vanish in the noise."""
    quick = Protocol(warmup=1, min_reps=2, max_reps=2)
    row = decoding.decode(
        tiny, mode, prompt_len=16, new_tokens=4, sol=ceilings.speed_of_light(), protocol=quick
    )
    assert row["mode"] == mode and row["decode_tok_s"] > 0 and row["first_call_s"] > 0
    assert row["compiled_by"] == ("torch.compile" if mode == "compiled-loop" else "")
    compiles = mode == "compiled-loop"
    assert (row["compile_s"] >= 0) if compiles else (row["compile_s"] != row["compile_s"]), (
        "NaN: nothing compiled"
    )
    assert tiny.model.forward.__func__ is type(tiny.model).forward, "nothing compiled is left on the model"
    with pytest.raises(ValueError, match="choose one of"):
        decoding.decode(tiny, "fastest", prompt_len=16, new_tokens=4)


def test_the_two_run_decode_reports_a_figure_or_why_not_and_no_compile_time(tiny):
    row = decoding.decode(tiny, "dynamic", prompt_len=16, new_tokens=4, protocol=ONCE)
    assert row["first_call_s"] > 0 and row["compile_s"] != row["compile_s"], "NaN: nothing compiled"
    assert row["decode_tok_s"] > 0 or row["decode_note"], "a number, or the reason there is none"


def test_generate_compiles_only_where_transformers_does(tiny):
    """On a CPU transformers' generate does not compile: the 'compiled' mode says so and names the way that does.
    On a GPU an unquantized model compiles, and a bitsandbytes one does not (its quantizer is not compileable)."""
    if tiny.device.type == "cuda":
        assert decoding.generate_compiles(tiny) == ""
        int8 = models.load("llama-2-7b-tiny", dtype="fp32", quant="int8")
        assert "not marked compileable" in decoding.generate_compiles(int8)
        models.unload(int8)
        return
    assert "CPU" in decoding.generate_compiles(tiny)
    with pytest.raises(WorkbookError, match="compiled-loop"):
        decoding.decode(tiny, "compiled", prompt_len=16, new_tokens=4, protocol=ONCE)


def test_own_greedy_loop_makes_the_tokens_generate_makes(tiny):
    loop = greedy_loop.GreedyLoop(tiny, 2, 16, 8)
    tokens = loop(8)
    with torch.inference_mode():
        ref = tiny.model.generate(
            **loop.batch, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0
        )
    assert tokens.shape == (2, 8) and torch.equal(tokens, ref[:, 16:])
    assert torch.equal(loop(8), tokens), "a second run starts from an emptied cache"
    graphs = counters["stats"]["unique_graphs"]
    assert torch.equal(loop(8, forced=ref[:, 16:]), tokens), (
        "fed its own choices, teacher forcing changes nothing"
    )
    assert counters["stats"]["unique_graphs"] == graphs, (
        "fed columns of a generated tensor (other strides), the step must not compile again"
    )
    other = torch.randint(0, 200, (2, 8))  # made on the CPU: the loop moves them to the model's device
    assert not torch.equal(loop(8, forced=other), tokens), "fed other tokens, it predicts from them"
    torch._dynamo.reset()


def test_loop_against_generate_on_a_given_prompt(tiny):
    batch = tiny.tokenizer(["Hello my dog is cute and"], return_tensors="pt")
    torch._dynamo.reset()
    out = greedy_loop.loop_against_generate(tiny, dict(batch), 6)
    assert out["same_tokens"] and out["first_difference"] is None and out["next_token_agreement"] == 1.0
    assert out["compile_s"] > 0, "the first call compiled: it took longer than the second"
    assert torch.equal(out["loop"], out["generate"]) and out["loop"].shape[0] == 1
    loop = greedy_loop.GreedyLoop(tiny, 1, batch["input_ids"].shape[1], 4, batch=dict(batch))
    assert torch.equal(loop.batch["input_ids"].cpu(), batch["input_ids"]), "the prompt, on the model's device"
    torch._dynamo.reset()


def test_loop_row_reports_agreement_with_generate(tiny):
    row = decoding.decode(tiny, "compiled-loop", prompt_len=16, new_tokens=6, protocol=ONCE)
    assert (
        row["same_tokens_as_generate"] == 1.0 and row["next_token_agreement"] == 1.0 and row["compile_s"] >= 0
    )


def test_own_loop_allows_a_compilation_per_layer():
    """int8 layers break the graph; the rest of each attention layer is then compiled once per layer (layer_idx
    is specialised), so the loop's recompile limit must exceed the layer count (8, dynamo's default, does not)."""
    int8 = models.load("llama-2-7b-tiny", dtype="fp32", quant="int8")
    loop = greedy_loop.GreedyLoop(int8, 1, 16, 4)
    assert loop.recompile_limit >= int8.model.config.num_hidden_layers + 8
    assert loop.recompile_limit >= torch._dynamo.config.recompile_limit


def test_the_loop_keeps_dynamo_out_of_int8_layers_and_still_matches_generate(monkeypatch):
    """bitsandbytes' int8 matmul, compiled, was recompiled per layer and weight shape until dynamo's limit: the loop
    runs every int8 layer eagerly instead, once each, and its tokens are still generate's (fp32, teacher-forced)."""
    from bitsandbytes.nn import Linear8bitLt

    int8 = models.load("llama-2-7b-tiny", dtype="fp32", quant="int8")
    torch._dynamo.reset()
    try:
        loop = greedy_loop.GreedyLoop(int8, 1, 16, 5)
        layers = [m for m in int8.model.modules() if isinstance(m, Linear8bitLt)]
        assert loop.eager_layers == len(layers) == 7 * int8.model.config.num_hidden_layers
        assert all(getattr(m.forward, "_torchdynamo_disable", False) for m in layers)
        assert greedy_loop.eager_int8_layers(int8.model) == 0, "a second loop wraps nothing twice"
        from torch._dynamo import convert_frame

        compiled, real = [], convert_frame._compile  # every frame dynamo compiles passes here
        monkeypatch.setattr(
            convert_frame,
            "_compile",
            lambda code, *a, **k: compiled.append(code.co_filename) or real(code, *a, **k),
        )
        reference = greedy_loop._generated(int8, loop, 5)
        assert torch.equal(loop(5, forced=reference).cpu(), reference.cpu())
        assert any("transformers" in f for f in compiled), "the model around the int8 layers is compiled"
        assert not [f for f in compiled if "bitsandbytes" in f], "nothing of bitsandbytes' matmul is compiled"
    finally:
        torch._dynamo.reset()
        models.unload(int8)


def test_roofline_is_bandwidth_bound_then_compute_bound(tiny):
    roof = roofline.decode_ceiling(tiny.model, [1, 2, 4, 1024, 4096], context_len=64, gbs=100.0, tflops=1.0)
    bw = roof.set_index("batch_size").bandwidth_bound_tok_s
    assert bw[2] == pytest.approx(2 * bw[1], rel=0.05), "one more sequence costs only its KV cache"
    assert roof.limited_by.tolist()[0] == "bandwidth" and roof.limited_by.tolist()[-1] == "compute"
    assert (
        roof.ceiling_tok_s <= roof[["bandwidth_bound_tok_s", "compute_bound_tok_s"]].min(axis=1) + 1e-9
    ).all()


def test_sol_summary_picks_the_best_share_per_technique():
    decode = pd.DataFrame(
        {
            "weights": ["bf16", "bf16", "nf4"],
            "mode": ["dynamic", "compiled", "dynamic"],
            "status": ["ok", "ok", "ok"],
            "sol_fraction_bandwidth": [0.2, 0.7, 0.1],
            "batch_size": [1, 1, 1],
        }
    )
    prefill = pd.DataFrame(
        {
            "attention": ["sdpa", "sdpa"],
            "status": ["ok", "OOM"],
            "seq_len": [1024, 2048],
            "sol_fraction_compute": [0.6, None],
        }
    )
    out = roofline.sol_summary({"d": decode, "p": prefill}, {"d": "decode", "p": "prefill"}).set_index(
        "technique"
    )
    assert (
        out.loc["decode: bf16 / compiled", "best_fraction"] == 0.7
        and out.loc["prefill: sdpa", "ceiling"] == "arithmetic"
    )
    assert len(out) == 4


def test_the_loops_recompile_cap_ends_in_a_clear_refusal_and_the_other_modes_still_run(tiny):
    """At the cap dynamo raises (``fail_on_recompile_limit_hit``) instead of running the rest uncompiled; the
    workbook's error says so, and of several modes only the refused one becomes an ``unsupported`` row."""
    int8 = models.load("llama-2-7b-tiny", dtype="fp32", quant="int8")
    loop = greedy_loop.GreedyLoop(int8, 1, 8, 4)
    loop.recompile_limit = 1  # int8's graph breaks compile a frame once per layer: the second passes this cap
    torch._dynamo.reset()
    try:
        with pytest.raises(WorkbookError, match="recompile limit"):
            loop(4)
    finally:
        torch._dynamo.reset()
        models.unload(int8)

    class Capped(decoding.GreedyLoop):
        def __call__(self, *args, **kwargs):
            raise WorkbookError("The compiled loop hit dynamo's recompile limit (1).", "Use mode 'dynamic'.")

    original = decoding.GreedyLoop
    decoding.GreedyLoop = Capped
    try:
        rows = decoding.decode_modes(
            tiny, ["dynamic", "compiled-loop"], prompt_len=8, new_tokens=3, protocol=ONCE
        )
        with pytest.raises(WorkbookError, match="recompile limit"):
            decoding.decode(tiny, "compiled-loop", prompt_len=8, new_tokens=3, protocol=ONCE)
    finally:
        decoding.GreedyLoop = original
    by_mode = {r["mode"]: r for r in rows}
    assert (
        by_mode["compiled-loop"]["status"] == "unsupported"
        and "recompile" in by_mode["compiled-loop"]["error"]
    )
    assert by_mode["dynamic"]["decode_tok_s"] > 0 and "status" not in by_mode["dynamic"]
