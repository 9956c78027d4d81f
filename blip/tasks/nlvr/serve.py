"""Serving an NLVR model: rows of two images (`image`, `image2`) and a statement (`text`) get a verdict."""

from __future__ import annotations

import math

import pandas as pd

from blip.inference import BlipInference
from blip.tasks.nlvr.verify import verify_pair
from blip.tasks.serving import missing, row_image, row_images


def serve(blip: BlipInference, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Whether each row's statement is true of its two images, with the probability; or why there is none."""
    images, errors = row_images(frame)
    seconds = list(frame["image2"]) if "image2" in frame.columns else [None] * len(frame)
    texts = list(frame["text"]) if "text" in frame.columns else [None] * len(frame)
    rows = []
    for image, second, text, error in zip(images, seconds, texts, errors):
        error = error or missing(text, "text", "the statement to verify against the two images")
        if error is None:
            try:
                verdict, p = verify_pair(blip, [image], [row_image(second)], [text])[0]
                rows.append({"text": text, "true": verdict, "probability": p, "error": None})
                continue
            except ValueError as e:
                error = str(e)
        rows.append({"text": text if isinstance(text, str) else None, "true": None, "probability": math.nan,
                     "error": error})
    return pd.DataFrame(rows, columns=["text", "true", "probability", "error"])
