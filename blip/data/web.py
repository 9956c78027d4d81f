"""The web set used where it is: a manifest over the user's img2dataset shards, never a copy.

A billion web pairs are tens of TB in an object store. Copying them into a format of ours would cost
days of CPU and the same again in storage, and every later stage reads each image anyway. So the web
"dataset" is only `manifest.json`: each shard's URL, byte size, content tag (an object store's ETag
from its listing, or a local file's sha256) and sample count (img2dataset's `<shard>_stats.json`, or
counted once here when a shard has none). DVC versions that manifest, never the shards.

Bad samples are met where they are read (CapFilt decodes every image; the training loader and the
contracts read them too), through one set of rules, `parse_web_sample` then `images.open_image`, and
counted by reason as ingestion counts them: an unusable caption, image or member is a skip, never the
end of a run.

    blip ingest web --shards 's3://bucket/laion/{00000..09999}.tar' --out data/web   # registers, copies nothing
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import IngestError, Tally, unsafe_name
from blip.data.shards import MANIFEST, atomic_write_json, member_key, read_manifest
from blip.data.text import CaptionError, prepare_caption

WEB_FORMAT = "blip-web/1"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


# ------------------------------------------------------------------------------------ finding shards

def expand_shards(spec: str | list[str]) -> list[dict]:
    """The shards a folder, a glob ('web/*.tar', 's3://b/web/*.tar') or a list names, sorted, each with its
    byte size and (object stores) content tag, from one listing per folder: nothing is read."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    found: list[dict] = []
    for s in specs:
        s = storage.check_url(s)
        if storage.is_remote(s):
            folder, pattern = (s.rsplit("/", 1) if s.endswith(".tar") or "*" in s else (s.rstrip("/"), "*.tar"))
            found += storage.listing(folder, pattern)
        else:
            paths = sorted(glob.glob(str(Path(s) / "*.tar"))) if Path(s).is_dir() else sorted(glob.glob(s))
            found += [{"url": str(Path(p).resolve()), "bytes": Path(p).stat().st_size} for p in paths
                      if Path(p).is_file()]
    if not found:
        raise FileNotFoundError(f"no .tar shards found for {spec!r}: give a folder of img2dataset shards, a glob "
                                "or a list of .tar files (local or s3://...)")
    return found


def stats_successes(url: str) -> int | None:
    """The sample count img2dataset recorded for a shard (`00000_stats.json` beside `00000.tar`), if any."""
    stats = url[:-len(".tar")] + "_stats.json" if url.endswith(".tar") else None
    try:
        value = json.loads(storage.read_bytes(stats))["successes"] if stats and storage.exists(stats) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _scan(url: str, digest) -> int:
    """Samples in a shard counted from its tar headers (and its bytes fed to `digest` on the way)."""
    class Hashing:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            if digest is not None:
                digest.update(data)
            return data

    keys, last = 0, None
    with storage.open_read(url) as raw:
        stream = Hashing(raw)
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    key, _ = member_key(member.name)
                    if member.isfile() and key is not None and key != last:
                        keys, last = keys + 1, key
        except (tarfile.TarError, EOFError, OSError):
            pass  # a broken shard: the samples before the break are what it holds
        while digest is not None and stream.read(1 << 20):  # the rest of the bytes (tar padding), for the digest
            pass
    return keys


def register_shard(entry: dict) -> dict:
    """One shard's manifest entry: URL, bytes, content tag or sha256, samples (from its _stats.json, or counted).
    A Ray task: at a billion pairs, 100k of these run across the cluster."""
    url = entry["url"]
    samples, counted_by = stats_successes(url), "stats"
    digest = None if "etag" in entry else hashlib.sha256()
    if samples is None:
        samples, counted_by = _scan(url, digest), "scan"
    elif digest is not None:
        with storage.open_read(url) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    check = {"etag": entry["etag"]} if "etag" in entry else {"sha256": digest.hexdigest()}
    return {"url": url, "bytes": entry["bytes"], "samples": samples, "counted_by": counted_by, **check}


def register_web(spec: str | list[str], out_dir: str | Path, relative_to_manifest: bool = False,
                 on_ray: bool = True) -> dict:
    """Register img2dataset shards where they are: write `out_dir/manifest.json` over them (nothing copied).

    The per-shard work (a stats file read, or a count, and a local file's sha256) runs as Ray tasks. The manifest
    is one atomic write at the end: a registration that fails or is killed leaves the folder's previous manifest
    as it was. With `relative_to_manifest`, local shards are recorded relative to the manifest's folder (the
    built-in world, which lives in the workspace beside it); otherwise every URL is absolute.
    """
    out_dir = str(out_dir)
    listed = expand_shards(spec)
    if on_ray:
        from blip.cluster import map_ordered, ray_session

        with ray_session():
            shards = map_ordered(register_shard, listed)
    else:  # a machine without Ray (the GPU check kit): the same per-shard function, one shard after another
        shards = [register_shard(entry) for entry in listed]
    if sum(s["samples"] for s in shards) == 0:
        raise IngestError(f"{spec}: {len(shards)} shard(s) but no sample in any of them; nothing to register")
    storage.make_folder(out_dir)
    if relative_to_manifest and not storage.is_remote(out_dir):
        for s in shards:
            if not storage.is_remote(s["url"]):
                s["url"] = Path(os.path.relpath(s["url"], Path(out_dir).resolve())).as_posix()
    samples = sum(s["samples"] for s in shards)
    manifest = {"format": WEB_FORMAT, "samples": samples, "by_source": {"web": samples}, "shards": shards,
                "bytes": sum(s["bytes"] for s in shards), "registered_from": spec,
                "counted_by": {k: sum(s["counted_by"] == k for s in shards) for k in ("stats", "scan")}}
    atomic_write_json(storage.join(out_dir, MANIFEST), manifest)
    return manifest


@dataclass(frozen=True)
class WebShard:
    """One registered shard, as readers need it."""

    url: str
    samples: int
    bytes: int
    check: dict   # {"etag": ...} or {"sha256": ...}


def web_shards(dataset_dir: str | Path) -> list[WebShard]:
    """The shards of a registered web set, URLs resolved, in manifest order."""
    manifest = read_manifest(dataset_dir, (WEB_FORMAT,))
    return [WebShard(storage.resolve(str(dataset_dir), s["url"]), s["samples"], s["bytes"],
                     {k: s[k] for k in ("etag", "sha256") if k in s}) for s in manifest["shards"]]


# ------------------------------------------------------------------------------------ reading samples

def read_web_shard(path: str, tally: Tally, max_member_bytes: int,
                   expected: int | None = None) -> Iterator[tuple[str, dict]]:
    """(key, members-by-extension) per sample of one shard, streamed once; a truncated or broken tar is
    counted, by the shard's `expected` sample count (its manifest's) or else img2dataset's `_stats.json`.

    Members are grouped by key, webdataset's rule. A member over `max_member_bytes` is not read (it is
    marked `__oversized__`); a key met again after its sample ended, or an extension met twice in one
    sample, marks the sample `__duplicate__`: the caller skips and counts both.
    """
    current_key, current, seen, read = None, {}, set(), 0
    try:
        with storage.open_read(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member_key(member.name)
                if key is None or unsafe_name(member.name):
                    key, ext = f"unsafe:{key or member.name}", ext or ""
                if key != current_key:
                    if current_key is not None:
                        read += 1
                        yield current_key, current
                    current_key, current = key, ({"__duplicate__": True} if key in seen else {})
                    seen.add(key)
                ext = ext.lower()
                if ext in current:
                    current["__duplicate__"] = True
                if member.size > max_member_bytes:
                    current["__oversized__"] = f"{member.name}: {member.size} bytes"
                    continue  # a streamed tar skips the unread data
                current[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        # the sample being read when the tar broke is incomplete: dropped, with every one after it.
        # img2dataset's <shard>_stats.json says how many the shard held; without it, one is counted
        expected = expected if expected is not None else stats_successes(path)
        lost = max(1, expected - read) if expected is not None else 1
        _count_lost(tally, path, lost, f"{type(e).__name__}: {e}")
        return
    if current_key is not None:
        read += 1
        yield current_key, current
    expected = expected if expected is not None else stats_successes(path)
    if expected is not None and read < expected:  # cut at a member boundary: the tar reads as complete
        _count_lost(tally, path, expected - read, f"the shard ends after {read} samples; its manifest says {expected}")


def _count_lost(tally: Tally, path: str, lost: int, detail: str) -> None:
    """Samples a broken shard held but we could not read: seen, and skipped as broken_shard."""
    tally.seen += lost
    tally.skip(path, "broken_shard", detail, samples=lost)


def shard_problem(key: str, members: dict) -> tuple[str, str] | None:
    """(reason, detail) when `read_web_shard` marked the sample unusable as read; None otherwise."""
    if key.startswith("unsafe:"):
        return "unsafe_key", "member path is absolute or climbs out of the folder"
    if "__oversized__" in members:
        return "oversized_member", f"{members['__oversized__']} > ingest.max_member_bytes"
    if members.get("__duplicate__"):
        return "duplicate_key", "the key or one of its files appears twice in the shard"
    return None


@dataclass
class WebSample:
    """A web sample's parts, its text cleaned; `skip` names why it is unusable (the image is checked later,
    when it is decoded)."""

    key: str
    skip: str | None = None
    detail: str = ""
    image: bytes = b""        # the image file's bytes, whatever its format
    text: str = ""
    meta: dict = field(default_factory=dict)   # img2dataset's JSON record (url, ...)
    fixes: tuple[str, ...] = ()                # normalisations so far (caption_truncated, bad_json_metadata)


def parse_web_sample(key: str, members: dict, cfg: IngestConfig) -> WebSample:
    """A raw img2dataset sample (its members by extension) as a WebSample, or the reason it is unusable."""
    problem = shard_problem(key, members)
    if problem is not None:
        return WebSample(key, *problem)
    image_ext = next((e for e in IMAGE_EXTS if e in members), None)
    if image_ext is None:
        return WebSample(key, "missing_image", f"members: {sorted(m for m in members if not m.startswith('__'))}")
    meta, fixes = {}, []
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except (UnicodeDecodeError, json.JSONDecodeError):
            fixes.append("bad_json_metadata")
        if not isinstance(meta, dict):
            meta, fixes = {}, fixes + ["bad_json_metadata"]
    raw = members.get("txt", meta.get("caption"))
    if raw is None:
        return WebSample(key, "missing_caption")
    if not isinstance(raw, (str, bytes)):  # a number, list or object is not a caption: never str() it
        return WebSample(key, "caption_not_text", f"a {type(raw).__name__} in the JSON metadata")
    try:
        text, cut = prepare_caption(raw, cfg.max_words, cfg.max_caption_chars)
    except CaptionError as e:
        return WebSample(key, e.reason, e.detail)
    return WebSample(key, image=members[image_ext], text=text, meta=meta,
                     fixes=tuple(fixes) + (("caption_truncated",) if cut else ()))


def web_provenance(sample: WebSample, shard: str) -> dict:
    """A web sample's metadata as our datasets carry it: its source URL, and its key and shard as the user has
    them."""
    return {"source": "web", "url": sample.meta.get("url"), "orig_key": sample.key, "orig_shard": shard}


def web_samples(dataset_dir: str | Path, limits: IngestConfig) -> Iterator[tuple[str, WebSample]]:
    """(shard URL, parsed sample) of every sample of a registered web set, in order, skips included."""
    for shard in web_shards(dataset_dir):
        for key, members in read_web_shard(shard.url, Tally(), limits.max_member_bytes, shard.samples):
            yield shard.url, parse_web_sample(key, members, limits)
