"""What a task folder hands the registry.

Two parts, so that loading params.yaml never imports a task's code:
- `Task` (its folder's task.py): its name, the params sections it declares, and the module of its code;
- `Hooks` (that module, hooks.py): how it builds its data, runs its stage, and serves.

Its training inputs (`training.py`) are what its stage, and the chain's training command, hand the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the hooks' types only: this module is imported whenever params.yaml is loaded
    import pandas as pd

    from blip.config import Params
    from blip.inference import BlipInference


@dataclass(frozen=True)
class Task:
    """One task of the registry (blip/tasks/registry.py)."""

    name: str
    # presets.<preset>.<key>: its training's hyper-parameters, e.g. {"finetune_vqa": VQAStageConfig}
    stage: dict[str, type] = field(default_factory=dict)
    # data.<key>: its real-format files (null in params.yaml: the built-in world's), e.g. {"vqa": VQAData}
    data: dict[str, type] = field(default_factory=dict)
    transfer: bool = False    # `blip downstream` fine-tunes and scores it: its hooks have `run`
    hooks: str | None = None  # the module holding its HOOKS, imported only when the task runs or serves


@dataclass(frozen=True)
class Hooks:
    """A task's code; a hook it lacks is None."""

    # `blip downstream-data NAME`: its datasets under a folder, from params data.NAME's files
    build_data: Callable[[Params, str | Path], dict] | None = None
    # `blip downstream NAME`: fine-tune from each source model and score (params, sources, data, models, max steps)
    run: Callable[[Params, dict[str, str], str | Path, str | Path, int | None], dict] | None = None
    metric: str | None = None  # the headline score in each source's result of `run`
    # the MLflow pyfunc's answer to a frame of requests, for a model of this task
    serve: Callable[[BlipInference, pd.DataFrame, dict], pd.DataFrame] | None = None
