"""BLIP_NLVR: the ViT, an image-grounded encoder whose every block attends to two images (twin.py), and an
MLP on [ENC]. It trains with cross-entropy over `num_classes`: 2 (the statement is true or false), or 3
in its extra pre-training (a caption of the first image, the second, or neither)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip.models.blip import Blip, BlipConfig, register_model
from blip.models.med import build_text_encoder, text_config
from blip.tasks.nlvr.twin import make_twin, twin_state
from blip.tokenizer import ENC_ID


@register_model
class BlipNLVR(Blip):
    """The NLVR model: a twin image-grounded encoder and a classifier over the shared ViT."""

    TASKS = ("nlvr",)
    STARTS_FROM = ("pretrain",)

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        self.text_encoder = build_text_encoder(
            text_config(cfg.text, cfg.vision.width, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size))
        make_twin(self.text_encoder)
        hidden = cfg.text.hidden
        self.cls_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, cfg.num_classes))

    @classmethod
    def adapt_state(cls, state: dict[str, torch.Tensor], source_task: str) -> dict[str, torch.Tensor]:
        """A pre-trained encoder's single cross-attention, copied to both of the twin's."""
        return state if source_task == "nlvr" else twin_state(state)

    @classmethod
    def fresh_weights(cls, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The merge layers and the classifier start fresh (from the 3-way pre-training to the 2-way task, the
        classifier's last layer)."""
        return tuple(k for k in own if (k.startswith("cls_head.") or ".merge_layer." in k)
                     and (k not in state or state[k].shape != own[k].shape))

    def pair_logits(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits for image pairs (B, 2, 3, H, W) and their statements."""
        b = len(images)
        embeds = self.image_embeds(images.transpose(0, 1).reshape(2 * b, *images.shape[2:]))  # one ViT pass
        ids = ids.clone()
        ids[:, 0] = ENC_ID
        hidden = self.text_encoder(ids, attention_mask=mask,
                                   encoder_hidden_states=(embeds[:b], embeds[b:])).last_hidden_state
        return self.cls_head(hidden[:, 0])

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'cls'}: cross-entropy of the pairs' (`images`: B, 2, 3, H, W) classes."""
        return {"cls": F.cross_entropy(self.pair_logits(images, ids, mask).float(), labels)}
