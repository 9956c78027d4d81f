"""VQA's training inputs: an image's questions, one training item each, with their annotators' answers."""

from __future__ import annotations

from blip.data.loader import Batch
from blip.tasks.vqa.data import answer_batch, per_question, question_count
from blip.tasks.vqa.model import BlipVQA  # noqa: F401  (registers the model class)
from blip.tokenizer import tokenize
from blip.train.task import StepContext, TrainTask


def inputs(batch: Batch, ctx: StepContext) -> dict:
    """The batch's texts are questions; its metadata holds their answers."""
    m = ctx.params.model.text_len
    ids, mask = tokenize(ctx.tokenizer, batch.captions, m.question)
    return {"ids": ids.to(ctx.device), "mask": mask.to(ctx.device),
            "answers": answer_batch(ctx.tokenizer, batch, m.caption, ctx.device)}


TRAIN = TrainTask(name="vqa", model="vqa", inputs=inputs,
                  expand=per_question, count=question_count)
