"""A whole model on an evaluation split: caption metrics when it has a decoder, retrieval recalls when
it has an encoder; on one device, or on the ranks of a torchrun / DeepSpeed launch, each with its GPU.

    blip evaluate --model models/filter --data data/coco/test
    torchrun --nproc-per-node 8 -m blip.cli evaluate --model models/filter --data data/coco/test
"""

from __future__ import annotations

from blip.config import Params
from blip.evaluate.captioning import CAPTION_METRICS, evaluate_captioning
from blip.evaluate.common import load_eval_set
from blip.evaluate.retrieval import evaluate_retrieval
from blip.inference import load
from blip.launch import autocast, join_process_group, ranks_from_env
from blip.models.generate import GenerationSettings


def evaluate_model(model_path: str, data: str, params: Params, k_test: int | None = None,
                   limit: int | None = None, device: str | None = None,
                   caption_metrics: tuple[str, ...] = CAPTION_METRICS) -> tuple[dict, list[dict], bool]:
    """(metrics, caption examples, whether this process is rank 0: the one to report them)."""
    ranks = ranks_from_env()
    blip = load(model_path, device=device or params.inference.device, precision=params.inference.precision)
    join_process_group(ranks, blip.device)
    share = dict(rank=ranks.rank, world=ranks.world or 1)
    evalset = load_eval_set(data, params.ingest.max_words, limit)
    metrics: dict = {"model": model_path, "data": data, "task": blip.model.cfg.task, "device": str(blip.device),
                     "precision": blip.precision, "ranks": share["world"]}
    examples: list[dict] = []
    with autocast(blip.precision, blip.device):
        if blip.model.cfg.has_decoder:
            settings = GenerationSettings("beam", num_beams=3, max_length=20, min_length=5)
            captioning, examples = evaluate_captioning(blip.model, blip.tokenizer, evalset, blip.transform,
                                                       settings, **share, metrics=caption_metrics)
            metrics.update(captioning)
        if blip.model.cfg.has_encoder:
            k = k_test or params.active.finetune_filter.k_test
            metrics.update(evaluate_retrieval(blip.model, blip.tokenizer, evalset, blip.transform, k,
                                              params.model.text_len.retrieval, **share))
    return metrics, examples, ranks.rank == 0
