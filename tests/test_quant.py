"""Helpers behind notebooks 03 and 04: byte breakdowns, LLM.int8() by hand, budgets and placements."""

import pytest
import torch

from helpers import measure, models
from helpers.errors import WorkbookError
from helpers.measure import agreement, workload
from helpers.measure.protocol import Protocol
from helpers.models import catalog
from helpers.techniques import placement, quant

ONCE = Protocol(warmup=0, min_reps=1, max_reps=1)  # a row's shape, not a figure

TINY = "llama-2-7b-tiny"


@pytest.fixture(scope="module")
def sized():
    out = {}
    for label, opts in {
        "bf16": {},
        "int8": {"quant": "int8"},
        "nf4": {"quant": "nf4"},
        "nf4-dq": {"quant": "nf4", "double_quant": True},
    }.items():
        loaded, row, parts = quant.load_sized(TINY, dtype="bf16", **opts)
        out[label] = (row, parts.set_index("kind"))
        models.unload(loaded)
    return out


def test_breakdown_adds_up_to_the_footprint_plus_the_scales(sized):
    for label, (row, parts) in sized.items():
        scales = parts.bytes.get("quantization constants", 0)
        assert parts.bytes.sum() - scales == pytest.approx(row["footprint_gib"] * 2**30, rel=1e-6), label


def test_quantized_layers_shrink_exactly(sized):
    linear16 = sized["bf16"][1].bytes["linear layers kept in high precision"]
    assert sized["int8"][1].bytes["int8 weights"] * 2 == linear16
    assert sized["nf4"][1].bytes["4-bit weights (packed)"] * 4 == linear16
    # what is not quantized stays exactly as it was
    for kind in ("embeddings", "output head (lm_head)", "norms"):
        assert sized["nf4"][1].bytes[kind] == sized["bf16"][1].bytes[kind] == sized["int8"][1].bytes[kind]


def test_bits_per_weight_count_the_scales(sized):
    assert sized["nf4"][0]["bits_per_quantized_weight"] == pytest.approx(
        4.5, abs=0.01
    )  # fp32 scale per 64 weights
    assert (
        4.1 < sized["nf4-dq"][0]["bits_per_quantized_weight"] < sized["nf4"][0]["bits_per_quantized_weight"]
    )
    assert 8.0 < sized["int8"][0]["bits_per_quantized_weight"] < 8.2  # fp32 scale per 256-wide row


def test_outlier_decomposition_rescues_int8():
    torch.manual_seed(0)
    w = torch.randn(256, 512) * 0.02
    clean, _ = quant.outlier_activations(32, 512, outliers=0, dtype=torch.float32)
    spiky, cols = quant.outlier_activations(32, 512, outliers=4, magnitude=60.0, dtype=torch.float32)
    assert (spiky[:, cols].abs().amax(0) > 6).all()
    err = lambda x, t: agreement.relative_error(quant.int8_matmul(x, w, t), x @ w.T)  # noqa: E731
    assert err(clean, None) < 0.02
    assert err(spiky, 6.0) < err(spiky, None) / 5
    assert err(spiky, 1e9) == pytest.approx(err(spiky, None))  # a threshold nothing exceeds changes nothing


def test_bnb_int8_layer_halves_a_half_precision_layer():
    layer = torch.nn.Linear(256, 128, bias=False)
    parts = quant.bytes_breakdown(quant.bnb_int8_linear(layer, 6.0, "cpu")).set_index("kind").bytes
    assert parts["int8 weights"] == 256 * 128 and parts["quantization constants"] == 128 * 4


def test_budget_caps_the_main_device():
    assert placement.budget(None) is None
    if torch.cuda.is_available():
        assert placement.budget(2.0)[0] == "2.000GiB"
    else:
        assert placement.budget(0.5) == {"cpu": "512.000MiB"}
        with pytest.raises(WorkbookError, match="GPU"):
            placement.budget(1.0, gpus=2)


def test_over_budget_model_spills_and_still_generates():
    full = models.load(TINY, dtype="fp32").footprint_gib()
    loaded = models.load(TINY, dtype="fp32", device_map="auto", max_memory=placement.budget(full * 0.6))
    where = placement.gib_per_device(loaded.model)
    assert len(where) >= 2 and sum(where.values()) == pytest.approx(full, rel=0.05), where
    assert measure.generate(loaded, 1, 16, 3, protocol=ONCE)["decode_tok_s"] > 0


def test_multi_gpu_run_needs_two_gpus():
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has several GPUs")
    with pytest.raises(WorkbookError, match="two or more"):
        placement.multi_gpu_rows(TINY)


@pytest.mark.parametrize("name,billions", [("t5-11b", 11.307), ("bloom-3b", 3.003), ("llama-2-7b", 6.738)])
def test_param_count_matches_the_published_checkpoints(name, billions):
    assert catalog.param_count(name) / 1e9 == pytest.approx(billions, rel=5e-3)


def test_encoder_decoder_generates_exactly_the_new_tokens():
    t5 = models.load("t5-11b-tiny", dtype="fp32", attention="sdpa")
    row = measure.generate(t5, 2, 16, 4, protocol=ONCE)
    assert row["new_tokens"] == 4 and row["decode_tok_s"] > 0
    assert workload.decode_step_bytes(t5.model) < workload.weight_bytes(t5.model)
