"""The world's NLVR sets: pairs of fresh scenes with statements as often true as false, and the extra
pre-training step's pairs (a caption of the first image, of the second or of neither)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from blip.data.shards import DatasetWriter
from blip.world.scene import (BACKGROUNDS, COLOURS, Scene, encode_jpeg, human_captions, render, rng_for,
                              sample_scene)

NLVR_STREAM = 4  # the world's generator stream for NLVR pairs (1: human set, 2: web, 3: VQA)

def draw_statement(rng: np.random.Generator, max_objects: int) -> tuple[str, Callable[[Scene, Scene], bool]]:
    """One statement about a pair of scenes, its template drawn uniformly among those that scenes of up to
    `max_objects` objects can make true and false, and its truth test on (left, right)."""
    colour, bg = str(rng.choice(list(COLOURS))), str(rng.choice(list(BACKGROUNDS)))
    side = str(rng.choice(["left", "right"]))
    named = lambda left, right: (left, right) if side == "left" else (right, left)  # noqa: E731  (named, other)
    has = lambda scene: any(o.colour == colour for o in scene.objects)  # noqa: E731
    on_bg = lambda scene: scene.background == bg  # noqa: E731
    templates = [
        (f"the {side} image has more objects than the other",
         lambda a, b: len(named(a, b)[0].objects) > len(named(a, b)[1].objects)),
        (f"both images contain a {colour} object", lambda a, b: has(a) and has(b)),
        (f"the {side} image contains a {colour} object", lambda a, b: has(named(a, b)[0])),
        ("the two images have the same background", lambda a, b: a.background == b.background),
        (f"exactly one image has a {bg} background", lambda a, b: on_bg(a) != on_bg(b)),
        (f"the {side} image has a {bg} background", lambda a, b: on_bg(named(a, b)[0])),
    ]
    if max_objects < 2:  # one object each: no image has more, and drawing scenes to make it so would never end
        templates = templates[1:]
    return templates[int(rng.integers(len(templates)))]


def balanced_pair(rng: np.random.Generator, max_objects: int, label: int) -> tuple[Scene, Scene, str]:
    """Two scenes and a statement whose truth is `label`: the statement is drawn first, then scenes until they
    make it so. Every statement is thus true as often as false and the text alone tells nothing (NLVR2 pairs
    each sentence with images that make it true and images that make it false, for the same reason)."""
    text, truth = draw_statement(rng, max_objects)
    while True:
        left, right = sample_scene(rng, max_objects), sample_scene(rng, max_objects)
        if truth(left, right) == bool(label):
            return left, right, text


def write_world_nlvr(world_cfg, seed: int, counts: dict[str, int], out_dir: str | Path, shard_size: int) -> dict:
    """The world's NLVR sets: `pretrain` (caption of the first image, the second or neither) and the true/false
    splits (each statement as often true as false), each pair of fresh scenes."""
    size, quality = world_cfg.image_size, world_cfg.jpeg_quality
    jpeg = lambda scene, rng: encode_jpeg(render(scene, size, rng), quality)  # noqa: E731
    stats, index = {}, 0
    for split, n in counts.items():
        writer = DatasetWriter(Path(out_dir) / split, shard_size)
        for i in range(n):
            rng = rng_for(seed, NLVR_STREAM, index)
            index += 1
            if split == "pretrain":
                left, right = sample_scene(rng, world_cfg.max_objects), sample_scene(rng, world_cfg.max_objects)
                label = int(rng.integers(3))
                source = (left, right)[label] if label < 2 else sample_scene(rng, world_cfg.max_objects)
                text = str(rng.choice(human_captions(source, rng)))
            else:
                label = i % 2  # exactly half true
                left, right, text = balanced_pair(rng, world_cfg.max_objects, label)
            writer.write(f"{i:09d}", jpeg(left, rng), text, {"label": label, "identifier": f"world-{split}-{i}",
                                                              "scenes": [left.to_json(), right.to_json()]},
                         extra={"right.jpg": jpeg(right, rng)})
        stats[split] = writer.finish({"kind": "nlvr"})["samples"]
    return stats
