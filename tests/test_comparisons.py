"""Helpers behind notebook 01: speed-up tables, agreement checks, padding against packing."""

import pandas as pd
import pytest
import torch

from helpers import measure
from helpers.machine import probes, profiles
from helpers.measure import agreement, sweeps
from helpers.results import tables


def test_speedup_table_uses_only_measured_points():
    df = pd.DataFrame(
        [
            {"b": 1, "attention": "eager", "latency_ms": 4.0, "status": "ok"},
            {"b": 1, "attention": "sdpa", "latency_ms": 2.0, "status": "ok"},
            {"b": 2, "attention": "eager", "latency_ms": 8.0, "status": "ok"},
            {"b": 2, "attention": "sdpa", "latency_ms": float("nan"), "status": "OOM"},
        ]
    )
    s = tables.speedup(df, "b")
    assert s.loc[1, "sdpa speed-up"] == 2.0 and pd.isna(s.loc[2, "sdpa speed-up"])
    r = tables.column_ratio(df, "b", "latency_ms", "eager", "sdpa")
    assert r[1] == 2.0 and pd.isna(r[2])
    assert tables.status_counts(df).to_dict() == {"ok": 3, "OOM": 1}


def test_no_available_kernel_is_recorded_as_unsupported():
    def refuse(p):
        raise RuntimeError("No available kernel. Aborting execution.")

    df = sweeps.run([{"i": 0}], refuse)
    assert df.status[0] == "unsupported" and "No available kernel" in df.error[0]


@pytest.mark.parametrize("attention", ["eager", "sdpa-math", "sdpa-flash"])
def test_kernel_agreement_with_float64(attention):
    if probes.attention_problem(attention, torch.float32):
        pytest.skip(f"{attention} does not run here")
    fp32 = agreement.kernel_agreement(attention, torch.float32, heads=2, seq_len=64, head_dim=32)
    bf16 = agreement.kernel_agreement(attention, torch.bfloat16, heads=2, seq_len=64, head_dim=32)
    assert fp32["rel_l2_error_vs_float64"] < 1e-5
    assert 1e-4 < bf16["rel_l2_error_vs_float64"] < 1e-2  # bf16 rounding is visible, and small


def test_model_agreement_between_paths(tiny):
    row = agreement.attention_agreement(tiny, "sdpa", seq_len=32, pad_fraction=0.25)
    assert row["rel_l2_error"] < 1e-5 and tiny.request.attention == "sdpa"


def test_attention_masks_allow_what_their_names_say():
    allowed = {k: agreement.attention_mask(k, 4, torch.float32)[0, 0] == 0 for k in agreement.MASKS}
    assert torch.equal(allowed["causal"], torch.ones(4, 4, dtype=torch.bool).tril())
    assert allowed["sees the next token"][1, 2] and not allowed["sees the next token"][1, 3]
    assert allowed["sees every token"].all()
    first = allowed["misses the first token"]
    assert first[0, 0] and not first[1:, 0].any() and torch.equal(first[1:, 1:], allowed["causal"][1:, 1:])
    assert agreement.attention_mask("causal", 3, torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="causal"):
        agreement.attention_mask("window", 4, torch.float32)


def test_masked_agreement_rows_on_the_tiny_model(tiny):
    ids = torch.randint(4, 200, (1, 24), generator=torch.Generator().manual_seed(0))
    rows = agreement.masked_agreement(tiny, ids, ["sdpa"]).set_index("mask")
    assert list(rows.index) == ["causal (the model's own)", *agreement.MASKS]
    assert rows.loc[["causal (the model's own)", "causal"], "within_tolerance"].all(), rows
    assert rows.correct.sum() == 2 and (rows.tolerance == agreement.TOLERANCE["fp32"]).all()
    assert tiny.request.attention == "sdpa", "the model keeps the path it was loaded with"


def test_packing_is_exact_and_concatenation_leaks(tiny):
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 500, (n,), generator=g) for n in (24, 8, 16)]
    df = measure.padding_vs_packing(
        tiny, seqs, protocol=measure.Protocol(warmup=0, min_reps=1, max_reps=1)
    ).set_index("layout")
    assert df.loc["padded", "positions"] == 72 and df.loc["packed", "positions"] == 48
    assert df.loc["packed", "padding_share"] == 0
    assert df.loc["packed", "rel_error_vs_alone"] < 1e-5 and df.loc["padded", "rel_error_vs_alone"] < 1e-5
    assert df.loc["concatenated, no boundaries", "rel_error_vs_alone"] > 0.05


def test_flash_path_names_what_runs():
    name, label = probes.flash_path(torch.float32)
    assert name in ("fa2", "sdpa-flash", "sdpa")
    if not torch.cuda.is_available():
        assert name == "sdpa-flash" and "not installed" in label and "CPU" in label


def test_profiles_list_the_architectures_to_compare():
    for name in profiles.PROFILES:
        p = profiles.pick(name)
        assert len(p.decoders) == 2 and p.memory_seq_lens == sorted(p.memory_seq_lens)
        assert p.short_seq < p.long_seq
