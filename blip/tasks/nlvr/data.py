"""NLVR2 datasets: NLVR2's JSON lines and the BLIP release's nlvr_*.json, as shards (the built-in world writes the
same).

One sample per (image pair, statement): the first image as `.jpg`, the second as `.right.jpg`, the statement as
`.txt`, and `{"label": 1 | 0, "identifier", "images"}` as `.json` (NLVR2 has about four statements per pair;
the images are stored with each). The extra pre-training step's pairs (a caption of the first image, label 0,
of the second, 1, or of neither, 2) are the world's (`blip/world/nlvr.py`): NLVR2 has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.karpathy import image_at
from blip.data.shards import DatasetWriter


class NLVRFormatError(ValueError):
    """A file that is none of the NLVR2 forms read here."""


def _label(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    raise NLVRFormatError(f"{where}: label {value!r} is neither true nor false")


def _rows(path: str) -> list[dict]:
    """A file's entries: a JSON list (the release) or JSON lines (NLVR2)."""
    text = storage.read_bytes(path).decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    except ValueError as e:
        raise NLVRFormatError(f"{path}: neither a JSON list nor JSON lines ({e})") from e
    if not all(isinstance(r, dict) for r in data):
        raise NLVRFormatError(f"{path}: its entries are not JSON objects")
    return data


def read_nlvr_files(files: list[str]) -> Iterator[dict]:
    """Records {images: [first, second], sentence, label, identifier} from NLVR2 (images found as
    <split>/[<directory>/]<identifier minus its last part>-img0.png, -img1.png) or the release's lists."""
    for f in files:
        for i, r in enumerate(_rows(f)):
            where = f"{f}, entry {i}"
            try:
                if "images" in r:  # the release: image paths given
                    images, identifier = list(r["images"]), r.get("identifier", f"{Path(f).stem}-{i}")
                else:  # NLVR2: the images follow from the identifier, split-set-pair-sentence
                    identifier = r["identifier"]
                    prefix, split = identifier.rsplit("-", 1)[0], identifier.split("-")[0]
                    folder = f"{split}/{r['directory']}" if "directory" in r else split
                    images = [f"{folder}/{prefix}-img0.png", f"{folder}/{prefix}-img1.png"]
                yield {"images": images, "sentence": r["sentence"], "label": _label(r.get("label"), where),
                       "identifier": identifier}
            except (KeyError, ValueError, AttributeError) as e:
                if isinstance(e, NLVRFormatError):
                    raise
                raise NLVRFormatError(f"{where}: not an NLVR2 or release entry (no usable {e}): "
                                      f"{str(r)[:200]}") from None


def ingest_nlvr(files: list[str], image_root: str, out_dir: str | Path, cfg: IngestConfig, shard_size: int) -> dict:
    """Shards + manifest of the files' statements; a pair with a missing or broken image is skipped and counted."""
    tally, writer = Tally(), DatasetWriter(out_dir, shard_size)
    try:
        for i, r in enumerate(read_nlvr_files(files)):
            tally.seen += 1
            first = image_at(image_root, r["images"][0], cfg, tally)
            second = image_at(image_root, r["images"][1], cfg, tally) if first is not None else None
            if second is not None:
                writer.write(f"{i:09d}", first.jpeg, r["sentence"],
                             {k: r[k] for k in ("label", "identifier", "images")}, extra={"right.jpg": second.jpeg})
        tally.check(cfg, f"NLVR2 ingest of {', '.join(files)}")
        return writer.finish({"kind": "nlvr", **tally.fields()})
    except BaseException:
        writer.abort()
        raise
