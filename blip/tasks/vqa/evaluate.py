"""A VQA model on a question set: its answers, VQA accuracy, and the accuracy of a question-only prior."""

from __future__ import annotations

from collections import Counter

import torch

from blip.data.finished import iter_samples
from blip.data.loader import build_loader
from blip.data.shards import shard_paths
from blip.launch import autocast
from blip.tasks.vqa.accuracy import vqa_accuracy
from blip.tasks.vqa.answer import Method, answer, candidate_ids
from blip.tasks.vqa.data import per_question


def questions_of(dataset_dir: str) -> dict:
    """{question_id: question record} of a VQA dataset."""
    return {q["question_id"]: q for s in iter_samples(dataset_dir) for q in s["json"]["questions"]}


@torch.no_grad()
def predict(blip, dataset_dir: str, method: Method, candidates: list[str] | None, k: int, batch_size: int,
            max_words: int) -> dict:
    """{question_id: answer} for every question of the dataset, read as training reads it."""
    loader, _ = build_loader(shard_paths(dataset_dir), blip.transform, batch_size, train=False, seed=0,
                             num_workers=0, max_words=max_words, expand=per_question)
    encoded = candidate_ids(blip.tokenizer, candidates, blip.device) if method == "rank" else None
    predictions = {}
    with autocast(blip.precision, blip.device):
        for batch in loader:
            answers = answer(blip.model, blip.tokenizer, batch.images.to(blip.device), batch.captions, method,
                             candidates, k, encoded)
            predictions.update({q["question_id"]: a for q, a in zip(batch.meta, answers)})
    return predictions


def prior_accuracy(overall: Counter, by_type: dict[str, Counter], questions: dict) -> dict:
    """VQA accuracy of a blind answerer (chance): each test question gets its type's most frequent training
    answer (`answer_counts`), the overall most frequent for a type never seen."""
    fallback = overall.most_common(1)[0][0]
    guesses = {qid: by_type[t].most_common(1)[0][0] if (t := q.get("question_type") or "") in by_type else fallback
               for qid, q in questions.items()}
    return vqa_accuracy(guesses, questions)
