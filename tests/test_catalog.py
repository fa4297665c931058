import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers.errors import WorkbookError
from helpers.models import catalog


def _params(cfg) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name,billions",
    [
        ("llama-2-7b", 6.738),
        ("falcon-7b", 6.922),
        ("opt-350m", 0.331),
        ("bloom-3b", 3.003),
        ("llama-1.1b", 1.100),
    ],
)
def test_configs_are_the_real_architectures(name, billions):
    # parameter counts of the published checkpoints, to 0.5%
    assert _params(catalog.config(name)) / 1e9 == pytest.approx(billions, rel=5e-3)


@pytest.mark.parametrize(
    "name", [n for n, e in catalog.ENTRIES.items() if e.kind == "decoder" and not n.endswith("-tiny")]
)
def test_tiny_twin_keeps_the_architecture(name):
    big, small = catalog.config(name), catalog.config(name + "-tiny")
    assert type(big) is type(small)
    assert catalog.model_class(big) is catalog.model_class(small)
    for key in ("multi_query", "parallel_attn", "do_layer_norm_before", "hidden_act", "activation_function"):
        assert getattr(big, key, None) == getattr(small, key, None), key
    assert small.hidden_size % 64 == 0  # 4-bit blocks fit on the CPU


def test_unknown_name_suggests_close_ones():
    with pytest.raises(WorkbookError) as err:
        catalog.entry("lama-2-7b")
    assert "llama-2-7b" in err.value.fix


def test_catalog_table_marks_attention_support():
    table = catalog.to_frame().set_index("name")
    assert not table.loc["bloom-3b", "sdpa"]
    assert table.loc["llama-2-7b", "sdpa"] and table.loc["falcon-7b", "flash_attention"]
    assert table.loc["minilm-l6", "kind"] == "encoder"
