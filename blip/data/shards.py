"""Datasets as a folder of webdataset shards plus manifest.json, written atomically.

A shard is written under a temporary name, fsynced, then renamed, so a reader never sees half a
shard. The manifest is written last (same way): a folder without one is an unfinished dataset and
every reader refuses it. Readers find shards through the manifest only, never by globbing.
Shards are byte-reproducible: fixed member order, mtime 0, fixed owner, sorted JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import webdataset as wds
from webdataset.tariterators import base_plus_ext

MANIFEST = "manifest.json"
FORMAT = "blip-shards/1"
SHARD_PATTERN = "shard-{:06d}.tar"


class IncompleteDataset(FileNotFoundError):
    """A dataset folder without a manifest: its writer did not finish."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    # a name of this writer's own: several processes may commit the same file at once (a CapFilt shard
    # finished by both a slow rank and the one that took it over); each renames whole bytes into place
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_sample(key: str, jpeg: bytes, caption: str, meta: dict) -> dict:
    """A webdataset sample dict with our fixed encoding (utf-8 text, key-sorted JSON)."""
    return {"__key__": key, "jpg": jpeg, "txt": caption.encode("utf-8"),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}


def write_shard(path: Path, samples: list[dict]) -> dict:
    """Write encoded samples to one tar atomically; returns its manifest entry."""
    buf = io.BytesIO()
    writer = wds.TarWriter(buf, mtime=0.0, encoder=False)
    for sample in samples:
        writer.write(sample)
    writer.close()
    atomic_write_bytes(path, buf.getvalue())
    return {"name": path.name, "samples": len(samples), "bytes": len(buf.getvalue()),
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}


class DatasetWriter:
    """Stream samples into numbered shards of `shard_size`; `finish` writes the manifest."""

    def __init__(self, out_dir: str | Path, shard_size: int):
        self.out_dir = Path(out_dir)
        self.shard_size = shard_size
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # from now on the folder is unfinished: drop the old manifest first, then old shards
        (self.out_dir / MANIFEST).unlink(missing_ok=True)
        for old in list(self.out_dir.glob("shard-*.tar")) + list(self.out_dir.glob(".*.tmp")):
            old.unlink()
        self.shards: list[dict] = []
        self._pending: list[dict] = []

    def write(self, key: str, jpeg: bytes, caption: str, meta: dict) -> None:
        """Add one sample; a full shard is committed to disk at once."""
        self._pending.append(encode_sample(key, jpeg, caption, meta))
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            path = self.out_dir / SHARD_PATTERN.format(len(self.shards))
            self.shards.append(write_shard(path, self._pending))
            self._pending = []

    def abort(self) -> None:
        """Remove every shard this writer committed: the run failed, nothing of it may be read."""
        for entry in self.shards:
            (self.out_dir / entry["name"]).unlink(missing_ok=True)
        self.shards, self._pending = [], []

    def finish(self, fields: dict) -> dict:
        """Commit the last shard and write manifest.json (the dataset's 'done' mark)."""
        self._flush()
        manifest = {"format": FORMAT, "samples": sum(s["samples"] for s in self.shards),
                    "shards": self.shards, **fields}
        atomic_write_json(self.out_dir / MANIFEST, manifest)
        return manifest


def read_manifest(dataset_dir: str | Path) -> dict:
    """The manifest of a finished dataset; IncompleteDataset if its writer never finished."""
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise IncompleteDataset(
            f"{dataset_dir}: no {MANIFEST}, so this dataset is unfinished (an interrupted run?). "
            "Re-run the stage that writes it (e.g. `dvc repro`).")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def shard_paths(dataset_dir: str | Path) -> list[str]:
    """Paths of a finished dataset's shards, in manifest order."""
    return [str(Path(dataset_dir) / s["name"]) for s in read_manifest(dataset_dir)["shards"]]


def iter_samples(dataset_dir: str | Path) -> Iterator[dict]:
    """Raw samples (key, jpg bytes, txt str, json dict) of a finished dataset, in order."""
    for path in shard_paths(dataset_dir):
        for sample in iter_tar_samples(path):
            yield {"__key__": sample["__key__"], "jpg": sample.get("jpg"),
                   "txt": sample["txt"].decode("utf-8"), "json": json.loads(sample["json"])}


def iter_tar_samples(path: str | Path) -> Iterator[dict]:
    """Group a tar's members into samples by key (webdataset's rule), streaming."""
    current: dict | None = None
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            key, ext = base_plus_ext(member.name)
            if not member.isfile() or key is None:
                continue
            data = tar.extractfile(member).read()
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
    if current is not None:
        yield current


def verify_dataset(dataset_dir: str | Path) -> list[str]:
    """Check every shard against the manifest (exists, sha256, sample count); returns problems."""
    manifest = read_manifest(dataset_dir)
    problems = []
    for entry in manifest["shards"]:
        path = Path(dataset_dir) / entry["name"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest")
            continue
        n = sum(1 for _ in iter_tar_samples(path))
        if n != entry["samples"]:
            problems.append(f"{path}: {n} samples, manifest says {entry['samples']}")
    total = sum(s["samples"] for s in manifest["shards"])
    if total != manifest["samples"]:
        problems.append(f"{dataset_dir}: shards hold {total} samples, manifest says {manifest['samples']}")
    return problems
