"""The registry: every task, listed once, by name, with the params sections its folder declares.

Light on purpose: loading params.yaml (blip.params) reads the sections from here, so this imports only each
task's entry (task.py: pydantic declarations). A task's code (hooks.py: its stage, its serving, its model
class) is imported when the task runs or serves, so no stage depends on the code of a task it does not run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from blip.config import Name, section
from blip.tasks.captioner.task import TASK as CAPTIONER
from blip.tasks.dialog.task import TASK as DIALOG
from blip.tasks.filter.task import TASK as FILTER
from blip.tasks.nlvr.task import TASK as NLVR
from blip.tasks.pretrain.task import TASK as PRETRAIN
from blip.tasks.spec import Hooks, Task
from blip.tasks.video.task import TASK as VIDEO
from blip.tasks.video.task import VideoTask
from blip.tasks.vqa.task import TASK as VQA

TASKS: dict[str, Task] = {t.name: t for t in (PRETRAIN, CAPTIONER, FILTER, VQA, NLVR, DIALOG, VIDEO)}


def hooks(name: str) -> Hooks:
    """A task's code (its folder's hooks.py, imported now); an error naming the known tasks for any other."""
    task = TASKS.get(name)
    if task is None or task.hooks is None:
        known = ", ".join(n for n, t in TASKS.items() if t.hooks)
        raise ValueError(f"no task {name!r} with code to run: known are {known}")
    return importlib.import_module(task.hooks).HOOKS


def transfer_tasks() -> list[str]:
    """The tasks `blip downstream` fine-tunes and scores."""
    return [name for name, t in TASKS.items() if t.transfer]


def transfer_task(name: str) -> Hooks:
    """The code of a task `blip downstream` runs, by name; an error naming the known ones for any other."""
    if name not in transfer_tasks():
        raise ValueError(f"no transfer task {name!r}: known are {', '.join(transfer_tasks())}")
    return hooks(name)


def serving(model_task: str) -> Hooks:
    """The code that serves a model whose config names `model_task`; an error saying so when none does."""
    task = TASKS.get(model_task)
    served = hooks(model_task) if task is not None and task.hooks else None
    if served is None or served.serve is None:
        raise ValueError(f"a {model_task} model is not served: serve a captioner, a filter, a pre-trained, a VQA or "
                         "an NLVR model")
    return served


def import_models() -> None:
    """Import every task's code, which registers its model class: a saved folder of any task then loads."""
    for name, task in TASKS.items():
        if task.hooks:
            hooks(name)


@section
class DownstreamConfig:
    """params.yaml's `downstream`: the transfer tasks the chain runs, and zero-shot video."""

    tasks: list[Name]  # transfer tasks of the registry, each fine-tuned from both pre-trained models
    video: dict[Literal["retrieval", "qa"], VideoTask]  # zero-shot video, no training on video

    @model_validator(mode="after")
    def _known_tasks(self) -> DownstreamConfig:
        unknown = [t for t in self.tasks if t not in transfer_tasks()]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a transfer task of the registry (known: "
                             f"{', '.join(transfer_tasks())})")
        return self

    @model_validator(mode="after")
    def _video_models_built(self) -> DownstreamConfig:
        for kind, task in self.video.items():
            for path in (task.baseline, task.bootstrapped):
                parts = Path(path).parts
                if len(parts) > 1 and parts[0] == "models" and parts[1] in transfer_tasks() \
                        and parts[1] not in self.tasks:
                    raise ValueError(f"video.{kind} scores {path}, which the {parts[1]} task fine-tunes, but "
                                     f"{parts[1]} is not in downstream.tasks: add it, or remove video.{kind}")
        return self
