"""The filter (and the shared captioner-filter) in the registry: its stage section, declared here, and its code."""

from __future__ import annotations

from blip.config import Bool, PosInt, StageConfig, section
from blip.tasks.spec import Task


@section
class FilterStageConfig(StageConfig):
    negatives_all_ranks: Bool  # ITM hard negatives from the global batch
    k_test: PosInt             # retrieval: ITC top-k candidates re-ranked by ITM


TASK = Task(name="filter", stage={"finetune_filter": FilterStageConfig}, hooks="blip.tasks.filter.hooks")
