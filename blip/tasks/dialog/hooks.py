"""Visual dialog's code, run through the registry: its data and stage."""

from __future__ import annotations

from blip.tasks.dialog.model import BlipDialog  # noqa: F401  (registers the model class)
from blip.tasks.dialog.stage import build_dialog_data, run_dialog
from blip.tasks.spec import Hooks

HOOKS = Hooks(build_data=build_dialog_data, run=run_dialog, metric="mrr")
