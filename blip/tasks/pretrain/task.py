"""Pre-training in the registry: its stage section (presets.<preset>.pretrain) and its code."""

from __future__ import annotations

from blip.config import StageConfig
from blip.tasks.spec import Task

TASK = Task(name="pretrain", stage={"pretrain": StageConfig}, hooks="blip.tasks.pretrain.hooks")
