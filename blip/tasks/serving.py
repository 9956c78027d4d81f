"""Serving a model over rows (the MLflow pyfunc's requests): a row's picture, and the MED model's answers.

Each task says how its model answers a frame of requests (`Task.serve`); the pretrained model, the
captioner and the filter share the answers here: captions for rows of images alone, ITM and ITC scores
for rows with a `text`. Every row gets its answer or, in the `error` column, why it has none: one bad row
never fails the rest.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import TYPE_CHECKING

from blip.inference import BlipInference, decode_image

if TYPE_CHECKING:  # pandas is imported only to serve (the GPU check's machine need not have it)
    import pandas as pd


def row_image(value: object):
    """A row's picture from base64 text; ValueError saying what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"no image (got {value!r}): send base64-encoded image bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"the image is not base64 ({e})") from e
    return decode_image(data)


def missing(value: object, what: str, send: str) -> str | None:
    """Why a row's text column is unusable (None when it holds text)."""
    return None if isinstance(value, str) and value.strip() else f"no {what} (got {value!r}): send {send}"


def row_images(frame: pd.DataFrame) -> tuple[list, list[str | None]]:
    """Each row's picture (None where unusable) and why not."""
    has_images = "image" in frame.columns
    images, errors = [], []
    for value in frame["image"] if has_images else [None] * len(frame):
        try:
            images.append(row_image(value))
            errors.append(None)
        except ValueError as e:
            images.append(None)
            errors.append(str(e) if has_images else "no 'image' column in the request")
    return images, errors


def serve_med(blip: BlipInference, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Rows with a `text` get its ITM and ITC scores against their image (param itm_token: 'enc', or 'cls' as
    the release's BLIP_ITM demo); rows of images alone get a caption."""
    import pandas as pd

    token = params.get("itm_token", "enc")
    if token not in ("enc", "cls"):
        raise ValueError(f"params itm_token must be 'enc' or 'cls', got {token!r}")
    images, errors = row_images(frame)
    if "text" in frame.columns:
        return pd.DataFrame(_scores(blip, images, list(frame["text"]), errors, token),
                            columns=["text", "itm", "itc", "error"])
    good = [i for i, im in enumerate(images) if im is not None]
    captions = {}
    if good:
        try:
            captions = dict(zip(good, (c[0] for c in blip.caption([images[i] for i in good]))))
        except ValueError as e:  # a filter has no decoder: every row says so
            errors = [err or str(e) for err in errors]
    return pd.DataFrame({"caption": [captions.get(i) for i in range(len(images))], "error": errors})


def _scores(blip: BlipInference, images: list, texts: list, errors: list, token: str) -> list[dict]:
    rows = []
    for image, text, error in zip(images, texts, errors):
        error = error or missing(text, "text", "the text to score against the image")
        if error is None:
            try:
                rows.append({**blip.score(image, [text], itm_token=token)[0], "error": None})
                continue
            except ValueError as e:
                error = str(e)
        rows.append({"text": text if isinstance(text, str) else None, "itm": math.nan, "itc": math.nan,
                     "error": error})
    return rows
