"""Zero-shot video with image models (paper sec. 5.6): each clip's n uniformly sampled frames go through the
ViT one by one and their tokens are joined into one sequence, which the grounded encoder and the decoder
attend to as if it were one image.

- retrieval (a retrieval fine-tuned model, as the release's MSRVTT run): a clip's ITC feature is the mean of
  its frames' projected [CLS] features, normalised; ITC's top k are re-ranked by ITM over the joined tokens.
- QA (a VQA model): the question is encoded over the joined tokens, and the answer ranked from the model's
  answer list (its `rank`: first-token top k, then whole answers).

Clips are decoded a batch at a time, so memory holds one batch of frames, plus every clip's tokens for
retrieval (retrieval compares every text with every clip).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from blip.launch import autocast
from blip.tasks.video.data import iter_clips
from blip.tasks.video.frames import read_frames
from blip.tasks.vqa.accuracy import normalize_answer
# video QA ranks a VQA model's answers; importing its answering registers the VQA model class, so the stage loads one
from blip.tasks.vqa.answer import QUESTION_LEN, answer_list_of, candidate_ids, rank


def _batches(dataset_dir: str | Path, frames: int, transform,
             batch_size: int) -> Iterator[tuple[list[dict], torch.Tensor]]:
    """(json of each clip, frames (B, n, 3, H, W)) a batch of clips at a time."""
    metas, clips = [], []
    for key, data, meta in iter_clips(dataset_dir):
        clips.append(torch.stack([transform(f) for f in read_frames(data, frames, f"{meta.get('video', key)}")]))
        metas.append(meta)
        if len(metas) == batch_size:
            yield metas, torch.stack(clips)
            metas, clips = [], []
    if metas:
        yield metas, torch.stack(clips)


def clip_embeds(model, clips: torch.Tensor) -> torch.Tensor:
    """Every frame's ViT tokens joined into one sequence per clip: (B, n * tokens, width)."""
    b, n = clips.shape[:2]
    embeds = model.image_embeds(clips.flatten(0, 1))
    return embeds.view(b, n * embeds.shape[1], embeds.shape[2])


def clip_feat(model, embeds: torch.Tensor, frames: int) -> torch.Tensor:
    """A clip's ITC feature: its frames' projected [CLS] features averaged, then normalised (B, embed_dim)."""
    cls = embeds.view(len(embeds), frames, -1, embeds.shape[-1])[:, :, 0]
    return F.normalize(model.vision_proj(cls).mean(1), dim=-1)


def median_rank(scores: torch.Tensor, target: torch.Tensor) -> float:
    """The median over rows of the 1-based rank of each row's target column."""
    order = scores.argsort(dim=1, descending=True)
    ranks = (order == target.unsqueeze(1)).float().argmax(dim=1) + 1
    return float(ranks.float().median())


@torch.no_grad()
def video_retrieval(blip, dataset_dir: str | Path, frames: int, k_test: int, text_len: int, max_words: int,
                    batch_size: int = 8) -> dict:
    """Text-to-video and video-to-text recalls (R@1/5/10, %) and text-to-video median rank of a retrieval model."""
    from blip.data.text import clean_caption
    from blip.evaluate.retrieval import recall_at_k, rerank

    model, embeds, feats, captions = blip.model, [], [], []
    with autocast(blip.precision, blip.device):
        for metas, clips in _batches(dataset_dir, frames, blip.transform, batch_size):
            e = clip_embeds(model, clips.to(blip.device))
            embeds.append(e)
            feats.append(clip_feat(model, e, frames))
            captions += [[clean_caption(c, max_words) for c in m["captions"]] for m in metas]
        texts = [c for caps in captions for c in caps]
        v2t, t2v, sims = rerank(model, blip.tokenizer, torch.cat(embeds), torch.cat(feats), texts, k_test, text_len)
    txt2vid = [i for i, caps in enumerate(captions) for _ in caps]
    recalls = {k.replace("img_", "vid_"): round(v, 2) for k, v in recall_at_k(v2t, t2v, txt2vid).items()}
    itc = recall_at_k(sims, sims.T.contiguous(), txt2vid)
    return {**recalls, "vid_mdR": median_rank(t2v, torch.tensor(txt2vid)), "itc_vid_r1": round(itc["img_r1"], 2),
            "clips": len(captions), "texts": len(texts), "frames": frames, "k_test": k_test,
            "chance": {"vid_r1": round(100 / max(1, len(captions)), 3), "vid_mdR": (len(captions) + 1) / 2}}


@torch.no_grad()
def video_qa(blip, dataset_dir: str | Path, frames: int, k_test: int, batch_size: int = 4) -> dict:
    """Accuracy (%: exact match after VQA's answer clean-up), overall and per question type, of a VQA model
    answering each clip's questions from its answer list, with the chance levels beside."""
    from blip.tokenizer import tokenize

    candidates = answer_list_of(blip)
    if not candidates:
        raise ValueError("video QA ranks a VQA model's answer list (answer_list.json in its folder): give a model "
                         "fine-tuned by the `vqa` downstream stage")
    model = blip.model
    cand_ids, cand_mask = candidate_ids(blip.tokenizer, candidates, blip.device)
    right, asked, truths = Counter(), Counter(), defaultdict(Counter)
    with autocast(blip.precision, blip.device):
        for metas, clips in _batches(dataset_dir, frames, blip.transform, batch_size):
            questions = [(i, q) for i, m in enumerate(metas) for q in m["questions"]]
            embeds = clip_embeds(model, clips.to(blip.device))
            ids, mask = tokenize(blip.tokenizer, [q["question"] for _, q in questions], QUESTION_LEN)
            ids, mask = ids.to(blip.device), mask.to(blip.device)
            rows = torch.tensor([i for i, _ in questions], device=blip.device)
            states = model.question_states(embeds[rows], ids, mask)
            picks = rank(model, states, mask, cand_ids, cand_mask, k_test).tolist()
            for (_, q), pick in zip(questions, picks):
                truth, kind = normalize_answer(q["answer"]), q.get("question_type") or ""
                for t in (kind, "overall"):
                    asked[t] += 1
                    right[t] += normalize_answer(candidates[pick]) == truth
                truths[kind][truth] += 1
    per_type = {t: round(100 * right[t] / asked[t], 2) for t in asked if t != "overall"}
    # a blind guess that knows the test answers' distribution: each type's most frequent answer
    prior = {t: round(100 * c.most_common(1)[0][1] / sum(c.values()), 2) for t, c in truths.items()}
    prior_overall = sum(c.most_common(1)[0][1] for c in truths.values()) / max(1, asked["overall"])
    listed = {normalize_answer(x) for x in candidates}
    reachable = sum(n for c in truths.values() for a, n in c.items() if a in listed)
    return {"accuracy": round(100 * right["overall"] / max(1, asked["overall"]), 2), "per_question_type": per_type,
            "questions": asked["overall"], "frames": frames, "k_test": k_test, "answers": len(candidates),
            "answerable_share": round(100 * reachable / max(1, asked["overall"]), 2),
            "chance": {"type_prior": round(100 * prior_overall, 2), "type_prior_per_type": prior}}
