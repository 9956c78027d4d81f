"""Visual dialog in the registry: its training, data and stage."""

from __future__ import annotations

from blip.tasks.dialog.stage import build_dialog_data, run_dialog
from blip.tasks.dialog.training import TRAIN
from blip.tasks.spec import Task

TASK = Task(name="dialog", train=(TRAIN,), build_data=build_dialog_data, run=run_dialog, metric="mrr")
