"""The toy task in the registry: its training and its stage (no data of its own to build, nothing served)."""

from __future__ import annotations

from blip.tasks.spec import Task
from tests.toy_task.stage import run_toy
from tests.toy_task.training import TRAIN

TASK = Task(name="toy", train=(TRAIN,), run=run_toy, metric="accuracy")
