"""Bad input is refused at the door: each case raises a WorkbookError whose message names the problem and the fix.

One table, one row per mistake a reader can make; each row says what is called, what the message must say,
and what the fix must say. A case that runs instead of refusing, or refuses with a bare exception, fails.
"""

import time

import pytest
import torch

from helpers import (
    batches,
    catalog,
    environment,
    measure,
    models,
    placement,
    profiles,
    registry,
    results,
    variants,
)
from helpers.errors import WorkbookError


@pytest.fixture(scope="module")
def llama():
    return models.load("llama-2-7b-tiny", dtype="fp32", attention="sdpa")


@pytest.fixture(scope="module")
def opt():
    return models.load("opt-350m-tiny", dtype="fp32", attention="sdpa")


CASES = [
    # (case, call(llama, opt), words the problem must contain, words the fix must contain)
    ("batch size 0", lambda m, o: batches.make_batch(m, 0, 16), "batch_size=0", "batch_size=1"),
    ("negative batch size", lambda m, o: measure.forward(m, -2, 16, reps=1), "batch_size=-2", "batch_size"),
    (
        "batch size not a whole number",
        lambda m, o: batches.make_batch(m, 2.5, 16),
        "whole number",
        "batch_size=1",
    ),
    ("length 0", lambda m, o: batches.make_batch(m, 1, 0), "seq_len=0", "seq_len"),
    ("negative length", lambda m, o: measure.forward(m, 1, -5, reps=1), "seq_len=-5", "seq_len"),
    (
        "rotary length past the trained positions",
        lambda m, o: batches.make_batch(m, 1, 10_000),
        "trained for",
        "beyond_positions=True",
    ),
    (
        "learned positions cannot run past their table",
        lambda m, o: batches.make_batch(o, 1, 5000, beyond_positions=True),
        "cannot run",
        "seq_len <= 2048",
    ),
    (
        "padding that leaves rows empty",
        lambda m, o: batches.make_batch(m, 4, 64, pad_fraction=0.9),
        "no real token",
        "pad_fraction <=",
    ),
    (
        "padding share of 1",
        lambda m, o: batches.make_batch(m, 1, 64, pad_fraction=1.0),
        "outside [0, 1)",
        "0.25",
    ),
    (
        "empty sequence to pack",
        lambda m, o: batches.pack_batch([torch.arange(3), torch.arange(0)]),
        "empty",
        "Drop empty",
    ),
    ("budget in decimal GB", lambda m, o: placement.parse_gib("15GB"), "'15GB'", "13.97 GiB"),
    ("budget that is a word", lambda m, o: placement.parse_gib("lots"), "'lots'", "'15GiB'"),
    ("budget of zero", lambda m, o: placement.budget(0), "not positive", "15GiB"),
    (
        "unknown model",
        lambda m, o: models.load("lama-2-7b", dtype="fp32"),
        "Unknown model name",
        "llama-2-7b",
    ),
    (
        "unknown attention path",
        lambda m, o: models.load("llama-2-7b-tiny", dtype="fp32", attention="flash"),
        "Unknown attention path",
        "sdpa-flash",
    ),
    (
        "unknown weight format",
        lambda m, o: models.load("llama-2-7b-tiny", weights="int4"),
        "Unknown weight format",
        "nf4",
    ),
    ("unknown dtype", lambda m, o: models.load("llama-2-7b-tiny", dtype="float8"), "Unknown dtype", "bf16"),
    ("unknown profile", lambda m, o: profiles.profile("laptop"), "Unknown profile", "large-gpu"),
    ("unknown chapter", lambda m, o: environment.chapter("09"), "Unknown chapter", "05"),
    (
        "unknown chapter parameter",
        lambda m, o: environment.chapter("05", prompt_lens=[8], measure_peaks=False),
        "no parameter",
        "prompts",
    ),
    ("unknown result table", lambda m, o: results.load("05-grid"), "registered", "05_grid"),
    (
        "weights and quant both given",
        lambda m, o: models.load("llama-2-7b-tiny", weights="nf4", quant="int8"),
        "both given",
        "weights='nf4'",
    ),
    (
        "int8 options on 4-bit weights",
        lambda m, o: models.load("llama-2-7b-tiny", weights="nf4", dtype="bf16", int8_threshold=3.0),
        "int8 weights only",
        "weights='int8'",
    ),
    (
        "double quantization of int8",
        lambda m, o: models.load("llama-2-7b-tiny", weights="int8", double_quant=True, dtype="bf16"),
        "4-bit weights only",
        "quant='nf4'",
    ),
    (
        "flash-attn package on a machine without it",
        lambda m, o: models.load("llama-2-7b-tiny", dtype="bf16", attention="fa2"),
        "cannot run here",
        "attention=",
    ),
    (
        "architecture without that attention",
        lambda m, o: models.load("bloom-3b-tiny", dtype="fp32", attention="sdpa"),
        "no sdpa attention",
        "attention='eager'",
    ),
    (
        "no new tokens to decode",
        lambda m, o: measure.generate(m, 1, 8, 1),
        "no decode step",
        "new_tokens >= 2",
    ),
]


@pytest.mark.parametrize("case,call,problem,fix", CASES, ids=[c[0] for c in CASES])
def test_refused_at_the_door(case, call, problem, fix, llama, opt):
    with pytest.raises(WorkbookError) as err:
        call(llama, opt)
    assert problem in err.value.problem, (case, err.value.problem)
    assert fix in err.value.fix, (case, err.value.fix)


def test_the_table_is_large_enough():
    assert len(CASES) >= 15


def test_a_hub_id_without_network_answers_in_seconds():
    t0 = time.perf_counter()
    with pytest.raises(WorkbookError, match="hub"):
        models.load("someone/some-model", dtype="fp32")
    assert time.perf_counter() - t0 < 5


def test_sizes_that_are_fine_still_run(llama, opt):
    # the door refuses only what cannot run: the edges just inside it pass
    assert batches.make_batch(llama, 4, 64, pad_fraction=0.5)["attention_mask"].sum(1).min() >= 1
    assert batches.make_batch(llama, 1, 5000, beyond_positions=True)["input_ids"].shape == (1, 5000)
    assert batches.make_batch(opt, 1, 2048)["input_ids"].shape == (1, 2048)
    assert (
        placement.parse_gib("512MiB") == 0.5
        and placement.parse_gib(15) == 15.0
        and placement.parse_gib("1.5 GiB") == 1.5
    )
    assert variants.weight_format("nf4-dq").double_quant
    assert set(registry.TABLES) >= {"05_grid", "07_decode"}
    assert catalog.entry("llama-2-7b").name == "llama-2-7b"
