"""What a task folder hands the registry: how it trains, builds its data, runs its stage, and serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from blip.config import Params
from blip.inference import BlipInference
from blip.train.task import TrainTask

if TYPE_CHECKING:  # pandas is needed only to serve
    import pandas as pd


@dataclass(frozen=True)
class Task:
    """One task of the registry (blip/tasks/registry.py); a hook it lacks is None."""

    name: str
    train: tuple[TrainTask, ...] = ()  # what the training engine trains for it (a step of its own each)
    # `blip downstream-data NAME`: its datasets under a folder, from params data.NAME's files
    build_data: Callable[[Params, str | Path], dict] | None = None
    # `blip downstream NAME`: fine-tune from each source model and score (params, sources, data, models, max steps)
    run: Callable[[Params, dict[str, str], str | Path, str | Path, int | None], dict] | None = None
    metric: str | None = None  # the headline score in each source's result of `run`
    # the MLflow pyfunc's answer to a frame of requests, for a model of this task
    serve: Callable[[BlipInference, pd.DataFrame, dict], pd.DataFrame] | None = None
