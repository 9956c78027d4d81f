"""Zero-shot video in the registry: its sections of params.yaml, declared here. No training and no pyfunc of its
own: its stage (`blip video`) scores image models."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from blip.config import PosInt, Str, section
from blip.tasks.spec import Task


@section
class VideoRetrievalData:
    test: Annotated[list[Str], Field(min_length=1)]   # MSRVTT: the release's msrvtt_test.jsonl ({clip_name, caption})
    videos: Str                                       # the folder of the clips (clip_name + .mp4)


@section
class VideoQAData:
    test: Annotated[list[Str], Field(min_length=1)]   # MSRVTT-QA / MSVD-QA: test_qa.json
    videos: Str                                       # the folder of the clips
    names: Str           # a clip's file from its video_id: "video{video_id}.mp4" (MSRVTT), "{name}.avi" (MSVD)
    mapping: Str | None  # MSVD's youtube_mapping.txt ("<name> vid<N>" lines), which gives {name}; else null


@section
class VideoTask:
    baseline: Str        # the model folders it scores, zero-shot: the baseline's (from models/pretrain) ...
    bootstrapped: Str    # ... and the bootstrapped model's (from models/retrain)
    frames: PosInt       # sampled uniformly per clip (the paper: 8 for retrieval, 16 for QA)
    k_test: PosInt       # retrieval: ITC's top k re-ranked by ITM; QA: answers re-scored whole


TASK = Task(name="video", data={"video_retrieval": VideoRetrievalData, "video_qa": VideoQAData})
