"""A dataset as the tables its contract checks, read without decoding images (but a sample).

- rows:    one per sample, from the shards' .txt/.json members (every row scanned);
- summary: one row of dataset-level facts (manifest counts, checksums, CapFilt statistics);
- images:  a seeded sample of images, decoded, with their sizes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from blip.data import storage
from blip.data.shards import FORMAT, iter_raw_samples, iter_tar_samples, manifest_files, read_manifest
from blip.selection.dataset import SELECTION_FORMAT


def _thumbnail(jpg: bytes) -> np.ndarray | None:
    """The decoded picture as an 8x8 colour thumbnail (None if it does not decode). JPEGs decode at 1/8
    scale (draft mode), so this is cheap enough for every row."""
    try:
        with Image.open(io.BytesIO(jpg)) as im:
            im.draft("RGB", (64, 64))
            return np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.int16)
    except Exception:  # an undecodable image has no picture to match; the images table reports it
        return None


def _coarse(thumb: np.ndarray) -> tuple[int, ...]:
    """The mean brightness of the thumbnail's four quarters, in 16 levels: an index key."""
    quarters = thumb.mean(-1).reshape(2, 4, 2, 4).mean((1, 3))
    return tuple(int(v) // 16 for v in quarters.flatten())


class EvalImages:
    """The evaluation splits' images, found by content: the same bytes, or the same picture re-encoded.

    A re-encoded picture keeps its 8x8 thumbnail within a few levels (measured on the built-in world:
    at most 10 at JPEG quality 50-90), while different pictures differ by 30 or more somewhere; the
    thumbnails are found through a coarse key (quarter brightness), probing its neighbours too.
    """

    TOLERANCE = 16  # the largest thumbnail difference (0-255 levels) of the same picture

    def __init__(self, dataset_dirs: list[str]):
        self.sha256: set[str] = set()
        self.thumbnails: dict[tuple[int, ...], list[np.ndarray]] = {}
        for d in dataset_dirs:
            for entry in read_manifest(d)["shards"]:
                for sample in iter_tar_samples(storage.join(d, entry["name"])):
                    if "jpg" in sample:
                        self.sha256.add(hashlib.sha256(sample["jpg"]).hexdigest())
                        thumb = _thumbnail(sample["jpg"])
                        if thumb is not None:
                            self.thumbnails.setdefault(_coarse(thumb), []).append(thumb)

    def __contains__(self, jpg: bytes | None) -> bool:
        if jpg is None:
            return False
        if hashlib.sha256(jpg).hexdigest() in self.sha256:
            return True
        thumb = _thumbnail(jpg)
        if thumb is None:
            return False
        key = _coarse(thumb)
        for step in itertools.product((-1, 0, 1), repeat=len(key)):
            for other in self.thumbnails.get(tuple(k + s for k, s in zip(key, step)), []):
                if np.abs(thumb - other).max() <= self.TOLERANCE:
                    return True
        return False


def _safe_key(key: object) -> bool:
    """A key that names a sample, not a path: no separators, no parent steps, printable."""
    return (isinstance(key, str) and bool(key) and key.isprintable() and "/" not in key and "\\" not in key
            and ".." not in key)


def _missing_score(value: object) -> bool:
    return not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)


def _text(raw: bytes | None) -> tuple[str | None, bool]:
    if raw is None:
        return None, True
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def build_tables(dataset_dir: str | Path, eval_images: EvalImages, image_sample: int,
                 seed: int) -> dict[str, pd.DataFrame]:
    """The rows, summary and images tables of a finished dataset (plain shards or a selection)."""
    dataset_dir = str(dataset_dir)
    manifest = read_manifest(dataset_dir, (FORMAT, SELECTION_FORMAT))
    files = manifest_files(dataset_dir, manifest)
    checksums_ok = all(storage.exists(url) and storage.sha256(url) == sha for url, sha, _ in files)
    picks = set(random.Random(seed).sample(range(manifest["samples"]), min(image_sample, manifest["samples"])))
    rows, images = [], []
    if checksums_ok:
        for i, (shard, sample) in enumerate(iter_raw_samples(dataset_dir)):
            caption, utf8 = _text(sample.get("txt"))
            meta = json.loads(sample["json"]) if "json" in sample else {}
            jpg = sample.get("jpg")
            source = meta.get("source")
            rows.append({"key": sample["__key__"], "key_safe": _safe_key(sample["__key__"]), "shard": shard,
                         "caption": caption, "utf8": utf8, "words": len(caption.split()) if caption else 0,
                         "longest_word": max((len(w) for w in caption.split()), default=0) if caption else 0,
                         "source": source, "score": meta.get("score"), "itm": meta.get("itm"),
                         "score_missing": source in ("web", "synthetic") and _missing_score(meta.get("itm")),
                         "has_image": jpg is not None, "in_eval": jpg in eval_images})
            if i in picks:
                images.append(_image_row(sample["__key__"], jpg))
    sources = Counter(r["source"] for r in rows)
    summary = {"rows_match_manifest": len(rows) == manifest["samples"], "checksums_ok": checksums_ok,
               "files": len(files), "shard_counts_match": checksums_ok and _shard_counts_match(manifest, rows),
               "by_source_matches": manifest.get("by_source") in (None, {k: v for k, v in sources.items() if v})
               or {k: v for k, v in manifest["by_source"].items() if v} == dict(sources)}
    selection = manifest.get("selection")
    if selection is not None:  # a bootstrapped dataset: its statistics and what its rows say must agree
        stats = selection["counts"]
        web_total, syn_total = stats.get("web_total", 0), stats.get("synthetic_total", 0)
        threshold = selection.get("threshold")
        summary.update(
            threshold=threshold if not _missing_score(threshold) else None,
            # a threshold of 0, NaN or none keeps everything: not a selection
            threshold_valid=not _missing_score(threshold) and threshold > 0,
            web_removed_share=stats.get("web_removed", 0) / web_total if web_total else None,
            noise_ratio=stats.get("synthetic_removed", 0) / syn_total if syn_total else None,
            synthetic_share=sum(r["source"] == "synthetic" for r in rows) / max(1, len(rows)),
            counts_match_rows=all(stats.get(f"{s}_kept", 0) == sum(r["source"] == s for r in rows)
                                  for s in ("human", "web", "synthetic")))
    return {"rows": pd.DataFrame(rows), "summary": pd.DataFrame([summary]), "images": pd.DataFrame(images),
            "manifest": manifest}


def _shard_counts_match(manifest: dict, rows: list[dict]) -> bool:
    """Each shard's (or selected input shard's) sample count in the manifest is the rows read from it."""
    read = Counter(r["shard"] for r in rows)
    if manifest["format"] == FORMAT:
        return all(read.get(e["name"], 0) == e["samples"] for e in manifest["shards"])
    return all(read.get(p["url"], 0) == p["samples"] for p in manifest["parts"])


def _image_row(key: str, jpg: bytes | None) -> dict:
    try:
        with Image.open(io.BytesIO(jpg)) as im:
            im.load()
            return {"key": key, "decodable": True, "width": im.width, "height": im.height}
    except Exception:  # any decoder failure is what this column records
        return {"key": key, "decodable": False, "width": None, "height": None}
