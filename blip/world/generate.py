"""The built-in world's raw sets, written as a user's data would arrive: the human set as a Karpathy JSON with
its images, the web set as img2dataset shards. What each web text really is stays beside them, in a table of
its own (TRUTH, keyed by the sample's key): the pipeline never reads it, and `blip audit` joins it to what
CapFilt did.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from blip.config import Params
from blip.data import storage
from blip.data.parquet import write_table
from blip.data.prepare import Sources
from blip.data.shards import atomic_write_json, write_shard
from blip.data.text import clean_caption
from blip.world.config import WorldConfig
from blip.world.scene import (HUMAN_STREAM, NOISE_KINDS, WEB_STREAM, Scene, alt_text_style, encode_jpeg, human_captions,
                              partial_caption, random_pool, render, rng_for, sample_scene, uninformative_text)

TRUTH = "web-truth.parquet"  # beside the web shards: key, shard, kind, true_caption, detail, scene (JSON)
RECORD = "world.json"        # what a workspace's world folder holds: which sources the world stands in for
TRUTH_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("kind", pa.string()),
                          ("true_caption", pa.string()), ("detail", pa.string()), ("scene", pa.string())])


def noise_kinds(cfg: WorldConfig, seed: int) -> list[str]:
    """Exact per-kind counts (largest remainder), assigned to web images in a seeded order."""
    total = cfg.web.images
    noisy = round(cfg.web.noise_fraction * total)
    mix = dataclasses.asdict(cfg.web.noise_mix)
    exact = {k: noisy * v for k, v in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: noisy - sum(counts.values())]:
        counts[k] += 1
    kinds = ["clean"] * (total - noisy) + [k for k in NOISE_KINDS for _ in range(counts[k])]
    np.random.default_rng([seed, WEB_STREAM, 0xC0FFEE]).shuffle(kinds)
    return kinds


def web_alt_text(i: int, kind: str, scenes: list[Scene], rng: np.random.Generator) -> tuple[str, dict]:
    """The alt-text of web image i and its hidden truth record."""
    true_caption = str(rng.choice(random_pool(scenes[i], rng)))
    truth = {"kind": kind, "true_caption": true_caption, "scene": scenes[i].to_json()}
    if kind == "clean":
        text = true_caption
    elif kind == "mismatched":
        j = (i + 1 + int(rng.integers(len(scenes) - 1))) % len(scenes)
        text = str(rng.choice(random_pool(scenes[j], rng)))
        truth["detail"] = f"caption of web image {j}"
    elif kind == "partial":
        text, truth["detail"] = partial_caption(scenes[i], rng)
    else:
        return uninformative_text(rng), truth
    return alt_text_style(text, rng), truth


def write_human(cfg: WorldConfig, seed: int, out_dir: Path) -> dict:
    """Human-annotated set: images/ + karpathy.json (one entry per image, five captions, split)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    splits = ["train"] * cfg.human.train + ["val"] * cfg.human.val + ["test"] * cfg.human.test
    entries = []
    for i, split in enumerate(splits):
        rng = rng_for(seed, HUMAN_STREAM, i)
        scene = sample_scene(rng, cfg.max_objects)
        name = f"images/{i:06d}.jpg"
        storage.write_bytes(out_dir / name, encode_jpeg(render(scene, cfg.image_size, rng), cfg.jpeg_quality))
        entries.append({"image": name, "caption": human_captions(scene, rng), "split": split, "image_id": i})
    atomic_write_json(out_dir / "karpathy.json", entries)
    return {"entries": entries}


def write_web(cfg: WorldConfig, seed: int, out_dir: Path) -> dict:
    """Web set in img2dataset's webdataset layout: 00000.tar, ... with .jpg/.txt/.json per sample, and each shard's
    00000_stats.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = cfg.web.images
    rngs = [rng_for(seed, WEB_STREAM, i) for i in range(n)]
    scenes = [sample_scene(r, cfg.max_objects) for r in rngs]
    kinds = noise_kinds(cfg, seed)
    texts, truths, samples, shard = [], [], [], 0
    for i in range(n):
        img = render(scenes[i], cfg.image_size, rngs[i])
        text, truth = web_alt_text(i, kinds[i], scenes, rngs[i])
        key = f"{shard:05d}{len(samples):04d}"
        meta = {"url": f"world://web/{key}.jpg", "caption": text, "key": key, "status": "success",
                "error_message": None, "width": cfg.image_size, "height": cfg.image_size,
                "original_width": cfg.image_size, "original_height": cfg.image_size, "exif": "{}"}
        samples.append({"__key__": key, "jpg": encode_jpeg(img, cfg.jpeg_quality), "txt": text.encode(),
                        "json": json.dumps(meta, sort_keys=True).encode()})
        texts.append(text)
        truths.append({"key": key, "shard": f"{shard:05d}.tar", **truth, "scene": json.dumps(truth["scene"])})
        if len(samples) == cfg.web.shard_size or i == n - 1:
            write_shard(out_dir / f"{shard:05d}.tar", samples)
            # img2dataset's per-shard statistics, which registration reads the sample count from
            atomic_write_json(out_dir / f"{shard:05d}_stats.json",
                              {"count": len(samples), "successes": len(samples), "failed_to_download": 0,
                               "failed_to_resize": 0, "status_dict": {"success": len(samples)}})
            shard, samples = shard + 1, []
    return {"texts": texts, "kinds": kinds, "truth": truths}


def generate_world(cfg: WorldConfig, seed: int, out_dir: str | Path) -> dict:
    """Write the human set and the web set under `out_dir`; returns the world's statistics."""
    out_dir = Path(out_dir)
    human = write_human(cfg, seed, out_dir / "human")
    web = write_web(cfg, seed, out_dir / "web")
    write_truth(web["truth"], out_dir / TRUTH)
    human_texts = [c for e in human["entries"] for c in e["caption"]]
    words = {w for t in human_texts + web["texts"] for w in clean_caption(t, 10_000).split()}
    split_counts = {s: sum(e["split"] == s for e in human["entries"]) for s in ("train", "val", "test")}
    return {
        "human": {"images": split_counts, "images_total": len(human["entries"]), "captions": len(human_texts)},
        "web": {"images": len(web["kinds"]),
                "noise": {k: web["kinds"].count(k) for k in ("clean",) + NOISE_KINDS},
                "noise_fraction": round(sum(k != "clean" for k in web["kinds"]) / max(1, len(web["kinds"])), 6)},
        "vocabulary_words": len(words),
        "image_size": cfg.image_size,
    }


def write_truth(rows: list[dict], path: Path) -> None:
    """The web texts' truth as one Parquet table (the world is small: a table for all its shards)."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in TRUTH_SCHEMA}
    write_table(path, pa.Table.from_pydict(columns, schema=TRUTH_SCHEMA))


def write_sources(params: Params, folder: str | Path) -> tuple[Sources, dict | None]:
    """Write the world to `folder` for each source params.data leaves unset (an old world is removed first, and
    only the record is written when both sources are the user's); returns where `prepare` reads each source and
    the world's statistics (None without a world)."""
    folder, data = Path(folder), params.data
    shutil.rmtree(folder, ignore_errors=True)
    used = tuple(s for s, given in (("human", data.human_karpathy), ("web", data.web_shards)) if given is None)
    stats = generate_world(params.world, params.seed, folder) if used else None
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / RECORD, {"used_for": list(used)})
    if not used:
        return Sources.given(data), None
    human = ((str(folder / "human/karpathy.json"), str(folder / "human"), "world") if "human" in used
             else (str(data.human_karpathy), str(data.human_images), data.human_name))
    return Sources(*human, web_shards=str(folder / "web") if "web" in used else str(data.web_shards),
                   world_for=used), stats
