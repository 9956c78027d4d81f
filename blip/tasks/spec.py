"""What a task folder hands the registry: how it builds its data, runs its stage, and serves (its training
inputs, `training.py`, are what its stage and the chain's training command hand the engine)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from blip.config import Params
from blip.inference import BlipInference

if TYPE_CHECKING:  # pandas is needed only to serve
    import pandas as pd


@dataclass(frozen=True)
class Task:
    """One task of the registry (blip/tasks/registry.py); a hook it lacks is None."""

    name: str
    # `blip downstream-data NAME`: its datasets under a folder, from params data.NAME's files
    build_data: Callable[[Params, str | Path], dict] | None = None
    # `blip downstream NAME`: fine-tune from each source model and score (params, sources, data, models, max steps)
    run: Callable[[Params, dict[str, str], str | Path, str | Path, int | None], dict] | None = None
    metric: str | None = None  # the headline score in each source's result of `run`
    # the MLflow pyfunc's answer to a frame of requests, for a model of this task
    serve: Callable[[BlipInference, pd.DataFrame, dict], pd.DataFrame] | None = None
