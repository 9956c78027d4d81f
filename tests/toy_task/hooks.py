"""The toy task's code, run through the registry: its stage (no data of its own to build, nothing served)."""

from __future__ import annotations

from blip.tasks.spec import Hooks
from tests.toy_task.stage import run_toy

HOOKS = Hooks(run=run_toy, metric="accuracy")
