"""VQA in the registry: its training, data, stage and serving."""

from __future__ import annotations

from blip.tasks.spec import Task
from blip.tasks.vqa.serve import serve
from blip.tasks.vqa.stage import build_vqa_data, run_vqa
from blip.tasks.vqa.training import TRAIN

TASK = Task(name="vqa", train=(TRAIN,), build_data=build_vqa_data, run=run_vqa, metric="overall", serve=serve)
