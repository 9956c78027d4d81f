"""Answering questions with a VQA model, the release's two ways.

- generate: beam search (3 beams, at most 10 tokens) from [DEC] over the question states, which the
  release's generation attends to without their padding mask (kept, for identical answers);
- rank: the candidates whose first token the decoder finds most probable after [DEC] (top k), then the
  best of those by the whole answer's score. The score is the release's: minus the decoder's summed
  label-smoothed cross-entropy (its loss function in reduction 'none'), not the plain log-likelihood.
"""

from __future__ import annotations

import json
from typing import Literal

import torch
from PIL import Image

from blip.inference import BlipInference
from blip.launch import autocast
from blip.models.generate import GenerationSettings, beam_ids
from blip.tasks.vqa.model import BlipVQA
from blip.tokenizer import DEC_ID, tokenize

Method = Literal["rank", "generate"]
QUESTION_LEN = 35  # the release cuts questions at 35 tokens
GENERATE = GenerationSettings(method="beam", num_beams=3, max_length=10, min_length=1)
ANSWER_LIST = "answer_list.json"  # a VQA model folder's candidate answers, saved by its fine-tuning


def candidate_ids(tokenizer, answers: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The answer list as decoder inputs: [DEC] answer [SEP], padded."""
    ids = tokenizer(answers, padding="longest", return_tensors="pt")
    input_ids = ids.input_ids.clone()
    input_ids[:, 0] = DEC_ID
    return input_ids.to(device), ids.attention_mask.to(device)


@torch.no_grad()
def rank(model: BlipVQA, states: torch.Tensor, state_mask: torch.Tensor, cand_ids: torch.Tensor,
         cand_mask: torch.Tensor, k: int) -> torch.Tensor:
    """For each question, the index of the answer-list entry the release's two-step ranking picks."""
    n, k = len(states), min(k, len(cand_ids))
    start = torch.full((n, 1), DEC_ID, dtype=torch.long, device=states.device)
    hidden = model.text_decoder.bert(start, encoder_hidden_states=states, encoder_attention_mask=state_mask,
                                     is_decoder=True).last_hidden_state
    first = model.text_decoder.cls(hidden[:, 0]).float().softmax(-1)
    top = first.index_select(1, cand_ids[:, 1]).topk(k, dim=1).indices  # (n, k)
    rows = top.reshape(-1)
    nll = model.answer_nll(states.repeat_interleave(k, 0), state_mask.repeat_interleave(k, 0),
                           cand_ids[rows], cand_mask[rows])
    best = (-nll).view(n, k).argmax(1)
    return top[torch.arange(n, device=top.device), best]


@torch.no_grad()
def answer(model: BlipVQA, tokenizer, images: torch.Tensor, questions: list[str], method: Method = "rank",
           candidates: list[str] | None = None, k: int = 128,
           encoded_candidates: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[str]:
    """One answer per (image, question) pair; `rank` needs the candidate answers."""
    if model.cfg.task != "vqa":
        raise ValueError(f"this is a {model.cfg.task} model, not a VQA model: fine-tune one with `blip downstream vqa`")
    ids, mask = tokenize(tokenizer, questions, QUESTION_LEN)
    ids, mask = ids.to(images.device), mask.to(images.device)
    states = model.question_states(model.image_embeds(images), ids, mask)
    if method == "generate":
        start = torch.full((len(questions), 1), DEC_ID, dtype=torch.long, device=images.device)
        out = beam_ids(model, states, start, GENERATE)
        return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    if not candidates:
        raise ValueError("ranking needs a candidate answer list (the model folder's answer_list.json)")
    cand_ids, cand_mask = encoded_candidates or candidate_ids(tokenizer, candidates, images.device)
    return [candidates[i] for i in rank(model, states, mask, cand_ids, cand_mask, k).tolist()]


def answer_list_of(blip: BlipInference) -> list[str] | None:
    """A loaded VQA model's candidate answers (its folder's answer_list.json), or None when it has none."""
    path = blip.folder / ANSWER_LIST if blip.folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


@torch.no_grad()
def ask(blip: BlipInference, images: list[Image.Image], questions: list[str], method: Method | None = None,
        k: int = 128) -> list[str]:
    """One answer per (image, question): ranked from the model's answer list when it has one, else generated."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions: give one image per question")
    candidates = answer_list_of(blip)
    method = method or ("rank" if candidates else "generate")
    with autocast(blip.precision, blip.device):
        return answer(blip.model, blip.tokenizer, blip.images(images), questions, method, candidates, k)
