"""NLVR's code, run through the registry: its data, stage and serving."""

from __future__ import annotations

from blip.tasks.nlvr.serve import serve
from blip.tasks.nlvr.stage import build_nlvr_data, run_nlvr
from blip.tasks.spec import Hooks

HOOKS = Hooks(build_data=build_nlvr_data, run=run_nlvr, metric="accuracy", serve=serve)
