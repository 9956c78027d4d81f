"""Datasets as a folder of webdataset shards plus manifest.json, written atomically, locally or to
object storage (every path may be an fsspec URL, see storage.py).

A shard is written atomically (storage.write_bytes), so a reader never sees half a shard. The
manifest is written last (same way): a folder without one is an unfinished dataset and every reader
refuses it. Readers find shards through the manifest only, never by globbing.
Shards are byte-reproducible: fixed member order, mtime 0, fixed owner, sorted JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Iterator

from blip.data import storage

MANIFEST = "manifest.json"
FORMAT = "blip-shards/1"
# content-addressed: a shard's name carries its sha256, so a new version of a dataset never overwrites a
# shard that an older manifest (or a selection built on it) still references
SHARD_PATTERN = "shard-{:06d}-{{sha}}.tar"


class IncompleteDataset(FileNotFoundError):
    """A dataset folder without a manifest: its writer did not finish."""


def member_key(name: str) -> tuple[str | None, str | None]:
    """A tar member's (sample key, extension), by webdataset's rule: the key is the name up to the first dot of
    its last path part, the extension the rest (`a/000123.seg.png` -> `a/000123`, `seg.png`); (None, None) for a
    name whose last part has no dot or starts with one."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None, None
    return (f"{folder}/{stem}" if folder else stem), ext


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (locally or to object storage)."""
    storage.write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def encode_sample(key: str, jpeg: bytes, caption: str, meta: dict) -> dict:
    """A webdataset sample dict with our fixed encoding (utf-8 text, key-sorted JSON)."""
    return {"__key__": key, "jpg": jpeg, "txt": caption.encode("utf-8"),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}


def write_shard(url: str | Path, samples: list[dict]) -> dict:
    """Write encoded samples to one tar atomically ("{sha}" in `url`: the first 16 hex digits of its
    sha256); returns its manifest entry."""
    import webdataset as wds  # imports torch: only writers pay for it, not every reader of manifests

    buf = io.BytesIO()
    writer = wds.TarWriter(buf, mtime=0.0, encoder=False)
    for sample in samples:
        writer.write(sample)
    writer.close()
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    url = str(url).replace("{sha}", digest[:16])
    storage.write_bytes(url, data)
    return {"name": url.rsplit("/", 1)[-1], "samples": len(samples), "bytes": len(data), "sha256": digest}


def unfinish(dataset_dir: str | Path) -> bytes | None:
    """Make a dataset unreadable until it is written anew: its manifest goes, and is returned (for `restore`
    when the new version fails). The shards stay: shards are immutable, and older manifests (or selections
    built on them) may still point at them."""
    path = storage.join(dataset_dir, MANIFEST)
    old = storage.read_bytes(path) if storage.exists(path) else None
    storage.remove(path)
    return old


def restore(dataset_dir: str | Path, manifest: bytes | None) -> None:
    """Put back the manifest `unfinish` took (nothing if there was none): the old version is readable again."""
    if manifest is not None:
        storage.write_bytes(storage.join(dataset_dir, MANIFEST), manifest)


class DatasetWriter:
    """Stream samples into numbered shards of `shard_size`; `finish` writes the manifest."""

    def __init__(self, out_dir: str | Path, shard_size: int):
        self.out_dir = str(out_dir)
        self.shard_size = shard_size
        storage.make_folder(self.out_dir)
        self.previous = unfinish(self.out_dir)
        # what a killed writer left
        for old in storage.names(self.out_dir, ".*.tmp"):
            storage.remove(storage.join(self.out_dir, old))
        self.existing = set(storage.names(self.out_dir, "shard-*.tar"))
        self.shards: list[dict] = []
        self._pending: list[dict] = []

    def write(self, key: str, jpeg: bytes, caption: str, meta: dict, extra: dict[str, bytes] | None = None) -> None:
        """Add one sample (`extra`: more members, e.g. a pair's second image or a clip); a full shard is committed
        to disk at once."""
        sample = {**encode_sample(key, jpeg, caption, meta), **(extra or {})}
        self._pending.append(sample)
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            url = storage.join(self.out_dir, SHARD_PATTERN.format(len(self.shards)))
            self.shards.append(write_shard(url, self._pending))
            self._pending = []

    def abort(self) -> None:
        """The run failed: remove every shard this writer committed (but those an older version holds too), and
        make the older version readable again."""
        for entry in self.shards:
            if entry["name"] not in self.existing:
                storage.remove(storage.join(self.out_dir, entry["name"]))
        self.shards, self._pending = [], []
        restore(self.out_dir, self.previous)

    def finish(self, fields: dict) -> dict:
        """Commit the last shard and write manifest.json (the dataset's 'done' mark)."""
        self._flush()
        manifest = {"format": FORMAT, "samples": sum(s["samples"] for s in self.shards),
                    "shards": self.shards, **fields}
        atomic_write_json(storage.join(self.out_dir, MANIFEST), manifest)
        return manifest


def read_manifest(dataset_dir: str | Path, formats: tuple[str, ...] = (FORMAT,)) -> dict:
    """The manifest of a finished dataset (of one of `formats`); IncompleteDataset if its writer never finished."""
    path = storage.join(dataset_dir, MANIFEST)
    if not storage.exists(path):
        raise IncompleteDataset(
            f"{dataset_dir}: no {MANIFEST}, so this dataset is unfinished (an interrupted run?). "
            "Re-run the stage that writes it (e.g. `dvc repro`).")
    try:
        manifest = json.loads(storage.read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable manifest ({e}); re-run the stage that writes it") from e
    if not isinstance(manifest, dict) or manifest.get("format") not in formats:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: format {found!r}, expected {' or '.join(map(repr, formats))}")
    for name in _file_names(manifest):
        if not plain_name(name):
            raise ValueError(f"{path}: file name {name!r} would lead outside the dataset folder; a manifest "
                             "names its files plainly (this one was not written by us, or was edited)")
    return manifest


def plain_name(name: object) -> bool:
    """A name that stays in its folder: a non-empty string, no separator, not '.' or '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _file_names(manifest: dict) -> list:
    """The names of the files a manifest keeps in its own folder (shards, score tables, selection tables)."""
    entries = [*manifest.get("shards", []), *manifest.get("tables", []),
               *([manifest["calibration"]] if isinstance(manifest.get("calibration"), dict) else []),
               *(p["selection"] for p in manifest.get("parts", []) if isinstance(p, dict) and "selection" in p)]
    # entries that name a file elsewhere carry a `url` instead (a web set's shards, a scores manifest's tables)
    return [e.get("name") if isinstance(e, dict) else e for e in entries
            if not (isinstance(e, dict) and "url" in e and "name" not in e)]


def shard_paths(dataset_dir: str | Path) -> list[str]:
    """Paths of a finished dataset's shards, in manifest order."""
    return [storage.join(dataset_dir, s["name"]) for s in read_manifest(dataset_dir)["shards"]]


def iter_tar_samples(url: str | Path) -> Iterator[dict]:
    """Group a tar's members into samples by key (webdataset's rule), streaming from a file or object store."""
    current: dict | None = None
    with storage.open_read(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            key, ext = member_key(member.name)
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


def content_check(entry: dict) -> dict:
    """What a manifest entry records of its file's content: {"sha256": ...} or an object store's {"etag": ...}."""
    return {k: entry[k] for k in ("sha256", "etag") if k in entry}
