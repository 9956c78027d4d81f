"""The VQA stage: its data, and a VQA model fine-tuned from each given model and scored on the test questions.

    blip downstream-data vqa --out data/vqa   # the built-in world's questions, or data.vqa's files
    blip downstream vqa --from baseline=models/pretrain bootstrapped=models/retrain

Every fine-tuning is a DeepSpeed run of the training engine (task vqa, MLflow-tracked); each model folder
also holds the candidate answers it ranks from (answer_list.json), so `blip ask` answers as evaluated.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch.distributed as dist

from blip.config import Params
from blip.data.shards import atomic_write_json
from blip.tracking import Tracker
from blip.tasks.vqa.answer import ANSWER_LIST
from blip.tasks.vqa.data import answer_counts, answer_list, ingest_vqa


def build_vqa_data(params: Params, out_dir: str | Path) -> dict:
    """data/vqa/{train,test} from the configured VQA v2 / release files (params data.vqa)."""
    out_dir, v = Path(out_dir), params.data.vqa
    counts = {split: ingest_vqa(files, v.images, out_dir / split, params.ingest, params.ingest.shard_size)["questions"]
              for split, files in (("train", v.train), ("test", v.test))}
    return {"source": "files", "questions": counts}


def run_vqa(params: Params, sources: dict[str, str], data_dir: str | Path, models_dir: str | Path,
            max_steps: int | None = None) -> dict:
    """Fine-tune a VQA model from each source model and score it on the test questions; all ranks call it, and
    rank 0 alone reads the answers and the test questions and scores (the result is complete there)."""
    from blip.train.engine import TrainJob, train
    from blip.tasks.vqa.training import TRAIN
    from blip.tasks.vqa.evaluate import prior_accuracy, questions_of

    stage, data_dir, models_dir = params.active.finetune_vqa, Path(data_dir), Path(models_dir)
    train_dirs, test_dir = [str(data_dir / "train")], str(data_dir / "test")
    result: dict = {"task": "vqa", "inference": stage.inference}
    for name, source in sources.items():
        out = models_dir / name
        train(TrainJob(name=f"vqa_{name}", task=TRAIN, stage=stage, params=params, data=train_dirs, out_dir=out,
                       ckpt_dir=Path("checkpoints") / f"vqa_{name}", init_from=source,
                       metrics_path=models_dir / f"{name}_train.json", plot_path=models_dir / f"{name}_loss.csv",
                       max_steps=max_steps,
                       extra_tags={"downstream": "vqa", "source_model": source}))
        if dist.get_rank() == 0:
            if "chance" not in result:  # once, after the first training set up the process group
                overall, by_type = answer_counts(train_dirs)
                candidates, questions = answer_list(overall, stage.answers), questions_of(test_dir)
                result.update(answers=len(candidates), test_questions=len(questions),
                              chance={"prior": prior_accuracy(overall, by_type, questions),
                                      "uniform_over_answers": round(100 / max(1, len(candidates)), 2)})
            atomic_write_json(out / ANSWER_LIST, candidates)
            result[name] = _score(params, name, source, out, test_dir, candidates, questions)
        dist.barrier()
    return result


def _score(params: Params, name: str, source: str, model_dir: Path, test_dir: str, candidates: list[str],
           questions: dict) -> dict:
    from blip.inference import load
    from blip.tasks.vqa.accuracy import vqa_accuracy
    from blip.tasks.vqa.evaluate import predict

    stage = params.active.finetune_vqa
    start = time.time()
    blip = load(model_dir, device=params.inference.device, precision=params.inference.precision)
    predictions = predict(blip, test_dir, stage.inference, candidates, stage.k_test, 64, params.ingest.max_words)
    scores = {**vqa_accuracy(predictions, questions), "from": source, "model": str(model_dir),
              "seconds": round(time.time() - start, 1)}
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"evaluate-vqa-{name}")
    tracker.params({"model": str(model_dir), "from": source, "data": test_dir, "inference": stage.inference})
    tracker.metrics({"vqa/overall": scores["overall"],
                     **{f"vqa/{t.replace('/', '_')}": v for t, v in scores["per_answer_type"].items()}})
    tracker.end("FINISHED")
    return scores

