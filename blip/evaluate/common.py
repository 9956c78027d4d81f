"""Reading an evaluation split (images once each, with all their human captions), and the ROC AUC."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blip.data.finished import iter_samples
from blip.data.text import clean_caption


@dataclass
class EvalSet:
    keys: list[str]
    images: list[Image.Image]
    captions: list[list[str]]  # per image, all human captions (cleaned)


def load_eval_set(dataset_dir: str | Path, max_words: int = 30, limit: int | None = None) -> EvalSet:
    """A finished dataset as evaluation data (a human split: several captions per image)."""
    keys, images, captions = [], [], []
    for sample in iter_samples(dataset_dir):
        caps = sample["json"].get("captions") or [sample["txt"]]
        keys.append(sample["__key__"])
        images.append(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
        captions.append([clean_caption(c, max_words) for c in caps])
        if limit and len(keys) >= limit:
            break
    return EvalSet(keys, images, captions)


def batched_images(images: list[Image.Image], transform, batch_size: int, device: torch.device, rank: int = 0,
                   world: int = 1):
    """Yield (start index, normalised batch) over a list of PIL images: every `world`-th batch from the
    `rank`-th (so a batch holds the same images whatever the number of ranks)."""
    for start in range(rank * batch_size, len(images), world * batch_size):
        yield start, torch.stack([transform(im) for im in images[start:start + batch_size]]).to(device)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties counted half: the ROC AUC."""
    if not len(positive) or not len(negative):
        return None
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, side="left")
    ties = np.searchsorted(negative, positive, side="right") - below
    return round(float((below + 0.5 * ties).sum() / (len(positive) * len(negative))), 4)
