"""The toy task's stage: fine-tune from each source model, then score matching accuracy on the test images."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from blip.config import Params
from blip.data.loader import build_loader
from blip.data.shards import shard_paths
from blip.tokenizer import tokenize


def run_toy(params: Params, sources: dict[str, str], data_dir: str | Path, models_dir: str | Path,
            max_steps: int | None = None) -> dict:
    """{source name: {accuracy, model}} and the chance level; all ranks call it, rank 0's result is complete."""
    from blip.train.engine import TrainJob, train

    from tests.toy_task.training import TRAIN

    data_dir, models_dir = Path(data_dir), Path(models_dir)
    result: dict = {"task": "toy", "chance": 50.0}
    for name, source in sources.items():
        out = models_dir / name
        train(TrainJob(name=f"toy_{name}", task=TRAIN, stage=params.active.finetune_toy, params=params,
                       data=[str(data_dir / "train")], out_dir=out, ckpt_dir=models_dir / f"{name}_checkpoints",
                       init_from=source, metrics_path=models_dir / f"{name}_train.json", max_steps=max_steps))
        if dist.get_rank() == 0:
            result[name] = {"accuracy": accuracy(out, str(data_dir / "test"), params), "model": str(out)}
    return result


@torch.no_grad()
def accuracy(model_dir: Path, test_dir: str, params: Params) -> float:
    """Matched and mismatched test pairs told apart (%)."""
    from blip.inference import load
    from tests.toy_task.training import pairs

    blip = load(model_dir, device="cpu")
    loader, _ = build_loader(shard_paths(test_dir), blip.transform, 16, train=False, seed=0, num_workers=0,
                             max_words=params.ingest.max_words)
    right = total = 0
    for batch in loader:
        texts, labels = pairs(batch.captions)
        ids, mask = tokenize(blip.tokenizer, texts, params.model.text_len.retrieval)
        images = batch.images.repeat(2, 1, 1, 1)
        predicted = blip.model.match_logits(images, ids, mask).argmax(1)
        right += int((predicted == torch.tensor(labels)).sum())
        total += len(labels)
    return round(100 * right / total, 2)
