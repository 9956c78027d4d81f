"""The toy task in the registry: its stage section (presets.<preset>.finetune_toy), declared here, and its code."""

from __future__ import annotations

from blip.config import PosInt, StageConfig, section
from blip.tasks.spec import Task


@section
class ToyStageConfig(StageConfig):
    negatives: PosInt  # mismatched captions per image in training: the 1st, 2nd, ... next image's in the batch


TASK = Task(name="toy", stage={"finetune_toy": ToyStageConfig}, transfer=True, hooks="tests.toy_task.hooks")
