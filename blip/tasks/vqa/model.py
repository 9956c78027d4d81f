"""BLIP_VQA: the ViT, an image-grounded encoder reading the question, and an answer decoder that
cross-attends to the encoder's output. It trains with LM on the answers, each weighted by its share of
the annotators.

The two text transformers are separate, as in the release. The answer decoder reads the question's
states, so its cross-attention is as wide as the text, not the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blip.models.blip import Blip, BlipConfig, ones_mask, register_model
from blip.models.med import build_text_decoder, build_text_encoder, text_config
from blip.tokenizer import DEC_ID, ENC_ID


@register_model
class BlipVQA(Blip):
    """The VQA model: question encoder + answer decoder over the shared ViT."""

    TASKS = ("vqa",)
    STARTS_FROM = ("pretrain",)

    def __init__(self, cfg: BlipConfig):
        super().__init__(cfg)
        self.text_encoder = build_text_encoder(
            text_config(cfg.text, cfg.vision.width, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size))
        self.text_decoder = build_text_decoder(
            text_config(cfg.text, cfg.text.hidden, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size))

    @classmethod
    def fresh_weights(cls, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """Where the image and the text widths differ, the answer decoder's cross-attention keys and values
        cannot be taken from the pre-trained decoder (which attends to the image) and start fresh, as the
        release's loader leaves such mis-shaped weights (said aloud here, not silently)."""
        fresh = tuple(k for k in own if k.startswith("text_decoder.") and ".crossattention.self." in k
                      and k in state and state[k].shape != own[k].shape)
        if fresh:
            print(f"VQA answer decoder: {len(fresh)} cross-attention key/value weights start fresh (the image is "
                  f"{state[fresh[0]].shape[-1]} wide, the question states {own[fresh[0]].shape[-1]})", flush=True)
        return fresh

    def question_states(self, image_embeds: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image-grounded encoder's output for [ENC] + question (B, L, hidden)."""
        ids = ids.clone()
        ids[:, 0] = ENC_ID
        return self.text_encoder(ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=ones_mask(image_embeds)).last_hidden_state

    def answer_nll(self, states: torch.Tensor, state_mask: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """Per answer, the decoder's label-smoothed cross-entropy summed over its tokens ([SEP] included),
        given the question states (one row per answer): BLIP_VQA's loss with reduction 'none'."""
        dec_ids = ids.clone()
        dec_ids[:, 0] = DEC_ID
        hidden = self.text_decoder.bert(dec_ids, attention_mask=mask, encoder_hidden_states=states,
                                        encoder_attention_mask=state_mask, is_decoder=True).last_hidden_state
        logits = self.text_decoder.cls(hidden[:, :-1]).float()
        labels = dec_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none",
                              label_smoothing=self.cfg.label_smoothing)
        return nll.sum(1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                answers: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """{'lm'}: each question's answers weighted by their share of its annotators, summed, over the batch size.

        `ids` are the questions; `answers` is (answer ids, answer mask, weights, answers per question), the
        answers of question i following those of question i-1.
        """
        answer_ids, answer_mask, weights, counts = answers
        states = self.question_states(self.image_embeds(images), ids, mask)
        rows = torch.repeat_interleave(torch.arange(len(ids), device=ids.device), counts)
        nll = self.answer_nll(states[rows], mask[rows], answer_ids, answer_mask)
        return {"lm": (weights.to(nll.dtype) * nll).sum() / len(ids)}
