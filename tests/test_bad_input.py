"""Bad input is refused at the door: each case raises a WorkbookError whose message names the problem and the fix.

One table, one row per mistake a reader can make; each row says what is called, what the message must say,
and what the fix must say. A case that runs instead of refusing, or refuses with a bare exception, fails.
"""

import time

import pytest
import torch

from helpers import environment, measure, models, results, variants
from helpers.errors import WorkbookError
from helpers.machine import profiles
from helpers.measure import batches
from helpers.models import catalog
from helpers.results import registry
from helpers.techniques import placement, training


@pytest.fixture(scope="module")
def llama():
    return models.load("llama-2-7b-tiny", dtype="fp32", attention="sdpa")


@pytest.fixture(scope="module")
def opt():
    return models.load("opt-350m-tiny", dtype="fp32", attention="sdpa")


CASES = [
    # (case, call(llama, opt), words the problem must contain, words the fix must contain)
    ("batch size 0", lambda m, o: batches.make_batch(m, 0, 16), "batch_size=0", "batch_size=1"),
    ("negative batch size", lambda m, o: measure.forward(m, -2, 16), "batch_size=-2", "batch_size"),
    (
        "batch size not a whole number",
        lambda m, o: batches.make_batch(m, 2.5, 16),
        "whole number",
        "batch_size=1",
    ),
    ("length 0", lambda m, o: batches.make_batch(m, 1, 0), "seq_len=0", "seq_len"),
    ("negative length", lambda m, o: measure.forward(m, 1, -5), "seq_len=-5", "seq_len"),
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
    ("unknown profile", lambda m, o: profiles.pick("laptop"), "Unknown profile", "large-gpu"),
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
    # a chapter's parameters, checked at chapter(...) against the kind of the profile's value
    (
        "model given as a number",
        lambda m, o: environment.chapter("03", model=123),
        "not a model name",
        "catalog",
    ),
    ("model name misspelt", lambda m, o: environment.chapter("03", model="llama-7"), "llama-7", "llama-2-7b"),
    (
        "one batch size for a list",
        lambda m, o: environment.chapter("03", gen_batches=4),
        "list",
        "gen_batches=[4]",
    ),
    (
        "a share typed as text",
        lambda m, o: environment.chapter("03", budget_fraction="65%"),
        "number",
        "0.65",
    ),
    (
        "a share as a percentage",
        lambda m, o: environment.chapter("03", budget_fraction=65),
        "between 0 and 1",
        "0.65",
    ),
    (
        "steps spelt out",
        lambda m, o: environment.chapter("06", trained_steps="ten"),
        "steps is a number",
        "Use a number",
    ),
    (
        "a fraction of a step",
        lambda m, o: environment.chapter("06", trained_steps=2.5),
        "positive whole number",
        "steps=",
    ),
    (
        "no tokens to generate",
        lambda m, o: environment.chapter("05", new_tokens=0),
        "whole number",
        "new_tokens=",
    ),
    (
        "a negative batch in a list",
        lambda m, o: environment.chapter("01", batch_sizes=[1, -2]),
        "the entry -2",
        "batch_sizes=[1, 2, 4]",
    ),
    (
        "padding past the row",
        lambda m, o: environment.chapter("01", pad_fractions=[0.5, 1.5]),
        "between 0",
        "pad_fractions=[0.0,",
    ),
    (
        "torch's dtype spelling",
        lambda m, o: environment.chapter("02", encoder_dtype="float16"),
        "dtype",
        "bf16",
    ),
    (
        "one model for a list",
        lambda m, o: environment.chapter("01", models="opt-350m"),
        "models is a list",
        "models=['opt-350m']",
    ),
    (
        "a parameters cell's model given as a number",
        lambda m, o: environment.chapter("03", {"PROFILE": None, "MODEL": 123}),
        "MODEL = 123",
        "catalog",
    ),
    (
        "a parameters cell's one batch size for a list",
        lambda m, o: environment.chapter("03", {"GEN_BATCHES": 4}),
        "GEN_BATCHES = 4",
        "GEN_BATCHES = [4]",
    ),
    (
        "a parameters cell's unknown profile",
        lambda m, o: environment.chapter("05", {"PROFILE": "laptop"}),
        "Unknown profile",
        "large-gpu",
    ),
    (
        "something else where the namespace goes",
        lambda m, o: environment.chapter("03", ["MODEL"]),
        "namespace",
        "globals()",
    ),
    (
        "a parameters cell's list with one bad entry",
        lambda m, o: environment.chapter("05", {"PROMPTS": [32, -1]}),
        "the entry -1",
        "PROMPTS = [",
    ),
    (
        "a parameters cell's misspelt model",
        lambda m, o: environment.chapter("03", {"MODEL": "llama-7"}),
        "MODEL = 'llama-7'",
        "llama-2-7b",
    ),
    (
        "a parameters cell's misspelt name",
        lambda m, o: environment.chapter("05", {"PROFILE": None, "MODLE": "llama-1.1b"}),
        "MODLE = 'llama-1.1b'",
        "Rename MODLE to MODEL, then `del MODLE`",
    ),
    (
        "a parameters cell's name in the singular",
        lambda m, o: environment.chapter("05", {"BATCH": [1, 16]}),
        "the chapter reads BATCHES",
        "Rename BATCH to BATCHES",
    ),
    (
        "a profile set in the cell and by keyword",
        lambda m, o: environment.chapter("03", {"PROFILE": "cpu"}, profile="large-gpu"),
        "PROFILE = 'cpu'",
        "once",
    ),
    (
        "a parameter set in the cell and by keyword",
        lambda m, o: environment.chapter("03", {"MODEL": "llama-1.1b"}, model="llama-2-7b"),
        "by keyword",
        "once",
    ),
    # models.load's options, checked by Request.of before anything loads
    (
        "int8 threshold as a word",
        lambda m, o: models.load("llama-2-7b-tiny", weights="int8", int8_threshold="high"),
        "not a number",
        "6.0",
    ),
    (
        "skip-modules that are not names",
        lambda m, o: models.load("llama-2-7b-tiny", weights="int8", int8_skip_modules=[3]),
        "module names",
        "['lm_head']",
    ),
    ("a misspelt load option", lambda m, o: models.load("llama-2-7b-tiny", attn="sdpa"), "attn", "attention"),
    ("a model that is not a name", lambda m, o: models.load(123), "not a model name", "catalog"),
    # helpers called with the wrong kind of value
    (
        "padding share as text",
        lambda m, o: batches.make_batch(m, 2, 16, pad_fraction="0.25"),
        "not a number",
        "0.25",
    ),
    (
        "negative LoRA rank",
        lambda m, o: training.lora_param_count(m.model, -4, ["q_proj"]),
        "LoRA's rank",
        "r=8",
    ),
    ("LoRA rank 0", lambda m, o: training.lora_param_count(m.model, 0, ["q_proj"]), "r=0", "r=16"),
    ("an infinite memory budget", lambda m, o: placement.parse_gib(float("inf")), "finite", "15GiB"),
    ("a negative memory budget", lambda m, o: placement.parse_gib("-3GiB"), "negative", "above zero"),
]


@pytest.mark.parametrize("case,call,problem,fix", CASES, ids=[c[0] for c in CASES])
def test_refused_at_the_door(case, call, problem, fix, llama, opt):
    with pytest.raises(WorkbookError) as err:
        call(llama, opt)
    assert problem in err.value.problem, (case, err.value.problem)
    assert fix in err.value.fix, (case, err.value.fix)


def test_the_table_is_large_enough():
    assert len(CASES) >= 35


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only refusal: this machine has a CUDA GPU")
def test_cpu_only_mistakes_name_the_cpu_fix():
    with pytest.raises(WorkbookError) as err:
        models.load("llama-2-7b-tiny", dtype="fp32", device_map="cuda")
    assert "without a CUDA GPU" in err.value.problem and "device_map=None" in err.value.fix
    with pytest.raises(WorkbookError) as err:
        models.load("llama-2-7b-tiny", dtype="fp32", attention="sdpa-cudnn")
    assert "On a CPU use attention='sdpa'" in err.value.fix, "not bf16, which fails on a CPU too"


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
    import numpy as np  # only here: numpy's whole numbers are sizes too

    assert batches.make_batch(llama, np.int64(2), 16)["input_ids"].shape == (2, 16)
    assert models.Request.of(
        "llama-2-7b-tiny", weights="int8", int8_skip_modules="lm_head"
    ).int8_skip_modules == ("lm_head",), "one module name is one name, not its letters"
    assert environment.check_parameter("03", "gen_batches", (np.int64(1), 2), [1, 8]) == [1, 2]
