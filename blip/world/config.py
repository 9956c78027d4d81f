"""The built-in world's section of params.yaml (`world`), read by its generators."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict, model_validator

from blip.config import JpegQuality, PosInt, Share, section


@section
class HumanSplits:
    train: PosInt
    val: PosInt
    test: PosInt


@section
class NoiseMix:
    mismatched: Share
    partial: Share
    uninformative: Share

    @model_validator(mode="after")
    def _sums_to_one(self) -> NoiseMix:
        total = self.mismatched + self.partial + self.uninformative
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the three shares must sum to 1, got {total:g}")
        return self


@section
class WebWorld:
    images: PosInt
    shard_size: PosInt
    noise_fraction: Share
    noise_mix: NoiseMix


@section
class WorldVQA:
    train: PosInt                # images, each with its questions
    test: PosInt
    questions_per_image: PosInt


@section
class WorldNLVR:
    pretrain: PosInt             # image pairs with a caption of the first, the second or neither (3-way)
    train: PosInt                # image pairs, each with one statement, true or false
    test: PosInt


@section
class WorldDialog:
    train: PosInt                # images, each with a caption and a dialog
    test: PosInt
    rounds: PosInt               # questions per dialog (VisDial: 10), each with 100 candidate answers


@section
class WorldVideo:
    retrieval: PosInt            # clips with one caption each (text-to-video retrieval)
    qa: PosInt                   # clips with questions
    questions_per_clip: PosInt
    frames: Annotated[int, Strict(), Field(ge=2)]  # rendered per clip: each object glides one grid cell over them
    fps: PosInt


@section
class WorldConfig:
    image_size: Annotated[int, Strict(), Field(ge=16)]
    jpeg_quality: JpegQuality
    max_objects: Annotated[int, Strict(), Field(ge=1, le=9)]  # one object per cell of a 3x3 grid
    human: HumanSplits
    web: WebWorld
    vqa: WorldVQA
    nlvr: WorldNLVR
    dialog: WorldDialog
    video: WorldVideo
