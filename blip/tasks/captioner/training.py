"""The captioner's inputs: "a picture of " + caption, the prompt's tokens not predicted."""

from __future__ import annotations

from blip.data.loader import Batch
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask, prompt_length


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Prompted captions at the captioning length, and how many leading tokens LM skips."""
    ids, mask = tokenize(ctx.tokenizer, [ctx.prompt + c for c in batch.captions], ctx.params.model.text_len.caption)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "alpha": ctx.alpha,
            "prompt_len": prompt_length(ctx.tokenizer, ctx.prompt)}


TRAIN = TrainTask(name="captioner", model="captioner", inputs=inputs)
