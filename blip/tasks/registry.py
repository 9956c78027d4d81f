"""The registry: every task, listed once, by name.

Importing it imports every task, so every task's model class is registered: a saved model folder of any
task then loads by the task its config.json names.
"""


from __future__ import annotations

from blip.tasks.captioner.task import TASK as CAPTIONER
from blip.tasks.dialog.task import TASK as DIALOG
from blip.tasks.filter.task import TASK as FILTER
from blip.tasks.nlvr.task import TASK as NLVR
from blip.tasks.pretrain.task import TASK as PRETRAIN
from blip.tasks.spec import Task
from blip.tasks.video.task import TASK as VIDEO
from blip.tasks.vqa.task import TASK as VQA

TASKS: dict[str, Task] = {t.name: t for t in (PRETRAIN, CAPTIONER, FILTER, VQA, NLVR, DIALOG, VIDEO)}


def transfer_tasks() -> list[str]:
    """The tasks `blip downstream` fine-tunes and scores (those with a stage to run)."""
    return [name for name, t in TASKS.items() if t.run is not None]


def transfer_task(name: str) -> Task:
    """A task `blip downstream` runs, by name; an error naming the known ones for any other."""
    if name not in transfer_tasks():
        raise ValueError(f"no transfer task {name!r}: known are {', '.join(transfer_tasks())}")
    return TASKS[name]


def serving(model_task: str) -> Task:
    """The task that serves a model whose config names `model_task`; an error saying so when none does."""
    task = TASKS.get(model_task)
    if task is None or task.serve is None:
        raise ValueError(f"a {model_task} model is not served: serve a captioner, a filter, a pre-trained, a VQA or "
                         "an NLVR model")
    return task
