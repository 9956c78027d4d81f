"""`blip materialize`: a selection dataset written as standalone shards, images copied, one Ray task per part."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blip.data import storage
from blip.data.selected import SELECTION_FORMAT, Joiner, joiner, part_samples
from blip.data.shards import FORMAT, MANIFEST, atomic_write_json, read_manifest, restore, unfinish, write_shard

PART_SHARD_PATTERN = "shard-{:06d}-{:04d}-{{sha}}.tar"  # materialized: part i's n-th shard


@dataclass(frozen=True)
class MaterializePart:
    """One part of a selection to write as standalone shards (a Ray task); every path absolute (a Ray worker does
    not share the driver's working directory)."""

    part: int
    url: str                 # the part's shard, as the manifest records it
    read_from: str           # the same, absolute
    joiner: Joiner           # the selection's joiner (its tables' paths absolute)
    out_dir: str
    shard_size: int


def _materialize_part(task: MaterializePart) -> list[dict]:
    """One part's samples, images copied, as shards named by the part (`shard-<part>-<n>-<sha>.tar`)."""
    entries, pending = [], []

    def flush() -> None:
        if pending:
            name = PART_SHARD_PATTERN.format(task.part, len(entries))
            entries.append(write_shard(storage.join(task.out_dir, name), pending))
            pending.clear()

    for _, raw in part_samples(task.joiner, task.url, task.read_from):
        pending.append({k: v for k, v in raw.items() if k in ("__key__", "jpg", "txt", "json")})
        if len(pending) == task.shard_size:
            flush()
    flush()
    return entries


def materialize(dataset_dir: str | Path, out_dir: str | Path, shard_size: int) -> dict:
    """Write a selection dataset as standalone shards (images copied), with the same manifest fields: one Ray
    task per part, each reading its input shard once and writing its own shards straight to the output."""
    from blip.cluster import map_ordered, ray_session

    # absolute: the Ray tasks do not share this process's working directory
    dataset_dir = storage.absolute(storage.check_url(str(dataset_dir)))
    out_dir = storage.absolute(storage.check_url(str(out_dir)))
    manifest = read_manifest(dataset_dir, (SELECTION_FORMAT,))
    storage.make_folder(out_dir)
    previous = unfinish(out_dir)
    join = joiner(dataset_dir, manifest)
    tasks = [MaterializePart(i, p["url"], storage.absolute(p["url"]), join, out_dir, shard_size)
             for i, p in enumerate(manifest["parts"])]
    try:
        with ray_session():
            shards = [entry for part in map_ordered(_materialize_part, tasks) for entry in part]
    except BaseException:
        restore(out_dir, previous)
        raise
    fields = {k: v for k, v in manifest.items() if k not in ("format", "samples", "parts")}
    result = {"format": FORMAT, "samples": sum(s["samples"] for s in shards), "shards": shards, **fields,
              "materialized_from": dataset_dir}
    atomic_write_json(storage.join(out_dir, MANIFEST), result)
    return result
