"""A dataset of our own shards (the human-annotated set, a materialized selection) as the tables its contract
checks, read without decoding images (but a sample). COCO-sized: every row is scanned. The web set and
a bootstrapped selection are checked without reading every sample (web.py, selection.py).

- rows:    one per sample, from the shards' .txt/.json members (every row scanned);
- summary: one row of dataset-level facts (manifest counts, checksums, CapFilt statistics);
- images:  a seeded sample of images, decoded, with their sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image

from blip.config import IngestConfig
from blip.data import storage
from blip.data.finished import iter_raw_samples, manifest_files
from blip.data.images import open_image, pixel_digest
from blip.data.shards import FORMAT, iter_tar_samples, plain_name, read_manifest


class EvalImages:
    """The evaluation splits' images, known by the sha256 of their bytes and of their decoded pixels.

    The pixels catch a copy whose file changed but whose picture did not: metadata stripped or added, a
    lossless rewrite (jpegtran's optimised or progressive form), the same pixels as PNG. A training image
    is decoded only when its size is an evaluation image's. A lossy re-encode is not caught: on the
    built-in world, distinct images of the same scene are closer, pixel for pixel, than a JPEG re-encode
    of one image (8x8 thumbnails: mean difference 0.42 against up to 1.63; 32x32: 0.74 against 3.36), so
    a near-match would flag the world's own repeated scenes. The digests are `images.pixel_digest`'s, the
    same CapFilt writes into its score tables, so a bootstrapped set is checked by a join on them.
    """

    def __init__(self, dataset_dirs: list[str]):
        self.files: set[str] = set()
        self.pixels: set[str] = set()
        self.sizes: set[tuple[int, int]] = set()
        for d in dataset_dirs:
            for entry in read_manifest(d)["shards"]:
                for sample in iter_tar_samples(storage.join(d, entry["name"])):
                    if "jpg" in sample:
                        self.files.add(hashlib.sha256(sample["jpg"]).hexdigest())
                        found = _pixels(sample["jpg"], None)
                        if found is not None:
                            self.sizes.add(found[0])
                            self.pixels.add(found[1])

    def digests(self) -> tuple[set[str], set[str]]:
        """(sha256 of the files, digests of the pictures)."""
        return self.files, self.pixels

    def holds(self, jpg: bytes) -> bool:
        """Whether this image is one of the evaluation images, as a file or as a picture."""
        if hashlib.sha256(jpg).hexdigest() in self.files:
            return True
        found = _pixels(jpg, self.sizes)
        return found is not None and found[1] in self.pixels


def _pixels(data: bytes, sizes) -> tuple[tuple[int, int], str] | None:
    """(size, digest of the decoded RGB pixels), when the image decodes and its size is among `sizes`
    (None: any); the size is read from the header, so other images are never decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if sizes is not None and image.size not in sizes:
                return None
            return image.size, pixel_digest(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def safe_key(key: object) -> bool:
    """A key that names a sample, not a path, in printable characters."""
    return plain_name(key) and key.isprintable()


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
    """The rows, summary and images tables of a finished dataset of our own shards."""
    dataset_dir = str(dataset_dir)
    manifest = read_manifest(dataset_dir, (FORMAT,))
    files = manifest_files(dataset_dir, manifest)
    checksums_ok = all(storage.exists(url) and storage.matches(url, check) for url, check, _ in files)
    picks = set(random.Random(seed).sample(range(manifest["samples"]), min(image_sample, manifest["samples"])))
    rows, images = [], []
    if checksums_ok:
        for i, (shard, sample) in enumerate(iter_raw_samples(dataset_dir)):
            caption, utf8 = _text(sample.get("txt"))
            meta = json.loads(sample["json"]) if "json" in sample else {}
            jpg = sample.get("jpg")
            source = meta.get("source")
            rows.append({"key": sample["__key__"], "key_safe": safe_key(sample["__key__"]), "shard": shard,
                         "caption": caption, "utf8": utf8, "words": len(caption.split()) if caption else 0,
                         "longest_word": max((len(w) for w in caption.split()), default=0) if caption else 0,
                         "source": source, "score": meta.get("score"), "itm": meta.get("itm"),
                         "score_missing": source in ("web", "synthetic") and _missing_score(meta.get("itm")),
                         "has_image": jpg is not None,
                         "in_eval": jpg is not None and eval_images.holds(jpg)})
            if i in picks:
                images.append(image_row(sample["__key__"], jpg))
    sources = Counter(r["source"] for r in rows)
    declared = manifest.get("by_source")
    summary = {"rows_match_manifest": len(rows) == manifest["samples"], "checksums_ok": checksums_ok,
               "files": len(files), "shard_counts_match": checksums_ok and _shard_counts_match(manifest, rows),
               "by_source_matches": declared is None or {k: v for k, v in declared.items() if v} == dict(sources)}
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
    """Each shard's sample count in the manifest is the rows read from it."""
    read = Counter(r["shard"] for r in rows)
    return all(read.get(e["name"], 0) == e["samples"] for e in manifest["shards"])


IMAGE_COLUMNS = ["key", "decodable", "width", "height"]  # the images table, even when no image was sampled


def image_row(key: str, data: bytes | None, limits: IngestConfig | None = None) -> dict:
    """A decoded image's row: whether it decodes (by the rules every reader shares, when `limits` are given) and
    its size."""
    try:
        if limits is not None:
            image = open_image(data or b"", limits).image
            return {"key": key, "decodable": True, "width": image.width, "height": image.height}
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return {"key": key, "decodable": True, "width": im.width, "height": im.height}
    except Exception:  # any decoder failure is what this column records
        return {"key": key, "decodable": False, "width": None, "height": None}
