"""VQA in the registry: its sections of params.yaml, declared here, and its code."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from blip.config import PosInt, StageConfig, Str, section
from blip.tasks.spec import Task


@section
class VQAData:
    train: Annotated[list[Str], Field(min_length=1)]  # VQA v2 questions + annotations files, or release vqa_*.json
    test: Annotated[list[Str], Field(min_length=1)]   # the evaluation split's files (with annotations, to score)
    images: Str                                       # the root their image paths are relative to


@section
class VQAStageConfig(StageConfig):
    answers: PosInt          # the candidate list `rank` answers from: the most frequent training answers
    k_test: PosInt           # rank: candidates with the likeliest first token, then re-scored whole
    inference: Literal["rank", "generate"]


TASK = Task(name="vqa", stage={"finetune_vqa": VQAStageConfig}, data={"vqa": VQAData}, transfer=True,
            hooks="blip.tasks.vqa.hooks")
