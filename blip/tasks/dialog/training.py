"""Visual dialog's training inputs: one item per ranked round; its right answer and wrong ones, each read
with the question and the history, against the image and its caption."""

from __future__ import annotations

import torch

from blip.data.loader import Batch
from blip.tasks.dialog.data import per_round, round_count, training_pairs
from blip.tasks.dialog.model import BlipDialog  # noqa: F401  (registers the model class)
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """The batch's texts are captions; each round gives its dialog texts and their ITM labels."""
    m = ctx.params.model.text_len
    captions = tokenize(ctx.tokenizer, batch.captions, m.retrieval)
    texts, classes = training_pairs(batch.meta, ctx.stage.negatives, ctx.stage.hard_negatives)
    ids, mask = tokenize(ctx.tokenizer, texts, m.dialog)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device),
            "labels": torch.tensor(classes, device=ctx.device),
            "captions": tuple(t.to(ctx.device) for t in captions)}


TRAIN = TrainTask(name="dialog", model="dialog", inputs=inputs,
                  expand=per_round, count=round_count)
