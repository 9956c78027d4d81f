"""The captioner's code, run through the registry: its serving."""

from __future__ import annotations

from blip.tasks.serving import serve_med
from blip.tasks.spec import Hooks

HOOKS = Hooks(serve=serve_med)
