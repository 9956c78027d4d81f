"""Pre-training's inputs: every caption as is, for the encoder (ITC, ITM) and the decoder (LM) alike."""

from __future__ import annotations

from blip.data.loader import Batch
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Captions tokenized at pre-training's length; ITM draws its negatives within the rank's batch."""
    ids, mask = tokenize(ctx.tokenizer, batch.captions, ctx.params.model.text_len.pretrain)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "alpha": ctx.alpha}


TRAIN = TrainTask(name="pretrain", model="pretrain", inputs=inputs,
                  transform="pretrain")
