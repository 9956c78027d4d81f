"""Finished datasets of either format, our shards or a selection over input shards: their samples in order, and
structural checks (every file the manifest vouches for; a sample of images that must decode)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Iterator

from PIL import Image

from blip.data import storage
from blip.data.selected import SELECTION_FORMAT, iter_selected_samples
from blip.data.shards import FORMAT, content_check, iter_tar_samples, read_manifest


def iter_raw_samples(dataset_dir: str | Path) -> Iterator[tuple[str, dict]]:
    """(shard, raw sample) of a finished dataset in order: its shards', or a selection's joined samples."""
    manifest = read_manifest(dataset_dir, (FORMAT, SELECTION_FORMAT))
    if manifest["format"] == SELECTION_FORMAT:
        yield from iter_selected_samples(dataset_dir, manifest)
        return
    for entry in manifest["shards"]:
        for sample in iter_tar_samples(storage.join(dataset_dir, entry["name"])):
            yield entry["name"], sample


def iter_samples(dataset_dir: str | Path) -> Iterator[dict]:
    """Samples (key, jpg bytes, txt str, json dict) of a finished dataset, in order."""
    for _, sample in iter_raw_samples(dataset_dir):
        yield {"__key__": sample["__key__"], "jpg": sample.get("jpg"),
               "txt": sample["txt"].decode("utf-8"), "json": json.loads(sample["json"])}


def manifest_files(dataset_dir: str | Path, manifest: dict) -> list[tuple[str, dict, dict]]:
    """Every file a manifest vouches for, as (URL, content check, its entry): its shards; or, for a selection,
    the input shards it points at and its selection tables."""
    if manifest["format"] == FORMAT:
        return [(storage.join(dataset_dir, e["name"]), content_check(e), e) for e in manifest["shards"]]
    files = [(p["url"], content_check(p), p) for p in manifest["parts"]]
    return files + [(storage.join(dataset_dir, p["selection"]["name"]), content_check(p["selection"]), p["selection"])
                    for p in manifest["parts"] if p["kind"] == "web"]


def verify_dataset(dataset_dir: str | Path) -> list[str]:
    """Check every file a manifest vouches for (exists, content; a shard's sample count); returns problems."""
    manifest = read_manifest(dataset_dir, (FORMAT, SELECTION_FORMAT))
    problems: list[str] = []
    for url, check, entry in manifest_files(dataset_dir, manifest):
        if not storage.exists(url):
            problems.append(f"{url}: missing")
        elif not storage.matches(url, check):
            problems.append(f"{url}: content differs from the manifest's {' '.join(check)}")
        elif manifest["format"] == FORMAT and sum(1 for _ in iter_tar_samples(url)) != entry["samples"]:
            problems.append(f"{url}: sample count differs from the manifest's {entry['samples']}")
    parts = manifest["shards"] if manifest["format"] == FORMAT else manifest["parts"]
    total = sum(s["samples"] for s in parts)
    if total != manifest["samples"]:
        problems.append(f"{dataset_dir}: its parts hold {total} samples, manifest says {manifest['samples']}")
    return problems


def verify(dataset_dirs: list[str], decode_sample: int, seed: int) -> dict:
    """{dataset: samples, decoded, problems (the first 50), problem_count} for each dataset folder."""
    report = {}
    for d in dataset_dirs:
        problems = verify_dataset(d)
        manifest = read_manifest(d, (FORMAT, SELECTION_FORMAT))
        # the sample's indices are drawn up front, and only those images are decoded
        picks = set(random.Random(seed).sample(range(manifest["samples"]), min(decode_sample, manifest["samples"])))
        for i, sample in enumerate(iter_samples(d)):
            if i in picks:
                try:
                    Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
                except Exception as e:  # any decoder failure is a finding, not a crash
                    problems.append(f"{d}:{sample['__key__']}: image does not decode ({e})")
            if not sample["txt"].strip():
                problems.append(f"{d}:{sample['__key__']}: empty caption")
            if "source" not in sample["json"]:
                problems.append(f"{d}:{sample['__key__']}: metadata has no 'source'")
        report[d] = {"samples": manifest["samples"], "decoded": len(picks), "problems": problems[:50],
                     "problem_count": len(problems)}
    return report
