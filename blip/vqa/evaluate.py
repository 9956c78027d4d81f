"""A VQA model on a question set: its answers, VQA accuracy, and the accuracy of a question-only prior."""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

from blip.data.loader import build_loader
from blip.data.shards import iter_samples, shard_paths
from blip.launch import autocast
from blip.vqa.accuracy import vqa_accuracy
from blip.vqa.answer import Method, answer, candidate_ids
from blip.vqa.data import per_question


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


def prior_answers(train_dirs: list[str]) -> tuple[dict[str, str], str]:
    """The most frequent training answer of each question type, and overall: a blind answerer's guesses."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for d in train_dirs:
        for s in iter_samples(d):
            for q in s["json"]["questions"]:
                by_type[q.get("question_type") or ""].update(q["answers"])
                overall.update(q["answers"])
    return {t: c.most_common(1)[0][0] for t, c in by_type.items()}, overall.most_common(1)[0][0]


def prior_accuracy(train_dirs: list[str], questions: dict) -> dict:
    """VQA accuracy of answering each test question with its type's most frequent training answer (chance)."""
    by_type, overall = prior_answers(train_dirs)
    guesses = {qid: by_type.get(q.get("question_type") or "", overall) for qid, q in questions.items()}
    return vqa_accuracy(guesses, questions)
