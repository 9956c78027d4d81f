"""Visual dialog in the registry: its sections of params.yaml, declared here, and its code."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from blip.config import Bool, NonNegInt, PosInt, StageConfig, Str, section
from blip.tasks.spec import Task


@section
class DialogData:
    train: Annotated[list[Str], Field(min_length=1)]  # VisDial v1.0: visdial_1.0_train.json
    test: Annotated[list[Str], Field(min_length=1)]   # visdial_1.0_val.json (with answers, to score)
    dense: Str | None      # visdial_1.0_val_dense_annotations.json (NDCG), or null
    train_images: Str      # found by the id at the end of their file names, at any depth below
    test_images: Str


@section
class DialogStageConfig(StageConfig):
    negatives: PosInt        # wrong candidates per round, each against the right answer in the ITM loss
    hard_negatives: NonNegInt  # of which at most this many are the batch's answers to questions that start alike
    freeze_vision: Bool      # keep the ViT as pre-trained (only the text side and the caption's mapping learn)

    @model_validator(mode="after")
    def _hard_within(self) -> DialogStageConfig:
        if self.hard_negatives > self.negatives:
            raise ValueError(f"hard_negatives {self.hard_negatives} is more than negatives {self.negatives}")
        return self


TASK = Task(name="dialog", stage={"finetune_dialog": DialogStageConfig}, data={"dialog": DialogData}, transfer=True,
            hooks="blip.tasks.dialog.hooks")
