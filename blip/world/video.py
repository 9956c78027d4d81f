"""The world's clips of moving objects: each object glides one grid cell; captions for retrieval, questions
for QA (VQA's templates that hold in every frame, and where an object moves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from blip.config import Params
from blip.data.shards import DatasetWriter
from blip.tasks.video.data import Kind
from blip.tasks.video.frames import encode_clip
from blip.world.scene import background_phrase, encode_jpeg, noun_phrase, render, rng_for, sample_scene
from blip.world.vqa import world_questions

VIDEO_STREAM = 5  # the world's generator stream for clips (1: human set, 2: web, 3: VQA, 4: NLVR)
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (columns, rows) over the clip
MOTION_WORDS = {"left": "moving to the left", "right": "moving to the right", "up": "moving up",
                "down": "moving down"}

def _motions(scene, rng: np.random.Generator) -> list[str]:
    """Each object's direction: one grid cell over the clip, never out of the picture."""
    out = []
    for obj in scene.objects:
        r, c = obj.cell
        allowed = [m for m, (dc, dr) in MOTIONS.items() if 0 <= c + dc <= 2 and 0 <= r + dr <= 2]
        out.append(str(rng.choice(allowed)))
    return out


def world_clip(world_cfg, seed: int, index: int, frames: int, fps: int) -> tuple:
    """(scene, motions, MP4 bytes, middle frame) of the index-th clip: the scene's objects each glide one cell."""
    rng = rng_for(seed, VIDEO_STREAM, index)
    scene = sample_scene(rng, world_cfg.max_objects)
    motions = _motions(scene, rng)
    size = world_cfg.image_size - world_cfg.image_size % 2  # H.264's 4:2:0 wants even sides
    pictures = []
    for t in range(frames):
        step = t / max(1, frames - 1)
        shift = [(MOTIONS[m][0] * step, MOTIONS[m][1] * step) for m in motions]
        # the same draws every frame: texture, jitter and colours stay, only the objects move
        pictures.append(np.asarray(render(scene, size, np.random.default_rng([seed, VIDEO_STREAM, index, 1]),
                                          shift)))
    return scene, motions, encode_clip(pictures, fps), pictures[frames // 2]


def world_caption(scene, motions: list[str], rng: np.random.Generator) -> str:
    """A true caption of a clip: every object with its motion, in a random order, the background half the time."""
    order = rng.permutation(len(scene.objects))
    phrases = [f"{noun_phrase(scene.objects[i], bool(rng.random() < 0.5))} {MOTION_WORDS[motions[i]]}"
               for i in order]
    text = " and ".join(phrases)
    return f"{text} on a {background_phrase(scene)}" if rng.random() < 0.5 else text


def world_clip_questions(scene, motions: list[str], rng: np.random.Generator, k: int) -> list[dict]:
    """Up to k questions about a clip: VQA's templates that hold in every frame (counts, colours, shapes, sizes,
    presence, background: not rows, columns or left-of, which the motion changes), and where an object moves."""
    steady = [q for q in world_questions(scene, rng, 99) if q["question_type"] not in ("row", "column", "left of")]
    colours = [o.colour for o in scene.objects]
    i = int(rng.integers(len(scene.objects)))
    o = scene.objects[i]
    if colours.count(o.colour) == 1:
        steady.append({"question": f"which way does the {o.colour} {o.shape} move", "answer": motions[i],
                       "answer_type": "other", "question_type": "motion"})
    picks = sorted(rng.choice(len(steady), size=min(k, len(steady)), replace=False))
    return [steady[p] for p in picks]


def write_world_clips(kind: Kind, world_cfg, seed: int, out_dir: str | Path, shard_size: int) -> dict:
    """The built-in world's clips for `kind` (world.video): captions for retrieval, questions for QA."""
    v = world_cfg.video
    n, offset = (v.retrieval, 0) if kind == "retrieval" else (v.qa, v.retrieval)  # distinct clips per set
    writer, total = DatasetWriter(out_dir, shard_size), 0
    try:
        for index in range(offset, offset + n):
            scene, motions, mp4, middle = world_clip(world_cfg, seed, index, v.frames, v.fps)
            rng = np.random.default_rng([seed, VIDEO_STREAM, index, 2])
            if kind == "retrieval":
                items = [world_caption(scene, motions, rng)]
                text = items[0]
            else:
                items = [{"question_id": index * 100 + j, **q}
                         for j, q in enumerate(world_clip_questions(scene, motions, rng, v.questions_per_clip))]
                text = items[0]["question"]
            writer.write(f"{index:09d}", encode_jpeg(Image.fromarray(middle), world_cfg.jpeg_quality), text,
                         {"video": f"world://video/{index}", "captions" if kind == "retrieval" else "questions": items,
                          "scene": scene.to_json(), "motions": motions}, extra={"video": mp4})
            total += len(items)
        field = "captions" if kind == "retrieval" else "questions"
        return writer.finish({"kind": f"video_{kind}", field: total})
    except BaseException:
        writer.abort()
        raise


def write_clips(kind: Kind, params: Params, out_dir: str | Path) -> dict:
    """The world's clips for zero-shot video `kind`, and the stage's metrics."""
    manifest = write_world_clips(kind, params.world, params.seed, out_dir, params.ingest.shard_size)
    field = "captions" if kind == "retrieval" else "questions"
    return {"source": "world", "clips": manifest["samples"], field: manifest[field]}
