"""VQA's code, run through the registry: its data, stage and serving."""

from __future__ import annotations

from blip.tasks.spec import Hooks
from blip.tasks.vqa.serve import serve
from blip.tasks.vqa.stage import build_vqa_data, run_vqa

HOOKS = Hooks(build_data=build_vqa_data, run=run_vqa, metric="overall", serve=serve)
