"""Zero-shot video has no training and no pyfunc of its own: its stage (`blip video`) scores image models."""

from __future__ import annotations

from blip.tasks.spec import Task

TASK = Task(name="video")
