import json
import os
import time

import pytest
import torch

from helpers import models
from helpers.errors import WorkbookError
from helpers.machine import hardware, probes
from helpers.measure import batches
from helpers.models import catalog, checkpoints, request

TINY = [n for n in catalog.ENTRIES if n.endswith("-tiny")]


def test_build_writes_a_real_checkpoint_once():
    folder = checkpoints.build("opt-350m-tiny")
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert (folder / "tokenizer.json").exists()
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    assert marker["weights"].startswith("random") and marker["params"] > 0
    stamp = os.path.getmtime(folder / "model.safetensors")
    assert checkpoints.build("opt-350m-tiny") == folder
    assert os.path.getmtime(folder / "model.safetensors") == stamp, "a cached model is not rebuilt"


def test_byte_tokenizer_round_trips_any_text():
    tok = checkpoints.byte_tokenizer()
    text = "Flash attention, naïve — 4-bit ✓"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < 300


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_every_tiny_model_loads_in_every_dtype(name, dtype):
    attention = "eager" if name.startswith("bloom") else "sdpa"
    loaded = models.load(name, dtype=dtype, attention=attention, strict=True)
    assert loaded.verification.ok
    batch = batches.make_batch(loaded, 2, 16)
    if loaded.model.config.is_encoder_decoder:  # T5: the decoder reads its own copy of the tokens
        batch["decoder_input_ids"] = batch["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(**batch).logits
    assert logits.shape == (2, 16, loaded.model.config.vocab_size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("attention", ["eager", "sdpa", "sdpa-flash", "sdpa-math", "flex"])
def test_every_attention_path_the_cpu_runs(attention):
    if probes.attention_problem(attention, torch.float32):
        pytest.skip(f"{attention} does not run on this machine")
    loaded = models.load("llama-2-7b-tiny", dtype="fp32", attention=attention, strict=True)
    batch = batches.make_batch(loaded, 2, 32)
    with torch.inference_mode(), loaded.context():
        logits = loaded.model(**batch).logits
    ref = models.load("llama-2-7b-tiny", dtype="fp32", attention="eager")
    with torch.inference_mode():
        expected = ref.model(**batch).logits
    torch.testing.assert_close(logits, expected, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize(
    "quant,double_quant,layer",
    [
        ("int8", False, "Linear8bitLt"),
        ("fp4", False, "Linear4bit/fp4"),
        ("nf4", False, "Linear4bit/nf4"),
        ("nf4", True, "Linear4bit/nf4 +dq"),
    ],
)
def test_every_quantization_mode(quant, double_quant, layer):
    loaded = models.load(
        "llama-2-7b-tiny", dtype="bf16", attention="sdpa", quant=quant, double_quant=double_quant, strict=True
    )
    counts = models.quantized_layers(loaded.model)
    assert counts[layer] == 14  # 7 linear layers x 2 blocks; lm_head stays in bf16
    assert counts["Linear"] == 1
    plain = models.load("llama-2-7b-tiny", dtype="bf16", attention="sdpa")
    assert loaded.footprint_gib() < plain.footprint_gib()
    with torch.inference_mode():
        out = loaded.model(**batches.make_batch(loaded, 1, 16)).logits
    assert torch.isfinite(out).all()


def test_verification_catches_an_option_not_in_effect(tiny):
    req = tiny.request
    assert models.verify(tiny.model, req).ok
    tiny.model.set_attn_implementation("eager")  # behind the loader's back
    try:
        ver = models.verify(tiny.model, req)
        assert not ver.ok and "attention implementation" in ver.problems[0]
    finally:
        tiny.model.set_attn_implementation("sdpa")
    wrong_dtype = models.verify(tiny.model, models.Request(req.model, "bf16", "sdpa"))
    assert not wrong_dtype.ok and any("dtype" in p for p in wrong_dtype.problems)
    wrong_quant = models.verify(tiny.model, models.Request(req.model, "fp32", "sdpa", quant="int8"))
    assert not wrong_quant.ok


def test_switch_attention_without_reload(tiny):
    tiny.switch_attention("eager")
    assert tiny.model.config._attn_implementation == "eager" and tiny.verification.ok
    tiny.switch_attention("sdpa")
    assert tiny.describe()["attention"] == "sdpa"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="lama-2-7b"), "Unknown model name"),
        (dict(name="llama-2-7b-tiny", attention="fa2"), "fa2"),
        (dict(name="llama-2-7b-tiny", attention="flashy"), "Unknown attention"),
        (dict(name="bloom-3b-tiny", attention="sdpa"), "no sdpa attention"),
        (dict(name="llama-2-7b-tiny", quant="int4"), "Unknown quantization"),
        (dict(name="llama-2-7b-tiny", quant="int8", double_quant=True), "4-bit weights only"),
        (dict(name="llama-2-7b-tiny", dtype="fp8"), "Unknown dtype"),
    ],
)
def test_bad_input_gets_one_clear_message_with_the_fix(kwargs, match):
    name = kwargs.pop("name")
    kwargs.setdefault("dtype", "fp32")
    with pytest.raises(WorkbookError, match=match) as err:
        models.load(name, **kwargs)
    assert err.value.fix


def test_flash_package_on_cpu_or_without_package_names_the_fix():
    if torch.cuda.is_available():
        pytest.skip("CPU-only message")
    with pytest.raises(WorkbookError) as err:
        models.load("llama-2-7b-tiny", dtype="bf16", attention="fa2")
    assert "NVIDIA GPU" in err.value.problem and "sdpa" in err.value.fix


def test_flash_kernel_in_float32_is_refused_with_the_dtype_fix(monkeypatch):
    # On a GPU the probe itself refuses float32; on a CPU (where PyTorch has a float32 flash kernel)
    # the refusal is simulated at the probe, and the message must still name the dtype fix.
    if not torch.cuda.is_available():
        monkeypatch.setattr(probes, "attention_problem", lambda *a, **k: "No available kernel")
    with pytest.raises(WorkbookError) as err:
        models.load("llama-2-7b-tiny", dtype="fp32", attention="sdpa-flash")
    assert "dtype='bf16'" in err.value.fix


def test_bf16_on_a_card_without_bf16_names_fp16(monkeypatch):
    monkeypatch.setattr(request, "device", lambda: torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(
        request,
        "device_info",
        lambda: hardware.DeviceInfo("cuda", "Tesla T4", 1, 14.6, "7.5", False, "x86_64", 4),
    )
    with pytest.raises(WorkbookError, match="no bf16") as err:
        models.request.refuse_unrunnable(models.Request("llama-2-7b-tiny", "bf16", "sdpa"))
    assert "fp16" in err.value.fix


def test_local_folder_passes_straight_through():
    folder = checkpoints.build("falcon-7b-tiny")
    loaded = models.load(str(folder), dtype="fp32", attention="sdpa")
    assert loaded.source == "local" and loaded.verification.ok


def test_hub_id_without_network_is_refused_in_seconds(monkeypatch):
    # offline mode (set for the tests by conftest): no retries, the answer names the fix
    t0 = time.perf_counter()
    with pytest.raises(WorkbookError, match="HF_HUB_OFFLINE") as err:
        models.load("meta-llama/Llama-2-7b-hf", dtype="fp32")
    assert time.perf_counter() - t0 < 5 and "catalog name" in err.value.fix
    # online mode but no connection to the hub: the same quick refusal (the connection attempt is faked here)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(checkpoints, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(WorkbookError, match="no connection"):
        checkpoints.resolve("meta-llama/Llama-2-7b-hf")
    monkeypatch.setattr(checkpoints, "hub_reachable", lambda timeout_s=3.0: True)
    assert checkpoints.resolve("meta-llama/Llama-2-7b-hf") == ("meta-llama/Llama-2-7b-hf", "hub")


def test_real_encoder_gives_meaningful_embeddings():
    enc = models.load("minilm-l6", dtype="fp32", attention="sdpa", strict=True)
    sentences = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly tax filings are due."]
    batch = enc.tokenizer(sentences, padding=True, return_tensors="pt").to(enc.device)
    with torch.inference_mode():
        hidden = enc.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3, sim  # trained weights: paraphrases are close, unrelated text is not


def test_make_batch_padding_share(tiny):
    batch = batches.make_batch(tiny, 4, 100, pad_fraction=0.25)
    share = 1 - batch["attention_mask"].float().mean().item()
    assert share == pytest.approx(0.25, abs=0.02)
    assert batch["attention_mask"][0].all()  # left padding, row 0 unpadded
    with pytest.raises(WorkbookError):
        batches.make_batch(tiny, 2, 10, pad_fraction=1.0)


def test_peft_adapter_on_a_4bit_model_with_the_pinned_versions():
    from peft import LoraConfig

    loaded = models.load("llama-2-7b-tiny", dtype="bf16", attention="sdpa", quant="nf4")
    loaded.model.add_adapter(LoraConfig(r=8, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    cfg = loaded.model.config
    # LoRA on q_proj and v_proj by default: r * (in + out) per matrix
    assert trainable == cfg.num_hidden_layers * 2 * 8 * (cfg.hidden_size + cfg.hidden_size)


def test_falcon_cannot_switch_attention_in_place_and_the_slot_reloads_it():
    falcon = models.load("falcon-7b-tiny", dtype="fp32", attention="eager")
    with pytest.raises(WorkbookError, match="cannot change its attention in place"):
        falcon.switch_attention("sdpa")
    assert falcon.model.config._attn_implementation == "eager" and falcon.request.attention == "eager"
    slot = models.OneAtATime()
    first = slot.get("falcon-7b-tiny", dtype="fp32", attention="eager")
    second = slot.get("falcon-7b-tiny", dtype="fp32", attention="sdpa")
    assert second.model.config._attn_implementation == "sdpa" and second.verification.ok
    assert isinstance(first.model, models.loading._Unloaded), "the previous model was released"
    llama = slot.get("llama-2-7b-tiny", dtype="fp32", attention="sdpa")
    same = slot.get("llama-2-7b-tiny", dtype="fp32", attention="eager")
    assert same is llama and llama.model.config._attn_implementation == "eager"  # switched in place


def test_pack_and_pad_batches():
    seqs = [torch.arange(4, 9), torch.arange(4, 6)]
    padded = batches.pad_batch(seqs, pad_id=0)
    assert padded["input_ids"].tolist() == [[4, 5, 6, 7, 8], [0, 0, 0, 4, 5]]
    assert padded["attention_mask"].sum().item() == 7
    packed = batches.pack_batch(seqs)
    assert packed["input_ids"].tolist() == [[4, 5, 6, 7, 8, 4, 5]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1]]


def test_an_unloaded_model_says_so_with_the_fix():
    loaded = models.load("llama-2-7b-tiny", dtype="fp32")
    models.unload(loaded)
    with pytest.raises(WorkbookError, match="unloaded") as err:
        _ = loaded.model.config
    assert "OneAtATime" in err.value.fix
