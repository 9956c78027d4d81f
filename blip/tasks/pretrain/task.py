"""Pre-training in the registry."""

from __future__ import annotations

from blip.tasks.serving import serve_med
from blip.tasks.spec import Task

TASK = Task(name="pretrain", serve=serve_med)
