"""NLVR2 datasets: NLVR2's JSON lines, the BLIP release's nlvr_*.json, and the built-in world's pairs, as shards.

One sample per (image pair, statement): the first image as `.jpg`, the second as `.right.jpg`, the statement as
`.txt`, and `{"label": 1 | 0, "identifier", "images"}` as `.json` (NLVR2 has about four statements per pair;
the images are stored with each). The world also writes the extra pre-training step's pairs: a caption of the
first image (label 0), of the second (1) or of neither (2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.karpathy import image_at
from blip.data.shards import DatasetWriter
from blip.data.world import BACKGROUNDS, COLOURS, Scene, encode_jpeg, human_captions, render, rng_for, sample_scene

NLVR_STREAM = 4  # the world's generator stream for NLVR pairs (1: human set, 2: web, 3: VQA)


class NLVRFormatError(ValueError):
    """A file that is none of the NLVR2 forms read here."""


def _label(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    raise NLVRFormatError(f"{where}: label {value!r} is neither true nor false")


def _rows(path: str) -> list[dict]:
    """A file's entries: a JSON list (the release) or JSON lines (NLVR2)."""
    text = storage.read_bytes(path).decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    except ValueError as e:
        raise NLVRFormatError(f"{path}: neither a JSON list nor JSON lines ({e})") from e
    if not all(isinstance(r, dict) for r in data):
        raise NLVRFormatError(f"{path}: its entries are not JSON objects")
    return data


def read_nlvr_files(files: list[str]) -> Iterator[dict]:
    """Records {images: [first, second], sentence, label, identifier} from NLVR2 (images found as
    <split>/[<directory>/]<identifier minus its last part>-img0.png, -img1.png) or the release's lists."""
    for f in files:
        for i, r in enumerate(_rows(f)):
            where = f"{f}, entry {i}"
            try:
                if "images" in r:  # the release: image paths given
                    images, identifier = list(r["images"]), r.get("identifier", f"{Path(f).stem}-{i}")
                else:  # NLVR2: the images follow from the identifier, split-set-pair-sentence
                    identifier = r["identifier"]
                    prefix, split = identifier.rsplit("-", 1)[0], identifier.split("-")[0]
                    folder = f"{split}/{r['directory']}" if "directory" in r else split
                    images = [f"{folder}/{prefix}-img0.png", f"{folder}/{prefix}-img1.png"]
                yield {"images": images, "sentence": r["sentence"], "label": _label(r.get("label"), where),
                       "identifier": identifier}
            except (KeyError, ValueError, AttributeError) as e:
                if isinstance(e, NLVRFormatError):
                    raise
                raise NLVRFormatError(f"{where}: not an NLVR2 or release entry (no usable {e}): "
                                      f"{str(r)[:200]}") from None


def ingest_nlvr(files: list[str], image_root: str, out_dir: str | Path, cfg: IngestConfig, shard_size: int) -> dict:
    """Shards + manifest of the files' statements; a pair with a missing or broken image is skipped and counted."""
    tally, writer = Tally(), DatasetWriter(out_dir, shard_size)
    try:
        for i, r in enumerate(read_nlvr_files(files)):
            tally.seen += 1
            first = image_at(image_root, r["images"][0], cfg, tally)
            second = image_at(image_root, r["images"][1], cfg, tally) if first is not None else None
            if second is not None:
                writer.write(f"{i:09d}", first.jpeg, r["sentence"],
                             {k: r[k] for k in ("label", "identifier", "images")}, extra={"right.jpg": second.jpeg})
        tally.check(cfg, f"NLVR2 ingest of {', '.join(files)}")
        return writer.finish({"kind": "nlvr", **tally.fields()})
    except BaseException:
        writer.abort()
        raise


# ---------------------------------------------------------------------------------------- built-in world

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
