"""Helpers behind notebook 02: real sentences, padded batches, the encoder fast path."""

import pytest
import torch

from helpers import measure, models
from helpers.errors import WorkbookError
from helpers.techniques import fastpath, sentences


@pytest.fixture(scope="module")
def encoder():
    return models.load("minilm-l6", dtype="fp32", attention="sdpa")


@pytest.mark.parametrize("share", [None, 0.6, 0.9])
def test_encode_reaches_the_padding_share(encoder, share):
    e = sentences.encode(encoder.tokenizer, sentences.batch(16), share)
    assert e["real_tokens"] == int(e["batch"]["attention_mask"].sum())
    if share is None:
        assert e["seq_len"] == max(len(encoder.tokenizer(s)["input_ids"]) for s in sentences.batch(16))
    else:
        assert e["pad_share"] == pytest.approx(share, abs=0.02)


def test_fastpath_encoder_matches_transformers(encoder):
    fast = fastpath.FastpathEncoder(encoder.model)
    e = sentences.encode(encoder.tokenizer, sentences.SENTENCES, 0.75, device=encoder.device)
    with torch.inference_mode():
        ref = fastpath.mean_pool(encoder.model(**e["batch"]).last_hidden_state, e["batch"]["attention_mask"])
        got = fastpath.mean_pool(fast(**e["batch"]), e["batch"]["attention_mask"])
    assert (ref * got).sum(-1).min() > 0.99999


def test_fastpath_really_skips_padding(encoder):
    fast = fastpath.FastpathEncoder(encoder.model)
    e = sentences.encode(encoder.tokenizer, sentences.batch(32), 0.9, device=encoder.device)
    pad = e["batch"]["attention_mask"] == 0
    with torch.inference_mode():
        skipped = fast(**e["batch"])
    computed = fast(**e["batch"])  # with autograd on, PyTorch takes the ordinary path
    assert (skipped[pad] == 0).all(), "the nested-tensor fast path never computes padded positions"
    assert (computed[pad] != 0).any(), "the ordinary path computes them (and masks them)"


def test_fastpath_refuses_other_encoders(encoder):
    encoder.model.config.hidden_act = "relu"
    try:
        with pytest.raises(WorkbookError, match="GELU"):
            fastpath.to_fastpath_encoder(encoder.model)
    finally:
        encoder.model.config.hidden_act = "gelu"


def test_paraphrases_are_closer_than_unrelated_pairs(encoder):
    a = sentences.encode(encoder.tokenizer, [p[0] for p in sentences.PARAPHRASES], device=encoder.device)[
        "batch"
    ]
    b = sentences.encode(encoder.tokenizer, [p[1] for p in sentences.PARAPHRASES], device=encoder.device)[
        "batch"
    ]
    with torch.inference_mode():
        ea = fastpath.mean_pool(encoder.model(**a).last_hidden_state, a["attention_mask"])
        eb = fastpath.mean_pool(encoder.model(**b).last_hidden_state, b["attention_mask"])
    same, other = (ea * eb).sum(-1), (ea * eb.roll(1, 0)).sum(-1)
    assert (same > other).all() and same.mean() > 0.6


def test_call_row_counts_real_tokens():
    row = measure.call_row(
        lambda: torch.ones(100).sum(),
        real_tokens=500,
        device="cpu",
        protocol=measure.Protocol(warmup=1, min_reps=3, max_reps=3),
    )
    assert row["reps"] == 3 and row["tokens_per_s"] == pytest.approx(500 / (row["latency_ms"] / 1e3))


@pytest.mark.parametrize("n,seq_len,share", [(8, 128, None), (8, 128, 0.5), (32, 256, 0.9), (1, 64, None)])
def test_fixed_length_batches_have_the_asked_shape_and_padding(encoder, n, seq_len, share):
    e = sentences.encode(encoder.tokenizer, sentences.batch(n), share, seq_len=seq_len)
    ids, mask = e["batch"]["input_ids"], e["batch"]["attention_mask"]
    assert ids.shape == (n, seq_len) and e["seq_len"] == seq_len
    assert mask[0].all(), "the first row is one full-length document"
    assert e["pad_share"] == pytest.approx(share or 0.0, abs=0.02)
    real = mask.sum(1)
    assert (ids[torch.arange(n), real - 1] == encoder.tokenizer.sep_token_id).all()
    assert (ids[:, 0] == encoder.tokenizer.cls_token_id).all()


def test_fixed_length_refuses_an_impossible_share(encoder):
    with pytest.raises(ValueError, match="pad_share"):
        sentences.encode_to_length(encoder.tokenizer, 4, 64, 1.0)
