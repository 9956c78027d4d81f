"""The toy task's model: the shared ViT and image-grounded text encoder, and a match head of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip.models.blip import Blip, BlipConfig, ones_mask, register_model
from blip.models.med import build_text_encoder, text_config
from blip.tokenizer import ENC_ID


@register_model
class BlipToy(Blip):
    """Caption-image matching with a fresh head, fine-tuned from a pre-trained model."""

    TASKS = ("toy",)
    STARTS_FROM = ("pretrain",)

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        self.text_encoder = build_text_encoder(
            text_config(cfg.text, cfg.vision.width, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size))
        self.match_head = nn.Linear(cfg.text.hidden, 2)

    @classmethod
    def fresh_weights(cls, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The match head is new: it starts fresh."""
        return tuple(k for k in own if k.startswith("match_head."))

    def match_logits(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) logits: [ENC] + caption, cross-attending to the image."""
        embeds = self.image_embeds(images)
        ids = ids.clone()
        ids[:, 0] = ENC_ID
        hidden = self.text_encoder(ids, attention_mask=mask, encoder_hidden_states=embeds,
                                   encoder_attention_mask=ones_mask(embeds)).last_hidden_state
        return self.match_head(hidden[:, 0])

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'match'}: cross-entropy of (image, caption) rows, the images repeated for the rolled captions."""
        images = images.repeat(len(ids) // len(images), 1, 1, 1)
        return {"match": F.cross_entropy(self.match_logits(images, ids, mask).float(), labels)}
