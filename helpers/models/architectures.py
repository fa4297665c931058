"""The published configurations of the catalog's architectures, written out so that no hub is needed.

Each function returns the transformers config of the real checkpoint (keyword arguments override fields: the
catalog's ``-tiny`` twins shrink widths and layers and keep the layout). ``catalog`` names them. ``dims`` and
``head_dim`` read the attention layout of any config.
"""

from __future__ import annotations


def llama(**kw):
    from transformers import LlamaConfig  # heavy: imported on first use

    base = dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        hidden_act="silu",
    )
    base.update(kw)
    return LlamaConfig(**base)


def llama1b(**kw):
    base = dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    base.update(kw)
    return llama(**base)


def falcon(**kw):
    from transformers import FalconConfig  # heavy: imported on first use

    base = dict(
        vocab_size=65024,
        hidden_size=4544,
        num_hidden_layers=32,
        num_attention_heads=71,
        multi_query=True,
        parallel_attn=True,
        bias=False,
        alibi=False,
        new_decoder_architecture=False,
        bos_token_id=11,
        eos_token_id=11,
        max_position_embeddings=2048,
    )
    base.update(kw)
    return FalconConfig(**base)


def opt(**kw):
    from transformers import OPTConfig  # heavy: imported on first use

    base = dict(
        vocab_size=50272,
        hidden_size=1024,
        num_hidden_layers=24,
        ffn_dim=4096,
        num_attention_heads=16,
        max_position_embeddings=2048,
        do_layer_norm_before=False,
        word_embed_proj_dim=512,
        activation_function="relu",
        dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
    )
    base.update(kw)
    return OPTConfig(**base)


def bloom(**kw):
    from transformers import BloomConfig  # heavy: imported on first use

    base = dict(
        vocab_size=250880,
        hidden_size=2560,
        n_layer=30,
        n_head=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    base.update(kw)
    return BloomConfig(**base)


def t5(**kw):
    from transformers import T5Config  # heavy: imported on first use

    base = dict(
        vocab_size=32128,
        d_model=1024,
        d_kv=128,
        d_ff=65536,
        num_layers=24,
        num_heads=128,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    base.update(kw)
    return T5Config(**base)


def head_dim(cfg) -> int:
    """Width of one attention head: the config's ``head_dim`` (``d_kv`` for T5), else hidden size / heads."""
    return (
        getattr(cfg, "head_dim", None)
        or getattr(cfg, "d_kv", None)
        or cfg.hidden_size // cfg.num_attention_heads
    )


def dims(cfg) -> tuple[int, int, int, int]:
    """(layers, query heads, head width, key/value heads) of a config; Falcon's multi-query has one K/V head."""
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or (
        1 if getattr(cfg, "multi_query", False) else heads
    )
    return cfg.num_hidden_layers, heads, head_dim(cfg), kv_heads
