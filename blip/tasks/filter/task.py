"""The filter (and the shared captioner-filter) in the registry."""

from __future__ import annotations

from blip.tasks.serving import serve_med
from blip.tasks.spec import Task

TASK = Task(name="filter", serve=serve_med)
