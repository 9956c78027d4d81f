"""The toy task's training inputs: each caption with its image (1), then the captions rolled by 1..negatives (0)."""

from __future__ import annotations

import torch

from blip.data.loader import Batch
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask

import tests.toy_task.model  # noqa: F401  (registers the model class)


def pairs(captions: list[str], negatives: int = 1) -> tuple[list[str], list[int]]:
    """The matched captions, then `negatives` mismatched ones per image (the 1st, 2nd, ... next image's caption)."""
    texts = captions + [c for k in range(1, negatives + 1) for c in captions[k:] + captions[:k]]
    return texts, [1] * len(captions) + [0] * (negatives * len(captions))


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Tokenized pairs at the retrieval length, and their labels."""
    texts, labels = pairs(batch.captions, ctx.stage.negatives)
    ids, mask = tokenize(ctx.tokenizer, texts, ctx.params.model.text_len.retrieval)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "labels": torch.tensor(labels, device=ctx.device)}


TRAIN = TrainTask(name="toy", model="toy", inputs=inputs)
