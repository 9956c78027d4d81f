"""NLVR2 in the registry: its sections of params.yaml, declared here, and its code."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from blip.config import Bool, StageConfig, Str, section
from blip.tasks.spec import Task


@section
class NLVRData:
    train: Annotated[list[Str], Field(min_length=1)]  # NLVR2's train.json (JSON lines) or the release's nlvr_train.json
    test: Annotated[list[Str], Field(min_length=1)]
    images: Str                                       # the root their image paths are relative to


@section
class NLVRStageConfig(StageConfig):
    pretrain: StageConfig    # the extra pre-training step first: which image (or neither) a caption belongs to
    freeze_vision: Bool      # keep the ViT as pre-trained in both steps


TASK = Task(name="nlvr", stage={"finetune_nlvr": NLVRStageConfig}, data={"nlvr": NLVRData}, transfer=True,
            hooks="blip.tasks.nlvr.hooks")
