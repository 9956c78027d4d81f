"""The filter's inputs (retrieval fine-tuning), and the shared captioner-filter's.

Every caption of an image is a positive of it (image ids), as in retrieval fine-tuning. The filter draws
its ITM negatives from the global batch when `negatives_all_ranks` says so; the shared model draws them
within each rank's batch, as pre-training does, and reads its captions twice: as the filter scores them
(encoder) and with the captioner's prompt (decoder).
"""

from __future__ import annotations

from blip.data.loader import Batch
from blip.tasks.filter.task import FilterStageConfig
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask, image_ids, prompt_length


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """Captions at the retrieval length, with their image ids."""
    ids, mask = tokenize(ctx.tokenizer, batch.captions, ctx.params.model.text_len.retrieval)
    every_rank = isinstance(ctx.stage, FilterStageConfig) and ctx.stage.negatives_all_ranks
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "alpha": ctx.alpha,
            "idx": image_ids(batch.keys, ctx.device), "negatives_all_ranks": every_rank}


def shared_inputs(batch: Batch, ctx: StepContext) -> dict:
    """The encoder's captions as the filter's; the decoder's with the prompt, at the captioning length."""
    ids, mask = tokenize(ctx.tokenizer, batch.captions, ctx.params.model.text_len.retrieval)
    lm_ids, lm_mask = tokenize(ctx.tokenizer, [ctx.prompt + c for c in batch.captions],
                               ctx.params.model.text_len.caption)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device), "alpha": ctx.alpha,
            "idx": image_ids(batch.keys, ctx.device), "prompt_len": prompt_length(ctx.tokenizer, ctx.prompt),
            "lm_text": (lm_ids.to(ctx.device), lm_mask.to(ctx.device))}


TRAIN = TrainTask(name="filter", model="filter", inputs=inputs)
# built as pre-training's model: encoder and decoder share all but self-attention
SHARED = TrainTask(name="shared", model="pretrain", inputs=shared_inputs)
