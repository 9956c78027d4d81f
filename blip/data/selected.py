"""The bootstrapped dataset without copies: a manifest and selection tables over the input shards.

`select` writes, per web shard with any text kept, a small Parquet table of the kept texts (key,
candidate, text, scores, provenance), and a manifest listing parts:

- web parts: an input shard's URL and content tag or sha256 (as its web manifest records it), and its
  selection table;
- human parts: a human-annotated shard, taken whole.

Readers join: they stream each web shard and emit, for every sample, one sample per selected text of
its key (`<key>_web`, `<key>_syn0`, ...); samples with nothing selected are passed over. No image is
ever copied; `blip materialize` writes standalone shards for those who want them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from blip.config import IngestConfig
from blip.data import storage
from blip.data.parquet import read_table
from blip.data.shards import FORMAT, encode_sample, iter_tar_samples, read_manifest
from blip.data.web import IMAGE_EXTS, WEB_FORMAT, parse_web_sample, web_provenance, web_shards

SELECTION_FORMAT = "blip-selection/1"
TABLE_PATTERN = "selection-{:06d}-{{sha}}.parquet"  # content-addressed, as shards are


def suffix(candidate: int) -> str:
    """A selected text's key suffix: the web text, or the n-th synthetic caption."""
    return "web" if candidate == 0 else f"syn{candidate - 1}"


def selected_by_key(path: str | Path) -> dict[str, list[dict]]:
    """A selection table's rows grouped by input key, in table order."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for row in read_table(path).to_pylist():
        by_key[row["key"]].append(row)
    return by_key


def join_web_sample(sample: dict, rows: list[dict], shard: str) -> Iterator[dict]:
    """One sample per selected text of a raw web sample (none when nothing of it was selected): the input's
    image as it is, the selected text, the scores and provenance."""
    try:
        origin = json.loads(sample["json"]) if "json" in sample else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        origin = {}
    origin = origin if isinstance(origin, dict) else {}
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    for row in rows:
        meta = {"source": row["source"], "score": row["score"], "itm": row["itm"], "itc": row["itc"],
                "captioner": row["captioner"], "filters": row["filters"], "round": row["round"],
                "image_key": row["key"], "candidate": row["candidate"], "shard": shard,
                "image_sha256": row["image_sha256"],  # the image's bytes, as scored: a join key back to the input
                "origin": {"url": origin.get("url"), "key": row["key"], "shard": shard}}  # the user's sample
        yield encode_sample(f"{row['key']}_{suffix(row['candidate'])}", image, row["text"], meta)


def registered_web_sample(raw: dict, shard: str, limits: IngestConfig) -> dict | None:
    """A raw sample of a registered web shard as a training sample (its text cleaned, its provenance), or None
    when it is unusable (its image is checked where it is decoded)."""
    sample = parse_web_sample(raw["__key__"], {k: v for k, v in raw.items() if not k.startswith("__")}, limits)
    if sample.skip:
        return None
    return encode_sample(sample.key, sample.image, sample.text, web_provenance(sample, shard))


def human_sample(sample: dict, round_: int) -> dict:
    """A human-annotated sample as the bootstrapped dataset carries it (marked human, with the round)."""
    meta = json.loads(sample["json"]) if "json" in sample else {}
    meta.update(source="human", round=round_)
    return {**sample, "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}


@dataclass(frozen=True)
class Joiner:
    """Turns raw samples of any shard into the dataset's samples (picklable, for loader workers)."""

    selections: dict[str, str]  # web shard URL -> its selection table
    human: dict[str, int]       # human shard URL -> the round of the selection that takes it whole
    web: frozenset = frozenset()  # registered web shards: raw img2dataset samples, read by the web rules
    limits: IngestConfig | None = None  # those rules' caption limits

    def samples(self, shard: str, raw: dict, table: dict[str, list[dict]] | None) -> Iterator[dict]:
        """The samples made of one raw sample of `shard` (`table`: that shard's selection, if it is a web part).
        A shard of a plain dataset passes through as it is."""
        if table is not None:
            yield from join_web_sample(raw, table.get(raw["__key__"], []), shard)
        elif shard in self.web:
            sample = registered_web_sample(raw, shard, self.limits)
            if sample is not None:
                yield sample
        elif shard in self.human:
            yield human_sample(raw, self.human[shard])
        else:
            yield raw

    def table(self, shard: str) -> dict[str, list[dict]] | None:
        """The selection of a web part's shard (None for any other shard)."""
        return selected_by_key(self.selections[shard]) if shard in self.selections else None


def joiner(dataset_dir: str | Path, manifest: dict) -> Joiner:
    """The joiner of a selection dataset."""
    round_ = manifest["selection"]["round"]
    return Joiner({p["url"]: storage.join(dataset_dir, p["selection"]["name"])
                   for p in manifest["parts"] if p["kind"] == "web"},
                  {p["url"]: round_ for p in manifest["parts"] if p["kind"] == "human"})


def iter_selected_samples(dataset_dir: str | Path, manifest: dict) -> Iterator[tuple[str, dict]]:
    """(part URL, raw sample) of a selection dataset, in manifest order."""
    join = joiner(dataset_dir, manifest)
    for part in manifest["parts"]:
        yield from part_samples(join, part["url"])


def part_samples(join: Joiner, url: str, read_from: str | None = None) -> Iterator[tuple[str, dict]]:
    """(part URL, sample) of one part of a selection dataset: its shard read once (from `read_from`, when the URL
    as recorded is relative to another working directory), joined."""
    table = join.table(url)
    for raw in iter_tar_samples(read_from or url):
        yield from ((url, s) for s in join.samples(url, raw, table))


@dataclass(frozen=True)
class TrainingData:
    """What a training loader reads: shard URLs, how to join them, and the sample count."""

    shards: list[str]
    joiner: Joiner
    samples: int


def training_data(dataset_dirs: list[str], limits: IngestConfig) -> TrainingData:
    """The shards of finished datasets (ours, registered web sets or selections) for a training loader;
    `limits` are the caption rules a registered web set's samples are read by."""
    shards, selections, human, web, samples = [], {}, {}, set(), 0
    for d in dataset_dirs:
        manifest = read_manifest(d, (FORMAT, SELECTION_FORMAT, WEB_FORMAT))
        samples += manifest["samples"]
        if manifest["format"] == SELECTION_FORMAT:
            shards += [p["url"] for p in manifest["parts"]]
            join = joiner(d, manifest)
            selections.update(join.selections)
            human.update(join.human)
        elif manifest["format"] == WEB_FORMAT:
            urls = [s.url for s in web_shards(d)]
            shards += urls
            web.update(urls)
        else:
            shards += [storage.join(d, s["name"]) for s in manifest["shards"]]
    return TrainingData(shards, Joiner(selections, human, frozenset(web), limits), samples)
