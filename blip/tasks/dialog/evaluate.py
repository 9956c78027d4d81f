"""Visual dialog's ranking and its metrics, as VisDial's evaluation computes them.

Each ranked round's 100 candidates are scored by the dialog encoder's ITM (match probability), ranked 1..100
(ties in option order), and scored against the right answer (sparse: MRR, R@1/5/10, mean rank) and, on the
rounds with dense annotations, against every candidate's relevance (NDCG over the top k, k = the number of
relevant candidates).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict

import torch
from PIL import Image

from blip.data.finished import iter_samples
from blip.tasks.dialog.data import OPTIONS, dialog_text, question_key, ranked_rounds
from blip.launch import autocast
from blip.tokenizer import tokenize


def rank_of(scores: torch.Tensor, gt: int) -> int:
    """The 1-based rank of option `gt` when options are sorted by score, highest first (ties: option order)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return int((order == gt).nonzero()[0, 0]) + 1


def ndcg(scores: torch.Tensor, relevance: list[float]) -> float:
    """NDCG@k of one round's ranking, k = the candidates with non-zero relevance (VisDial's definition)."""
    rel = torch.tensor(relevance, dtype=torch.float64)
    k = int((rel != 0).sum())
    if k == 0:
        return 0.0
    discount = 1 / torch.log2(torch.arange(k, dtype=torch.float64) + 2)
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    ideal = (rel.sort(descending=True).values[:k] * discount).sum()
    return float((rel[order] * discount).sum() / ideal)


def summarise(ranks: list[int], ndcgs: list[float]) -> dict:
    """MRR, R@1/5/10 (%), mean rank, and NDCG (%) over the dense rounds."""
    r = torch.tensor(ranks, dtype=torch.float64)
    out = {"mrr": round(100 * float((1 / r).mean()), 2), **{f"r{k}": round(100 * float((r <= k).double().mean()), 2)
                                                           for k in (1, 5, 10)},
           "mean_rank": round(float(r.mean()), 2), "rounds": len(ranks)}
    if ndcgs:
        out.update(ndcg=round(100 * sum(ndcgs) / len(ndcgs), 2), dense_rounds=len(ndcgs))
    return out


@torch.no_grad()
def score_dialogs(blip, dataset_dir: str, text_len: int, caption_len: int, max_words: int,
                  batch_size: int = 100) -> dict:
    """The model's ranking metrics on every ranked round that has a right answer (and NDCG where dense)."""
    from blip.data.text import clean_caption

    model, ranks, ndcgs = blip.model, [], []
    with autocast(blip.precision, blip.device):
        for sample in iter_samples(dataset_dir):
            rounds = [r for r in ranked_rounds(sample["json"]) if r["gt_index"] is not None or r["relevance"]]
            if not rounds:
                continue
            image = blip.transform(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")).unsqueeze(0)
            cap_ids, cap_mask = tokenize(blip.tokenizer, [clean_caption(sample["txt"], max_words)], caption_len)
            memory, memory_mask = model.dialog_memory(image.to(blip.device), cap_ids.to(blip.device),
                                                      cap_mask.to(blip.device))
            for r in rounds:
                texts = [dialog_text(o, r["question"], r["history"]) for o in r["options"]]
                ids, mask = tokenize(blip.tokenizer, texts, text_len)
                scores = torch.cat([
                    model.dialog_logits(memory.expand(len(ids[s:s + batch_size]), -1, -1),
                                        memory_mask.expand(len(ids[s:s + batch_size]), -1),
                                        ids[s:s + batch_size].to(blip.device),
                                        mask[s:s + batch_size].to(blip.device)).float().softmax(-1)[:, 1]
                    for s in range(0, len(ids), batch_size)]).cpu()
                if r["gt_index"] is not None:
                    ranks.append(rank_of(scores, r["gt_index"]))
                if r["relevance"]:
                    ndcgs.append(ndcg(scores, r["relevance"]))
    return summarise(ranks, ndcgs)


def answer_prior(train_dirs: list[str]) -> tuple[Counter, dict[str, Counter]]:
    """How often each answer was right in training, overall and by the question's first two words."""
    overall, by_key = Counter(), defaultdict(Counter)
    for d in train_dirs:
        for sample in iter_samples(d):
            for r in sample["json"]["rounds"]:
                if r.get("answer") is not None:
                    overall[r["answer"]] += 1
                    by_key[question_key(r["question"])][r["answer"]] += 1
    return overall, by_key


def prior_scores(test_dir: str, overall: Counter, by_key: dict[str, Counter]) -> dict:
    """A blind ranker's metrics (chance): each candidate scored by how often it was the right answer in training
    to questions starting alike (then overall), never looking at the image, the caption or the history; beside
    it, a uniformly random ranking's expectation."""
    ranks, ndcgs = [], []
    for sample in iter_samples(test_dir):
        for r in ranked_rounds(sample["json"]):
            seen = by_key.get(question_key(r["question"]), Counter())
            scores = torch.tensor([seen[o] + overall[o] / (1 + sum(overall.values())) for o in r["options"]],
                                  dtype=torch.float64)
            if r["gt_index"] is not None:
                ranks.append(rank_of(scores, r["gt_index"]))
            if r["relevance"]:
                ndcgs.append(ndcg(scores, r["relevance"]))
    n = OPTIONS
    uniform = {"mrr": round(100 * sum(1 / i for i in range(1, n + 1)) / n, 2), "r1": 100 / n, "r5": 500 / n,
               "r10": 1000 / n, "mean_rank": (n + 1) / 2}
    return {"answer_prior": summarise(ranks, ndcgs), "uniform": uniform}
