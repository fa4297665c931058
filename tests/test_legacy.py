import pytest
import torch
from transformers import BitsAndBytesConfig

from helpers import models
from helpers.errors import WorkbookError
from helpers.models import checkpoints
from helpers.techniques import legacy


def test_old_kwargs_really_fail_today():
    fails = legacy.old_api_fails(str(checkpoints.build("llama-2-7b-tiny")))
    for key in ("use_flash_attention_2", "load_in_4bit", "load_in_8bit"):
        assert fails[key].startswith("TypeError"), fails
    assert fails["to_bettertransformer"].startswith("AttributeError")


def test_translate_flash_attention_2():
    t = legacy.translate(use_flash_attention_2=True)
    from transformers.utils import is_flash_attn_2_available

    expected = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    assert t.kwargs == {"attn_implementation": expected}
    assert "use_flash_attention_2=True" in str(t)
    strict = legacy.translate(fallback=False, use_flash_attention_2=True)
    assert strict.kwargs["attn_implementation"] == "flash_attention_2"


def test_translate_4bit_moves_options_into_the_config():
    t = legacy.translate(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        torch_dtype=torch.bfloat16,
        device_map="auto",
    )
    q = t.kwargs["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig) and q.load_in_4bit and q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant
    assert t.kwargs["dtype"] is torch.bfloat16 and t.kwargs["device_map"] == "auto"
    assert "torch_dtype" not in t.kwargs and "load_in_4bit" not in t.kwargs
    assert len(t.notes) == 2


def test_translate_8bit_and_threshold():
    t = legacy.translate(load_in_8bit=True, llm_int8_threshold=5.0)
    q = t.kwargs["quantization_config"]
    assert q.load_in_8bit and q.llm_int8_threshold == 5.0


def test_4bit_and_8bit_together_is_refused():
    with pytest.raises(WorkbookError, match="both set") as err:
        legacy.translate(load_in_4bit=True, load_in_8bit=True)
    assert "Keep one" in err.value.fix


def test_translated_kwargs_load_for_real():
    path = str(checkpoints.build("llama-2-7b-tiny"))
    model, t = legacy.from_pretrained(
        path, load_in_4bit=True, torch_dtype=torch.bfloat16, use_flash_attention_2=False
    )
    counts = models.quantized_layers(model)
    assert counts["Linear4bit/fp4"] == 14  # the 2023 default 4-bit type was fp4, and still is
    assert model.config._attn_implementation == "sdpa"


def test_to_bettertransformer_becomes_sdpa():
    loaded = models.load("opt-350m-tiny", dtype="fp32", attention="eager")
    model, t = legacy.to_bettertransformer(loaded.model)
    assert model.config._attn_implementation == "sdpa" and "set_attn_implementation('sdpa')" in str(t)
    same, note = legacy.reverse_bettertransformer(model)
    assert same is model and "save_pretrained" in str(note)


def test_sdp_kernel_becomes_sdpa_kernel():
    ctx, t = legacy.sdp_kernel(enable_flash=False, enable_mem_efficient=False, enable_cudnn=False)
    assert "SDPBackend.MATH" in str(t) and "FLASH" not in str(t).split("->")[1]
    q = torch.randn(1, 2, 8, 16)
    with ctx:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape
    with pytest.raises(WorkbookError, match="disabled"):
        legacy.sdp_kernel(False, False, False, False)
