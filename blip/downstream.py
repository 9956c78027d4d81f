"""The paper's transfer tasks (sec. 5) behind `blip downstream-data TASK` and `blip downstream TASK`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from blip.config import Params


def _tasks() -> dict[str, tuple[Callable, Callable]]:
    from blip.dialog.stage import build_dialog_data, run_dialog
    from blip.nlvr.stage import build_nlvr_data, run_nlvr
    from blip.vqa.stage import build_vqa_data, run_vqa

    return {"vqa": (build_vqa_data, run_vqa), "nlvr": (build_nlvr_data, run_nlvr),
            "dialog": (build_dialog_data, run_dialog)}


TASKS = ("vqa", "nlvr", "dialog")


def build_data(task: str, params: Params, out_dir: str | Path) -> dict:
    """The task's datasets under `out_dir` from params data.<task>'s files."""
    return _tasks()[task][0](params, out_dir)


def run(task: str, params: Params, sources: dict[str, str], data_dir: str | Path, models_dir: str | Path,
        max_steps: int | None = None) -> dict:
    """Fine-tune the task from each source model and score it; all ranks call it, rank 0's result is complete."""
    return _tasks()[task][1](params, sources, data_dir, models_dir, max_steps)
