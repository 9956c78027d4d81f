"""The toy task in the registry: its stage (no data of its own to build, nothing served)."""

from __future__ import annotations

from blip.tasks.spec import Task
from tests.toy_task.stage import run_toy

TASK = Task(name="toy", run=run_toy, metric="accuracy")
