"""BLIP's NLVR2 encoder: every block of the image-grounded encoder attends to two images.

As the release's NLVR model: each block's cross-attention is doubled (self0 reads the first image, self1
the second, both starting from the pre-trained cross-attention), their outputs projected (dense0,
dense1) and merged: averaged in the first half of the blocks, concatenated and projected by a new
`merge_layer` in the second half (no activation, as the release). A two-layer MLP on `[ENC]` classifies.
The module names follow the release's, so its NLVR checkpoints load by name.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers.models.blip.modeling_blip_text import BlipTextAttention, BlipTextModel


class TwinOutput(nn.Module):
    """The two cross-attentions' output projections, merged, then the block's residual and LayerNorm."""

    def __init__(self, single: nn.Module, merge: bool):
        super().__init__()
        self.dense0, self.dense1 = copy.deepcopy(single.dense), copy.deepcopy(single.dense)
        self.LayerNorm, self.dropout = single.LayerNorm, single.dropout
        hidden = single.dense.out_features
        self.merge_layer = nn.Linear(2 * hidden, hidden) if merge else None

    def forward(self, context: tuple[torch.Tensor, torch.Tensor], residual: torch.Tensor) -> torch.Tensor:
        h0, h1 = self.dense0(context[0]), self.dense1(context[1])
        h = self.merge_layer(torch.cat([h0, h1], -1)) if self.merge_layer is not None else (h0 + h1) / 2
        return self.LayerNorm(self.dropout(h) + residual)


class TwinCrossAttention(nn.Module):
    """A block's cross-attention over two images; called as the single one is, with a pair of image token sets."""

    def __init__(self, single: BlipTextAttention, merge: bool):
        super().__init__()
        self.self0, self.self1 = copy.deepcopy(single.self), copy.deepcopy(single.self)
        self.output = TwinOutput(single.output, merge)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                past_key_values=None, **kwargs) -> tuple[torch.Tensor, None]:
        first, second = encoder_hidden_states
        c0, _ = self.self0(hidden_states, encoder_hidden_states=first)
        c1, _ = self.self1(hidden_states, encoder_hidden_states=second)
        return self.output((c0, c1), hidden_states), None


def make_twin(encoder: BlipTextModel) -> None:
    """Double every block's cross-attention in place; the second half of the blocks merge by projection."""
    layers = encoder.encoder.layer
    for i, layer in enumerate(layers):
        layer.crossattention = TwinCrossAttention(layer.crossattention, merge=i >= len(layers) // 2)


def twin_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pre-trained encoder's weights under the twin names: each cross-attention and its output projection
    copied to both images' (the merge layers and the classifier are new)."""
    out = {}
    for key, value in state.items():
        if ".crossattention.self." in key:
            out[key.replace(".crossattention.self.", ".crossattention.self0.")] = value
            out[key.replace(".crossattention.self.", ".crossattention.self1.")] = value
        elif ".crossattention.output.dense." in key:
            out[key.replace(".crossattention.output.dense.", ".crossattention.output.dense0.")] = value
            out[key.replace(".crossattention.output.dense.", ".crossattention.output.dense1.")] = value
        else:
            out[key] = value
    return out
