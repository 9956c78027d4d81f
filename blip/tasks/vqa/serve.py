"""Serving a VQA model: rows of an image and a `question` get an answer."""

from __future__ import annotations

import pandas as pd

from blip.inference import BlipInference
from blip.tasks.serving import missing, row_images
from blip.tasks.vqa.answer import ask


def serve(blip: BlipInference, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """One answer per row (column `question`), or why there is none."""
    images, errors = row_images(frame)
    questions = list(frame["question"]) if "question" in frame.columns else [None] * len(frame)
    errors = [e or missing(q, "question", "the question to answer about the image") for e, q in zip(errors, questions)]
    good = [i for i, e in enumerate(errors) if e is None]
    replies = {}
    if good:
        replies = dict(zip(good, ask(blip, [images[i] for i in good], [questions[i] for i in good])))
    return pd.DataFrame([{"question": q if isinstance(q, str) else None, "answer": replies.get(i), "error": errors[i]}
                         for i, q in enumerate(questions)], columns=["question", "answer", "error"])
