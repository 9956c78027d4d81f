"""The visual dialog stage: its data, and a dialog model fine-tuned from each given model and scored on the test
dialogs (the release never published this task's code; the paper's sec. 5.5 describes it).

    blip downstream-data dialog --out data/dialog   # the built-in world's dialogs, or data.dialog's VisDial files
    blip downstream dialog --from baseline=models/pretrain bootstrapped=models/retrain

Every fine-tuning is a DeepSpeed run of the training engine (task dialog: ITM, the right answer against one
other candidate per round), MLflow-tracked.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch.distributed as dist

from blip.config import Params
from blip.tracking import Tracker


def build_dialog_data(params: Params, out_dir: str | Path) -> dict:
    """data/dialog/{train,test} from the configured VisDial v1.0 files (params data.dialog)."""
    from blip.tasks.dialog.data import ingest_visdial

    out_dir, d = Path(out_dir), params.data.dialog
    counts = {split: ingest_visdial(files, images, out_dir / split, params.ingest, params.ingest.shard_size,
                                    d.dense if split == "test" else None)["rounds"]
              for split, files, images in (("train", d.train, d.train_images), ("test", d.test, d.test_images))}
    return {"source": "files", "rounds": counts}


def run_dialog(params: Params, sources: dict[str, str], data_dir: str | Path, models_dir: str | Path,
               max_steps: int | None = None) -> dict:
    """Fine-tune a dialog model from each source model and rank the test rounds' candidates; all ranks call it,
    rank 0 alone scores (the result is complete there)."""
    from blip.tasks.dialog.evaluate import answer_prior, prior_scores
    from blip.train.engine import TrainJob, train
    from blip.tasks.dialog.training import TRAIN

    stage, data_dir, models_dir = params.active.finetune_dialog, Path(data_dir), Path(models_dir)
    train_dirs, test_dir = [str(data_dir / "train")], str(data_dir / "test")
    result: dict = {"task": "dialog"}
    for name, source in sources.items():
        out = models_dir / name
        train(TrainJob(name=f"dialog_{name}", task=TRAIN, stage=stage, params=params, data=train_dirs, out_dir=out,
                       ckpt_dir=Path("checkpoints") / f"dialog_{name}", init_from=source,
                       metrics_path=models_dir / f"{name}_train.json", plot_path=models_dir / f"{name}_loss.csv",
                       max_steps=max_steps, extra_tags={"downstream": "dialog", "source_model": source},
                       freeze_vision=stage.freeze_vision))
        if dist.get_rank() == 0:
            if "chance" not in result:
                result["chance"] = prior_scores(test_dir, *answer_prior(train_dirs))
            result[name] = _score(params, name, source, out, test_dir)
        dist.barrier()
    return result


def _score(params: Params, name: str, source: str, model_dir: Path, test_dir: str) -> dict:
    from blip.tasks.dialog.evaluate import score_dialogs
    from blip.inference import load

    start = time.time()
    blip = load(model_dir, device=params.inference.device, precision=params.inference.precision)
    scores = {**score_dialogs(blip, test_dir, params.model.text_len.dialog, params.model.text_len.retrieval,
                              params.ingest.max_words),
              "from": source, "model": str(model_dir), "seconds": round(time.time() - start, 1)}
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"evaluate-dialog-{name}")
    tracker.params({"model": str(model_dir), "from": source, "data": test_dir})
    tracker.metrics({f"dialog/{k}": v for k, v in scores.items() if k in ("mrr", "r1", "r5", "r10", "mean_rank",
                                                                           "ndcg")})
    tracker.end("FINISHED")
    return scores
