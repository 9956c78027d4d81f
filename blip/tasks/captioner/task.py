"""The captioner in the registry: its stage section (presets.<preset>.finetune_captioner) and its code."""

from __future__ import annotations

from blip.config import StageConfig
from blip.tasks.spec import Task

TASK = Task(name="captioner", stage={"finetune_captioner": StageConfig}, hooks="blip.tasks.captioner.hooks")
