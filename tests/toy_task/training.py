"""The toy task's training inputs: each caption with its image (1), then each rolled by one (0)."""

from __future__ import annotations

import torch

from blip.data.loader import Batch
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask

import tests.toy_task.model  # noqa: F401  (registers the model class)


def pairs(captions: list[str]) -> tuple[list[str], list[int]]:
    """The matched captions, then the mismatched ones (each image with the next image's caption)."""
    return captions + captions[1:] + captions[:1], [1] * len(captions) + [0] * len(captions)


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Tokenized pairs at the retrieval length, and their labels."""
    texts, labels = pairs(batch.captions)
    ids, mask = tokenize(ctx.tokenizer, texts, ctx.params.model.text_len.retrieval)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "labels": torch.tensor(labels, device=ctx.device)}


TRAIN = TrainTask(name="toy", model="toy", inputs=inputs)
