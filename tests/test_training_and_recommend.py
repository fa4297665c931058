"""Helpers for notebooks 05 (choosing a combination) and 06 (LoRA training)."""

import pandas as pd
import pytest
import torch

from helpers import models, recommend, training
from helpers.errors import WorkbookError

TINY = "llama-2-7b-tiny"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.fixture(scope="module")
def tok():
    return models.byte_tokenizer()


def test_corpus_is_the_projects_own_prose():
    docs = training.corpus()
    assert len(docs) > 50 and sum(map(len, docs)) > 20_000
    assert any("FlashAttention" in d for d in docs) and not any(d.startswith("|") for d in docs)


def test_padded_and_packed_batches_hold_the_same_documents_differently(tok):
    docs = training.corpus()[:24]
    padded = training.padded_batches(tok, docs, 4, 256)
    packed = training.packed_batches(tok, docs, 2, 512)
    for b in padded:
        assert ((b["labels"] == -100) == (b["attention_mask"] == 0)).all()
    for b in packed:
        assert "attention_mask" not in b and b["input_ids"].shape == b["position_ids"].shape
        assert (b["position_ids"][:, 0] == 0).all()
        assert ((b["labels"] == -100) == (b["position_ids"] == 0)).all()
    pad_share = sum(int((b["attention_mask"] == 0).sum()) for b in padded) / sum(b["input_ids"].numel() for b in padded)
    assert pad_share > 0.2, "real paragraphs differ in length, so padding wastes positions"


def test_packed_documents_do_not_see_each_other(tok):
    loaded = models.load(TINY, dtype="fp32", attention="sdpa")
    a, b = torch.randint(4, 250, (40,)), torch.randint(4, 250, (24,))
    packed = models.pack_batch([a, b])
    with torch.inference_mode():
        together = loaded.model(**packed, use_cache=False).logits[0, 40:]
        alone = loaded.model(b[None], use_cache=False).logits[0]
    assert torch.allclose(together, alone, atol=1e-4), "the second document sees only itself"


@pytest.fixture(scope="module")
def lora_model():
    from peft import LoraConfig, prepare_model_for_kbit_training

    loaded = models.load(TINY, dtype="bf16", quant="nf4")
    model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=False)
    model.add_adapter(LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0))
    return model


def test_trainable_parameters_follow_the_lora_formula(lora_model):
    assert training.trainable_params(lora_model) == training.lora_param_count(lora_model, 8, TARGETS)
    with pytest.raises(WorkbookError, match="No linear layer"):
        training.lora_param_count(lora_model, 8, ["no_such_layer"])


def test_loss_falls_when_training_the_adapter_on_the_corpus(lora_model, tok):
    batches = training.packed_batches(tok, training.corpus()[:64], 2, 256)
    seen = []
    log = training.train(lora_model, batches[:4], steps=30, lr=3e-3, on_step=seen.append)
    assert len(seen) == len(log) == 30
    assert log.loss.iloc[-5:].mean() < log.loss.iloc[:5].mean() * 0.9, log.loss.tolist()


def test_training_needs_trainable_parameters():
    loaded = models.load(TINY, dtype="fp32")
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    with pytest.raises(WorkbookError, match="adapter"):
        training.train(loaded.model, [], steps=1)


def _grid():
    rows = []
    for attention, weights, peak, prefill, step in [("sdpa", "bf16", 14.0, 30, 20), ("sdpa", "nf4", 5.0, 40, 28),
                                                    ("eager", "bf16", 18.0, 60, 22), ("sdpa", "int8", 8.0, 100, 90)]:
        rows.append({"attention": attention, "weights": weights, "status": "ok", "peak_alloc_gib": peak, "prefill_ms": prefill,
                     "decode_ms_per_token": step, "decode_tok_s": 1e3 / step, "batch_size": 1, "prompt_len": 512})
    rows.append({**rows[0], "weights": "fp32", "status": "OOM", "peak_alloc_gib": float("nan")})
    return pd.DataFrame(rows)


def test_pareto_front_keeps_only_undominated_points():
    front = recommend.pareto(_grid())
    assert front.tolist() == [True, True, False, False, False]


def test_recommender_picks_the_fastest_that_fits_and_says_why():
    best, why, ranked = recommend.recommend(_grid(), budget_gib=16, prompt_len=300, new_tokens=64, batch_size=1)
    assert (best.attention, best.weights) == ("sdpa", "bf16") and "sdpa + bf16" in why
    best, why, _ = recommend.recommend(_grid(), budget_gib=10, prompt_len=512, new_tokens=64, batch_size=1)
    assert best.weights == "nf4" and "would be faster" in why and "sdpa + bf16" in why
    best, why, _ = recommend.recommend(_grid(), budget_gib=2, prompt_len=512, new_tokens=64, batch_size=1)
    assert best is None and "Nothing measured fits" in why
    with pytest.raises(WorkbookError, match="lacks"):
        recommend.recommend(_grid().drop(columns="prefill_ms"), budget_gib=16, prompt_len=512, new_tokens=8, batch_size=1)
