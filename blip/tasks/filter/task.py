"""The filter (and the shared captioner-filter) in the registry."""

from __future__ import annotations

from blip.tasks.filter.training import SHARED, TRAIN
from blip.tasks.serving import serve_med
from blip.tasks.spec import Task

TASK = Task(name="filter", train=(TRAIN, SHARED), serve=serve_med)
