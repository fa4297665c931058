"""PyTorch's encoder fast path with nested tensors: the mechanism BetterTransformer used (notebook 02).

``to_fastpath_encoder`` copies a BERT-style encoder's weights (all-MiniLM-L6-v2 here) into
``torch.nn.TransformerEncoder`` layers. In inference mode, ``nn.TransformerEncoder`` runs the fused
``_transformer_encoder_layer_fwd`` kernel and, given a padding mask, packs the batch into a nested
tensor so padding tokens are never computed. That is what made BetterTransformer fast on padded
batches; transformers' own SDPA path computes the padded positions and masks them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import WorkbookError


def to_fastpath_encoder(bert_model) -> nn.TransformerEncoder:
    """Build an ``nn.TransformerEncoder`` with the same weights as ``bert_model.encoder``."""
    cfg = bert_model.config
    if cfg.hidden_act != "gelu" or getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise WorkbookError(
            f"{type(bert_model).__name__} uses {cfg.hidden_act!r}; the fast path takes exact GELU BERT layers.",
            "Use a BERT-style encoder such as minilm-l6.",
        )
    layers = []
    for layer in bert_model.encoder.layer:
        att = layer.attention
        new = nn.TransformerEncoderLayer(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=cfg.layer_norm_eps,
            batch_first=True,
            norm_first=False,
        )
        with torch.no_grad():
            new.self_attn.in_proj_weight.copy_(
                torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight])
            )
            new.self_attn.in_proj_bias.copy_(
                torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias])
            )
            new.self_attn.out_proj.weight.copy_(att.output.dense.weight)
            new.self_attn.out_proj.bias.copy_(att.output.dense.bias)
            new.norm1.load_state_dict(att.output.LayerNorm.state_dict())
            new.linear1.load_state_dict(layer.intermediate.dense.state_dict())
            new.linear2.load_state_dict(layer.output.dense.state_dict())
            new.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
        layers.append(new)
    enc = nn.TransformerEncoder(layers[0], num_layers=len(layers), enable_nested_tensor=True)
    enc.layers = nn.ModuleList(layers)
    p = next(bert_model.parameters())
    return enc.to(device=p.device, dtype=p.dtype).eval()


class FastpathEncoder(nn.Module):
    """BERT embeddings, then the fast-path encoder; returns the last hidden state like ``BertModel``."""

    def __init__(self, bert_model):
        super().__init__()
        self.embeddings = bert_model.embeddings
        self.encoder = to_fastpath_encoder(bert_model)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        # On the fast path the padded positions are never computed and come back as exact zeros.
        return self.encoder(hidden, src_key_padding_mask=attention_mask == 0)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding of all-MiniLM-L6-v2: mean over real tokens, then L2-normalised."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(emb, dim=-1)
