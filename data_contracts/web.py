"""A registered web set (the user's img2dataset shards, in place) as the tables its contract checks.

Reading every sample of a billion web pairs is days of CPU, and CapFilt reads each one anyway (its skips
are counted by reason in the score tables). So the web contract checks the manifest against storage (each
shard present with its size and, in an object store, its content tag: one listing per folder) and reads
a seeded sample of `contracts.sample_shards` shards whole:

- summary: manifest totals, storage listings, the sampled shards' sample counts and unusable share;
- rows:    the sampled shards' usable samples (at most `contracts.row_sample`), their captions cleaned as
           every reader cleans them, and whether an evaluation image is among them;
- images:  up to `contracts.image_sample` of their images, decoded by the rules every reader shares.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pandas as pd

from blip.config import Params
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.web import parse_web_sample, read_web_shard, web_shards
from data_contracts.tables import IMAGE_COLUMNS, EvalImages, image_row, safe_key


def _listed(shards: list) -> list[str]:
    """The shards missing from storage, or of another size or content tag than registered: one listing per
    folder, no shard read."""
    by_folder, missing = defaultdict(list), []
    for s in shards:
        by_folder[s.url.rpartition("/")[0]].append(s)
    for folder, wanted in by_folder.items():
        listed = {Path(e["url"]).name: e for e in storage.listing(folder, "*.tar")}
        for s in wanted:
            found = listed.get(Path(s.url).name)
            if found is None:
                missing.append(f"{s.url}: missing")
            elif found["bytes"] != s.bytes:
                missing.append(f"{s.url}: {found['bytes']} bytes, the manifest says {s.bytes}")
            elif "etag" in s.check and found.get("etag") not in (None, s.check["etag"]):
                missing.append(f"{s.url}: its content tag changed since it was registered")
    return missing


def web_tables(dataset_dir: str, manifest: dict, eval_images: EvalImages, params: Params) -> dict:
    """The summary, rows (a sample) and images (a sample) tables of a registered web set."""
    cfg, limits = params.contracts, params.ingest
    shards = web_shards(dataset_dir)
    problems = _listed(shards)
    chosen = sorted(random.Random(params.seed).sample(range(len(shards)), min(cfg.sample_shards, len(shards))))
    rows, images, read, unusable, counts_ok = [], [], 0, 0, True
    for i in chosen:
        shard, tally, n = shards[i], Tally(), 0
        for key, members in read_web_shard(shard.url, tally, limits.max_member_bytes, shard.samples):
            n += 1
            sample = parse_web_sample(key, members, limits)
            if sample.skip:
                unusable += 1
                continue
            if len(rows) < cfg.row_sample:
                words = sample.text.split()
                rows.append({"key": sample.key, "key_safe": safe_key(sample.key), "shard": shard.url,
                             "caption": sample.text, "utf8": True, "words": len(words),
                             "longest_word": max(map(len, words), default=0), "source": "web", "score": None,
                             "itm": None, "score_missing": False, "has_image": bool(sample.image),
                             "in_eval": eval_images.holds(sample.image)})
            if len(images) < cfg.image_sample:
                images.append(image_row(sample.key, sample.image, limits))
        lost = tally.skipped["broken_shard"]
        read, unusable = read + n + lost, unusable + lost
        counts_ok &= n + lost == shard.samples
    declared = manifest.get("by_source") or {}
    summary = {"rows_match_manifest": sum(s.samples for s in shards) == manifest["samples"],
               "checksums_ok": not problems, "files": len(shards), "shard_counts_match": counts_ok,
               "by_source_matches": {k: v for k, v in declared.items() if v} == {"web": manifest["samples"]},
               "sampled_shards": len(chosen), "sample_unusable_share": unusable / read if read else None}
    return {"rows": pd.DataFrame(rows), "summary": pd.DataFrame([summary]),
            "images": pd.DataFrame(images, columns=IMAGE_COLUMNS),
            "manifest": manifest, "examples": {"checksums_ok": problems[:5]}, "total_rows": manifest["samples"]}
