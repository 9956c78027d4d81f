"""The NLVR2 stage: its data, and for each given model the paper's two steps, scored on the test statements.

    blip downstream-data nlvr --out data/nlvr     # the built-in world's pairs, or data.nlvr's files
    blip downstream nlvr --from baseline=models/pretrain bootstrapped=models/retrain

From each model: the extra pre-training step (which of two images a caption belongs to, or neither: 3 classes,
on the `pretrain` pairs), then NLVR itself (true or false), each a DeepSpeed run of the training engine.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist

from blip.config import Params
from blip.data.finished import iter_samples
from blip.data.loader import build_loader
from blip.data.shards import shard_paths
from blip.launch import autocast
from blip.tracking import Tracker


def build_nlvr_data(params: Params, out_dir: str | Path) -> dict:
    """data/nlvr/{train,test} from NLVR2's files (params data.nlvr); the pre-training step's pairs are not in
    NLVR2 (`blip downstream-data` adds the world's)."""
    from blip.tasks.nlvr.data import ingest_nlvr

    out_dir, d, counts = Path(out_dir), params.data.nlvr, {}
    for split, files in (("train", d.train), ("test", d.test)):
        manifest = ingest_nlvr(files, d.images, out_dir / split, params.ingest, params.ingest.shard_size)
        counts[split] = manifest["samples"]
    return {"source": "files", "pairs": counts}


@torch.no_grad()
def predict(blip, dataset_dir: str, batch_size: int, max_words: int, text_len: int) -> dict[str, int]:
    """{identifier: predicted class} for every pair of a dataset."""
    from blip.tokenizer import tokenize

    loader, _ = build_loader(shard_paths(dataset_dir), blip.transform, batch_size, train=False, seed=0,
                             num_workers=0, max_words=max_words)
    out = {}
    with autocast(blip.precision, blip.device):
        for batch in loader:
            ids, mask = tokenize(blip.tokenizer, batch.captions, text_len)
            logits = blip.model.pair_logits(batch.images.to(blip.device), ids.to(blip.device), mask.to(blip.device))
            out.update({m["identifier"]: int(c) for m, c in zip(batch.meta, logits.argmax(1).tolist())})
    return out


def statement_prior(train_dir: Path, test: dict[str, tuple[str, int]]) -> float:
    """Accuracy (%) of a blind guesser: each test statement gets the label the same statement had most often in
    training, else the majority label (NLVR2's statements are nearly all unique; the world's repeat)."""
    by_text: dict[str, Counter] = {}
    for s in iter_samples(train_dir):
        by_text.setdefault(s["txt"], Counter())[s["json"]["label"]] += 1
    overall = sum(by_text.values(), Counter()).most_common(1)[0][0]
    right = [(by_text[t].most_common(1)[0][0] if t in by_text else overall) == label for t, label in test.values()]
    return round(100 * sum(right) / len(right), 2)


def run_nlvr(params: Params, sources: dict[str, str], data_dir: str | Path, models_dir: str | Path,
             max_steps: int | None = None) -> dict:
    """Both steps from each source model, then its accuracy on the test pairs; all ranks call it, and rank 0
    alone reads the test pairs and scores (the result is complete there)."""
    from blip.tasks.nlvr.training import PRETRAIN, TRAIN
    from blip.train.engine import TrainJob, train

    data_dir, models_dir = Path(data_dir), Path(models_dir)
    result: dict = {"task": "nlvr"}
    for name, source in sources.items():
        stage = params.active.finetune_nlvr
        steps = [("pretrain", PRETRAIN, stage.pretrain, data_dir / "pretrain", source),
                 ("", TRAIN, stage, data_dir / "train", models_dir / f"{name}_pretrain")]
        for suffix, task, step, data, init in steps:
            run = f"{name}_{suffix}" if suffix else name
            train(TrainJob(name=f"nlvr_{run}", task=task, stage=step, params=params, data=[str(data)],
                           out_dir=models_dir / run, ckpt_dir=Path("checkpoints") / f"nlvr_{run}", init_from=str(init),
                           metrics_path=models_dir / f"{run}_train.json", plot_path=models_dir / f"{run}_loss.csv",
                           max_steps=max_steps, extra_tags={"downstream": "nlvr", "source_model": source},
                           freeze_vision=stage.freeze_vision))
        if dist.get_rank() == 0:
            if "chance" not in result:  # once, after the first training set up the process group
                test = {s["json"]["identifier"]: (s["txt"], s["json"]["label"])
                        for s in iter_samples(data_dir / "test")}
                labels = {k: label for k, (_, label) in test.items()}
                majority = Counter(labels.values()).most_common(1)[0][1] / len(labels)
                result.update(test_pairs=len(labels),
                              chance={"majority_class": round(100 * majority, 2),
                                      "statement_prior": statement_prior(data_dir / "train", test)})
            result[name] = _score(params, name, source, models_dir / name, str(data_dir / "test"), labels)
        dist.barrier()
    return result


def _score(params: Params, name: str, source: str, model_dir: Path, test_dir: str, labels: dict) -> dict:
    from blip.inference import load

    start = time.time()
    blip = load(model_dir, device=params.inference.device, precision=params.inference.precision)
    predicted = predict(blip, test_dir, 64, params.ingest.max_words, params.model.text_len.retrieval)
    right = [predicted.get(k) == v for k, v in labels.items()]
    scores = {"accuracy": round(100 * sum(right) / len(right), 2), "pairs": len(right), "from": source,
              "model": str(model_dir), "seconds": round(time.time() - start, 1)}
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"evaluate-nlvr-{name}")
    tracker.params({"model": str(model_dir), "from": source, "data": test_dir})
    tracker.metrics({"nlvr/accuracy": scores["accuracy"]})
    tracker.end("FINISHED")
    return scores
