"""BLIP's image transforms, from torchvision's parts.

Training: random resized crop (scale 0.2-1.0 for pre-training, 0.5-1.0 for fine-tuning, bicubic),
optional horizontal flip, RandAugment with 2 ops at magnitude 5 on BLIP's op list, then CLIP's
mean/std. Evaluation: a plain bicubic resize to a square, then the same normalisation.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from blip.config import LoaderConfig

# BLIP's RandAugment draws from geometric and mild photometric ops only: no colour, posterize,
# solarize or contrast inversion, which would change what a caption says about colours
BLIP_RANDAUGMENT_OPS = ("Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
                        "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


class BlipRandAugment(T.RandAugment):
    """torchvision's RandAugment restricted to BLIP's op list, magnitude on BLIP's 0-10 scale."""

    def __init__(self, num_ops: int, magnitude: int):
        super().__init__(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=11,
                         interpolation=InterpolationMode.BICUBIC)

    def _augmentation_space(self, num_bins: int, image_size: tuple[int, int]) -> dict:
        space = super()._augmentation_space(num_bins, image_size)
        return {name: space[name] for name in BLIP_RANDAUGMENT_OPS}


Mode = Literal["pretrain", "finetune", "eval"]


def build_transform(mode: Mode, image_size: int, cfg: LoaderConfig) -> T.Compose:
    """The PIL -> normalised tensor transform for pre-training, fine-tuning or evaluation."""
    normalise = [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    if mode == "eval":
        return T.Compose([T.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC), *normalise])
    scale = cfg.pretrain_crop_scale if mode == "pretrain" else cfg.finetune_crop_scale
    ops: list = [T.RandomResizedCrop(image_size, scale=scale, interpolation=InterpolationMode.BICUBIC)]
    if cfg.hflip:
        ops.append(T.RandomHorizontalFlip())
    ops.append(BlipRandAugment(cfg.randaugment_ops, cfg.randaugment_magnitude))
    return T.Compose(ops + normalise)


def denormalise(x: torch.Tensor, cfg: LoaderConfig) -> torch.Tensor:
    """Undo the normalisation (for pictures of what the model saw)."""
    mean = torch.tensor(cfg.mean).view(-1, 1, 1)
    std = torch.tensor(cfg.std).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
