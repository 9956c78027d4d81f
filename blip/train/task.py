"""What the training engine needs of a task: its model and its batch inputs.

Each task folder under blip/tasks/ defines one `TrainTask`; the engine knows no task by name. A step
hands the task the loader's batch, and the task returns the model's keyword inputs beside the images;
the model returns its losses, which the engine sums.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch

from blip.config import Params, StageConfig
from blip.data.loader import Batch


@dataclass(frozen=True)
class StepContext:
    """What a task's inputs may read at a step: the tokenizer, the settings, where tensors go, and alpha."""

    tokenizer: object
    params: Params
    stage: StageConfig
    device: torch.device
    prompt: str          # the model's captioning prompt (its config's)
    alpha: float = 0.0   # ITC's momentum-distillation weight at this step


@dataclass(frozen=True)
class TrainTask:
    """A trainable task as the engine sees it."""

    name: str                                            # as the stage, metrics and MLflow tags call it
    model: str                                           # the config task of the model it trains
    inputs: Callable[[Batch, StepContext], dict]         # the model's keyword inputs beside the images
    transform: Literal["pretrain", "finetune"] = "finetune"  # the loader's augmentation
    config: Callable[[Params], dict] = field(default=lambda params: {})  # its model config's own settings
    # a dataset sample holding several training items (an image's questions, a dialog's rounds): the loader
    # stage that expands a sample into them, and the count of them in a dataset (an epoch is one pass over them)
    expand: Callable[[Iterator[dict]], Iterator[dict]] | None = None
    count: Callable[[list[str]], int] | None = None


def image_ids(keys: list[str], device: torch.device) -> torch.Tensor:
    """A stable integer per image key: retrieval treats texts of one image as positives."""
    return torch.tensor([zlib.crc32(k.encode()) & 0x7FFFFFFF for k in keys], device=device)


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of [CLS] + prompt (no [SEP]): the caption positions LM does not predict."""
    return len(tokenizer(prompt).input_ids) - 1 if prompt else 0
