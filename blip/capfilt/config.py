"""CapFilt's section of params.yaml (`capfilt`): how the captioner writes and the filters score."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from blip.config import NonNegInt, PosInt, Str, ordered, section


@section
class CapfiltConfig:
    method: Literal["nucleus", "beam"]  # how the captioner writes synthetic captions
    captions_per_image: PosInt    # synthetic captions per web image (the paper: 1)
    top_p: Annotated[float, Strict(), Field(gt=0, le=1)]  # nucleus sampling
    max_length: PosInt            # generation length, prompt tokens included
    min_length: NonNegInt
    batch_size: PosInt            # images per generation / scoring batch
    workers: NonNegInt            # Ray actors scoring shards (0: one per GPU of the cluster, or 1 without GPUs)
    cpus_per_worker: NonNegInt    # CPUs (torch threads) per actor (0: loader_workers + 1 on a GPU, else all / workers)
    tables: Str | None            # where the score tables go (URL or shared path); None: see params.yaml
    captioners: list[Str]         # extra captioner models whose captions are pooled (ensemble)
    filters: list[Str]            # extra filter models, each scoring every candidate text
    models: Literal["decoupled", "shared"]  # two fine-tuned models (the paper) | one as both (Table 4's ablation)

    @model_validator(mode="after")
    def _lengths(self) -> CapfiltConfig:
        ordered(self.min_length, self.max_length, "min_length, max_length")
        return self
