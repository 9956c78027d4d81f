"""The zero-shot video stages: each set's clips, then the baseline's and the bootstrapped model's scores.

    blip video-data retrieval --out data/video_retrieval   # the built-in world's clips, or data.video_retrieval's
    blip video retrieval --from baseline=models/filter bootstrapped=models/filter_retrain

No training: the retrieval (filter) models and the VQA models score the clips as they are (params
downstream.video.<kind>: the models, frames per clip, k_test).
"""

from __future__ import annotations

import time
from pathlib import Path

from blip.config import Params
from blip.tracking import Tracker
from blip.tasks.video.data import Kind


def build_video_data(kind: Kind, params: Params, out_dir: str | Path) -> dict:
    """data/video_<kind> from the configured MSRVTT / MSVD files (params data.video_<kind>)."""
    from blip.tasks.video.data import ingest_clips, read_qa_files, read_retrieval_files

    source = getattr(params.data, f"video_{kind}")
    annotations = read_retrieval_files(source.test) if kind == "retrieval" else \
        read_qa_files(source.test, source.names, source.mapping)
    manifest = ingest_clips(kind, annotations, source.videos, out_dir, params.ingest, params.ingest.shard_size)
    field = "captions" if kind == "retrieval" else "questions"
    return {"source": "files", "clips": manifest["samples"], field: manifest[field],
            **{k: manifest[k] for k in ("skipped", "skip_examples") if k in manifest}}


def run_video(kind: Kind, params: Params, sources: dict[str, str], data_dir: str | Path) -> dict:
    """Each source model scored zero-shot on the clips, tracked in MLflow; chance levels beside."""
    from blip.inference import load
    from blip.tasks.video.evaluate import video_qa, video_retrieval

    task = params.downstream.video[kind]
    result: dict = {"task": f"video_{kind}", "frames": task.frames, "k_test": task.k_test}
    for name, model_dir in sources.items():
        start = time.time()
        blip = load(model_dir, device=params.inference.device, precision=params.inference.precision)
        if kind == "retrieval":
            scores = video_retrieval(blip, data_dir, task.frames, task.k_test, params.model.text_len.retrieval,
                                     params.ingest.max_words)
            headline = {k: scores[k] for k in ("vid_r1", "vid_r5", "vid_r10", "vid_mdR", "txt_r1", "r_mean")}
        else:
            scores = video_qa(blip, data_dir, task.frames, task.k_test)
            headline = {"accuracy": scores["accuracy"]}
        scores.update({"model": model_dir, "seconds": round(time.time() - start, 1)})
        tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"video-{kind}-{name}")
        tracker.params({"model": model_dir, "data": str(data_dir), "frames": task.frames, "k_test": task.k_test,
                        "zero_shot": True})
        tracker.metrics({f"video_{kind}/{k}": v for k, v in headline.items()})
        tracker.end("FINISHED")
        result["chance"] = scores.pop("chance")  # the data's, the same for every model
        result[name] = scores
    return result
