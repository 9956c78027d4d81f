"""Karpathy-split JSON (COCO, Flickr30k) + an image root -> the human-annotated dataset, in bounded memory.

Two passes. The first streams the JSON (ijson: the document is never held whole) into an index on
local disk: each image once, in the order first met, with its split, id and captions. BLIP's form has
one row per caption, and a caption row may come anywhere in the file, so grouping needs the whole file;
sqlite does that on disk. The second pass reads the index image by image and streams each image through
clean-up into its split's shards: memory holds one pending shard per split, whatever the dataset's size.

The splits commit together. Every split's old manifest goes before the first new shard is written and
the new manifests are written last, so a killed run leaves no readable split of the old version beside
one of the new (a JSON that cannot be read fails before anything is touched).
"""

from __future__ import annotations

import codecs
import json
import sqlite3
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import ijson

from blip.config import IngestConfig
from blip.data import storage
from blip.data.images import ImageError, clean_image
from blip.data.ingest import IngestError, Tally, caption_list, image_fields, unsafe_name
from blip.data.shards import DatasetWriter, atomic_write_json, restore, unfinish

SPLITS = ("train", "val", "test")


class _OtherSplit(ValueError):
    """A row that lists an image already read in another split."""


class KarpathyIndex:
    """Images with their split, id and captions, grouped on disk (sqlite) in the order first met."""

    def __init__(self, folder: str | Path):
        self.db = sqlite3.connect(Path(folder) / "karpathy-index.sqlite")
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                              "CREATE TABLE images (n INTEGER PRIMARY KEY, image TEXT UNIQUE, split TEXT, image_id TEXT);"
                              "CREATE TABLE captions (n INTEGER, caption TEXT);")
        self.images = 0

    def add(self, image: str, split: Any, image_id: Any, captions: list) -> None:
        """Record an image's row (more captions for an image already met are added to its own)."""
        found = self.db.execute("SELECT n, split FROM images WHERE image = ?", (image,)).fetchone()
        if found is None:
            n = self.images
            self.db.execute("INSERT INTO images VALUES (?, ?, ?, ?)", (n, image, json.dumps(split), json.dumps(image_id)))
            self.images += 1
        elif json.loads(found[1]) != split:
            raise _OtherSplit(f"{image} is in split {json.loads(found[1])!r} already, this row says {split!r}")
        else:
            n = found[0]
        self.db.executemany("INSERT INTO captions VALUES (?, ?)", [(n, json.dumps(c)) for c in captions])

    def entries(self) -> Iterator[dict]:
        """{image, split, image_id, captions} per image, in the order first met."""
        self.db.execute("CREATE INDEX IF NOT EXISTS by_image ON captions (n)")
        for n, image, split, image_id in self.db.execute("SELECT n, image, split, image_id FROM images ORDER BY n"):
            rows = self.db.execute("SELECT caption FROM captions WHERE n = ? ORDER BY rowid", (n,))
            yield {"image": image, "split": json.loads(split), "image_id": json.loads(image_id),
                   "captions": [json.loads(c) for (c,) in rows]}


def read_karpathy(json_path: str | Path, tally: Tally, folder: str | Path,
                  default_split: str | None = None) -> KarpathyIndex:
    """Index Karpathy's dataset_*.json or BLIP's list form into `folder`; rows that cannot be read (not an
    object, no image or file name, a sentence without text) are skipped and counted in `tally` as
    `malformed_row`, named by the file and row number; a row that puts an image already read into another
    split is skipped as `image_in_two_splits` (the image stays in its first split only: never in a
    training and an evaluation split at once)."""
    index = KarpathyIndex(folder)
    for i, (row, read_row) in enumerate(_rows(json_path)):
        try:
            if not isinstance(row, dict):
                raise ValueError(f"a {type(row).__name__}, not an object")
            read_row(row, index, default_split, tally)
        except _OtherSplit as e:
            tally.seen += 1
            tally.skip(f"{json_path}#{i}", "image_in_two_splits", str(e))
        except (KeyError, TypeError, ValueError) as e:
            tally.seen += 1
            detail = f"no {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            tally.skip(f"{json_path}#{i}", "malformed_row", detail)
    index.db.commit()
    return index


def _rows(json_path: str | Path) -> Iterator[tuple[Any, Callable]]:
    """(row, its reader) per row of either JSON form, streamed; a ValueError naming the file if it is not
    UTF-8 JSON of either form."""
    try:
        with storage.open_read(json_path) as raw:
            events = ijson.parse(_Utf8Checked(raw), use_float=True)
            _, first, _ = next(events, ("", None, None))
            if first == "start_array":  # BLIP's coco_karpathy_*.json: one row per caption or per image
                prefix, read_row, found = "item", _blip_row, True
            elif first == "start_map":  # dataset_coco.json / dataset_flickr30k.json
                prefix, read_row, found = "images.item", _karpathy_row, False
            else:
                raise ValueError(f"{json_path}: neither Karpathy's {{'images': [...]}} form nor a list of "
                                 "{'image', 'caption'} rows")
            for current, event, value in events:
                if current == "images" and event == "start_array" and prefix == "images.item":
                    found = True
                if current != prefix:
                    continue
                if event in ("start_map", "start_array"):
                    builder, end = ijson.ObjectBuilder(), event.replace("start", "end")
                    while (current, event) != (prefix, end):
                        builder.event(event, value)
                        current, event, value = next(events)
                    yield builder.value, read_row
                else:
                    yield value, read_row
    except UnicodeDecodeError as e:
        raise ValueError(f"{json_path}: not UTF-8 text ({e}); convert it to UTF-8 first") from None
    except ijson.JSONError as e:
        message = e.args[0].decode("utf-8", "replace") if isinstance(e.args[0], bytes) else str(e.args[0])
        raise ValueError(f"{json_path}: not valid JSON ({message.strip().splitlines()[0]})") from None
    if not found:
        raise ValueError(f"{json_path}: neither Karpathy's {{'images': [...]}} form nor a list of "
                         "{'image', 'caption'} rows")


class _Utf8Checked:
    """A binary stream that raises UnicodeDecodeError, with the byte's position, where it is not UTF-8."""

    def __init__(self, stream):
        self.stream, self.decoder, self.position = stream, codecs.getincrementaldecoder("utf-8")(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise UnicodeDecodeError(e.encoding, e.object, e.start, e.end,
                                     f"{e.reason} near byte {self.position + e.start}") from None
        self.position += len(data)
        return data


def _karpathy_row(im: dict, index: KarpathyIndex, default_split: str | None, tally: Tally) -> None:
    path = str(PurePosixPath(str(im.get("filepath", ""))) / _text(im["filename"], "filename"))
    sentences = im.get("sentences", [])
    if not isinstance(sentences, list) or not all(isinstance(x, dict) for x in sentences):
        raise ValueError("'sentences' is not a list of objects")
    captions = [x["raw"] for x in sentences if "raw" in x]
    tally.captions_dropped["sentence_without_raw"] += len(sentences) - len(captions)
    split = "train" if im.get("split") == "restval" else im.get("split", default_split)
    index.add(path, split, im.get("cocoid", im.get("imgid", path)), captions)


def _blip_row(row: dict, index: KarpathyIndex, default_split: str | None, tally: Tally) -> None:
    image = _text(row["image"], "image")
    captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
    index.add(image, row.get("split", default_split), row.get("image_id", image), captions)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{field}' is {value!r}, not a file name")
    return value


class _SplitOutput:
    """One split's shards, and its karpathy.json streamed to a local file until the split commits."""

    def __init__(self, out_dir: str, split: str, shard_size: int, scratch: str):
        self.folder, self.split, self.shard_size = storage.join(out_dir, split), split, shard_size
        self.writer: DatasetWriter | None = None  # made at the first sample: a failed run creates no folder
        self.annotations_path = Path(scratch) / f"{split}-karpathy.json"
        self.annotations = open(self.annotations_path, "w", encoding="utf-8")
        self.samples = self.texts = 0

    def add(self, entry: dict, img, dataset: str) -> None:
        """Write one image with its captions."""
        self.writer = self.writer or DatasetWriter(self.folder, self.shard_size)
        key = f"human-{self.split}-{self.samples:07d}"
        meta = {"source": "human", "dataset": dataset, "split": self.split, "image": entry["image"],
                "image_id": entry["image_id"], "captions": entry["captions"], **image_fields(img)}
        self.writer.write(key, img.jpeg, entry["captions"][0], meta)
        record = {"caption": entry["captions"], "image": key, "image_id": entry["image_id"]}
        self.annotations.write(("[\n" if not self.samples else ",\n") + json.dumps(record, sort_keys=True))
        self.samples += 1
        self.texts += len(entry["captions"])

    def abort(self) -> None:
        """Remove what this run wrote (shards an older version holds stay)."""
        self.annotations.close()
        if self.writer is not None:
            self.writer.abort()

    def finish(self, fields: dict) -> dict:
        """Commit: karpathy.json, the last shard, then the manifest."""
        self.annotations.write("]\n" if self.samples else "[]\n")
        self.annotations.close()
        self.writer = self.writer or DatasetWriter(self.folder, self.shard_size)
        storage.put_file(self.annotations_path, storage.join(self.folder, "karpathy.json"))
        return self.writer.finish({"split": self.split, "by_source": {"human": self.samples}, "texts": self.texts,
                                   **fields})


def ingest_karpathy(json_path: str | Path, image_root: str | Path, out_dir: str | Path, cfg: IngestConfig,
                    dataset: str, default_split: str | None = None) -> dict[str, dict]:
    """Karpathy JSON + image root -> out_dir/<split>/ shards + manifest (+ karpathy.json for evaluation)."""
    root, out_dir = str(image_root), str(out_dir)
    run = Tally()  # the whole run: the skip threshold applies to it
    with tempfile.TemporaryDirectory(prefix="karpathy-") as scratch:
        index = read_karpathy(json_path, run, scratch, default_split)
        # from here on no split of the old version is readable until every new one commits (or this run fails,
        # and puts the old ones back)
        previous = {s: unfinish(storage.join(out_dir, s)) for s in SPLITS} if index.images else {}
        tallies = {s: Tally() for s in SPLITS}  # per split: what each split's manifest reports
        outputs = {s: _SplitOutput(out_dir, s, cfg.shard_size, scratch) for s in SPLITS}
        for entry in index.entries():
            if entry["split"] not in SPLITS:
                run.seen += 1
                run.skip(str(entry["image"]), "unknown_split", repr(entry["split"]))
                continue
            tally = tallies[entry["split"]]
            tally.seen += 1
            img = _image(entry, root, cfg, tally)
            if img is not None:
                outputs[entry["split"]].add(entry, img, dataset)
        index.db.close()
        for tally in tallies.values():
            run.absorb(tally)
        try:
            run.check(cfg, f"ingesting {json_path}")
            if not any(o.samples for o in outputs.values()):
                raise IngestError(f"{json_path}: no usable image-caption pair among {run.seen} entries "
                                  f"(skipped: {dict(run.skipped)}); nothing was written")
        except IngestError:
            for split, output in outputs.items():
                output.abort()
                restore(storage.join(out_dir, split), previous.get(split))
            raise
        manifests = {s: o.finish({"dataset": dataset, "source_json": str(json_path), **tallies[s].fields()})
                     for s, o in outputs.items()}
    atomic_write_json(storage.join(out_dir, "ingest_report.json"), run.fields())
    return manifests


def _image(entry: dict, root: str, cfg: IngestConfig, tally: Tally):
    """The entry's cleaned image, its captions cleaned in place; None (skipped and counted) if unusable."""
    origin = str(entry["image"])
    path = safe_image_path(root, origin)
    if path is None:
        tally.skip(origin, "path_escapes_root", f"outside {root}")
        return None
    if not storage.exists(path):
        tally.skip(origin, "missing_file")
        return None
    entry["captions"] = caption_list(entry["captions"], cfg, tally)
    if not entry["captions"]:
        tally.skip(origin, "no_valid_caption")
        return None
    try:
        img = clean_image(storage.read_bytes(path), cfg)
    except ImageError as e:
        tally.skip(origin, e.reason, e.detail)
        return None
    tally.count_fixes(img.fixes)
    return img


def image_at(root: str, rel: str, cfg: IngestConfig, tally: Tally, samples: int = 1):
    """The cleaned image at `rel` under `root`; None, with the skip counted for `samples` samples, if it is
    outside the root, missing or unusable."""
    path = safe_image_path(root, rel)
    if path is None or not storage.exists(path):
        tally.skip(rel, "missing_file" if path else "path_escapes_root", samples=samples)
        return None
    try:
        img = clean_image(storage.read_bytes(path), cfg)
    except ImageError as e:
        tally.skip(rel, e.reason, e.detail, samples=samples)
        return None
    tally.count_fixes(img.fixes)
    return img


def safe_image_path(root: str, rel: str) -> str | None:
    """The image's path or URL under `root`; None when `rel` would leave it."""
    if storage.is_remote(root):
        return None if unsafe_name(rel) else storage.join(root, rel)
    base = storage.local_path(root).resolve()
    path = (base / rel).resolve()
    return str(path) if path.is_relative_to(base) and not PurePosixPath(rel).is_absolute() else None
