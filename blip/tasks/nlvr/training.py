"""NLVR's training inputs: image pairs, each with a statement and its class; and its extra pre-training
(3 classes: a caption of the first image, of the second, or of neither)."""

from __future__ import annotations

import torch

from blip.data.loader import Batch
from blip.tasks.nlvr.model import BlipNLVR  # noqa: F401  (registers the model class)
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Statements at the retrieval length and their labels (the loader stacks each pair's two images)."""
    ids, mask = tokenize(ctx.tokenizer, batch.captions, ctx.params.model.text_len.retrieval)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device),
            "labels": torch.tensor([m["label"] for m in batch.meta], device=ctx.device)}


TRAIN = TrainTask(name="nlvr", model="nlvr", inputs=inputs,
                  config=lambda params: {"num_classes": 2})
PRETRAIN = TrainTask(name="nlvr_pretrain", model="nlvr", inputs=inputs,
                     config=lambda params: {"num_classes": 3})
