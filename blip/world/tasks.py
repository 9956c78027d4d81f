"""The world's datasets for the transfer tasks, as `blip downstream-data` writes them when params leave a task's
files unset (params world.<task>: how many of each)."""

from __future__ import annotations

from pathlib import Path

from blip.config import Params
from blip.world.dialog import write_world_dialogs
from blip.world.nlvr import write_world_nlvr
from blip.world.vqa import write_world_vqa


def write_task_data(task: str, params: Params, out_dir: str | Path) -> dict:
    """A transfer task's datasets under `out_dir` (one folder per split), and the stage's metrics."""
    w, cfg, seed, shard = getattr(params.world, task), params.world, params.seed, params.ingest.shard_size
    if task == "vqa":
        counts = write_world_vqa(cfg, seed, {"train": w.train, "test": w.test}, w.questions_per_image, out_dir, shard)
        return {"source": "world", "questions": counts}
    if task == "nlvr":
        return {"source": "world", "pairs": write_world_nlvr(
            cfg, seed, {"pretrain": w.pretrain, "train": w.train, "test": w.test}, out_dir, shard)}
    if task == "dialog":
        return {"source": "world", "rounds": write_world_dialogs(cfg, seed, {"train": w.train, "test": w.test},
                                                                 out_dir, shard)}
    raise ValueError(f"the built-in world has no data for task {task!r}")


def add_to_given(task: str, params: Params, out_dir: str | Path) -> dict:
    """What the world adds to a user's files for a task, as counts per split: NLVR's extra pre-training step
    reads the world's caption pairs (NLVR2 has none), every other task nothing."""
    if task != "nlvr":
        return {}
    return write_world_nlvr(params.world, params.seed, {"pretrain": params.world.nlvr.pretrain}, out_dir,
                            params.ingest.shard_size)

