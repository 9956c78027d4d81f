"""Using an NLVR model: is each statement true of its image pair?"""

from __future__ import annotations

import torch
from PIL import Image

from blip.inference import BlipInference
from blip.launch import autocast
from blip.tasks.nlvr.model import BlipNLVR  # noqa: F401  (registers the model class: an NLVR folder loads)


@torch.no_grad()
def verify_pair(blip: BlipInference, first: list[Image.Image], second: list[Image.Image],
                statements: list[str]) -> list[tuple[bool, float]]:
    """For each (first image, second image, statement): whether it is true, and the probability of true."""
    if blip.model.cfg.task != "nlvr":
        raise ValueError(f"this is a {blip.model.cfg.task} model, not an NLVR model: fine-tune one with "
                         "`blip downstream nlvr`")
    if not len(first) == len(second) == len(statements):
        raise ValueError(f"{len(first)} first images, {len(second)} second images and {len(statements)} "
                         "statements: give one pair per statement")
    pairs = torch.stack([blip.images(first), blip.images(second)], 1)
    ids, mask = blip.text_inputs(statements)
    with autocast(blip.precision, blip.device):
        p = blip.model.pair_logits(pairs, ids, mask).float().softmax(-1)[:, 1]
    return [(bool(x > 0.5), float(x)) for x in p.tolist()]
