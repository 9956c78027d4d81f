"""The visual dialog model (the paper's sec. 5.5): the ViT, a unimodal encoder reading the caption, and
the same transformer as an image-grounded dialog encoder attending to the image's and the caption's
tokens, joined. ITM on [ENC] + candidate answer + question + history says whether the answer is right.

One text transformer, as the retrieval model's. The caption's states join the image tokens, mapped to
the image's width where the two differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip.models.blip import Blip, BlipConfig, ones_mask, register_model
from blip.models.med import build_text_encoder, text_config
from blip.tokenizer import ENC_ID


@register_model
class BlipDialog(Blip):
    """The dialog model: caption encoder + dialog encoder with an ITM head over the shared ViT."""

    TASKS = ("dialog",)
    STARTS_FROM = ("pretrain",)

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        width = cfg.vision.width
        self.text_encoder = build_text_encoder(
            text_config(cfg.text, width, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size))
        self.itm_head = nn.Linear(cfg.text.hidden, 2)
        self.caption_proj = nn.Linear(cfg.text.hidden, width) if cfg.text.hidden != width else nn.Identity()

    @classmethod
    def fresh_weights(cls, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The caption's mapping to the image width (where the two differ) starts fresh."""
        return tuple(k for k in own if k.startswith("caption_proj.") and k not in state)

    def dialog_memory(self, images: torch.Tensor, caption_ids: torch.Tensor,
                      caption_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the dialog encoder attends to, the image tokens and the caption's (B, L, width), and its mask."""
        caption = self.text_encoder(caption_ids, attention_mask=caption_mask).last_hidden_state
        image = self.image_embeds(images)
        return (torch.cat([image, self.caption_proj(caption).to(image.dtype)], 1),
                torch.cat([ones_mask(image), caption_mask.to(torch.long)], 1))

    def dialog_logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, ids: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """(N, 2) ITM logits of dialog texts ([ENC] answer [SEP] question [SEP] history), one memory row each."""
        ids = ids.clone()
        ids[:, 0] = ENC_ID
        hidden = self.text_encoder(ids, attention_mask=mask, encoder_hidden_states=memory,
                                   encoder_attention_mask=memory_mask).last_hidden_state
        return self.itm_head(hidden[:, 0])

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                captions: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{'itm'}: `captions` (ids, mask) one per image, `ids` k dialog texts per image (image i's at i*k ...
        i*k+k-1), each labelled 1 (the right answer) or 0."""
        memory, memory_mask = self.dialog_memory(images, *captions)
        rows = torch.arange(len(images), device=ids.device).repeat_interleave(len(ids) // len(images))
        return {"itm": F.cross_entropy(self.dialog_logits(memory[rows], memory_mask[rows], ids, mask).float(),
                                       labels)}
