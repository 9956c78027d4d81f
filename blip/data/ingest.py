"""Ingest real data into the internal form: webdataset shards + manifest.json.

Sources: img2dataset / LAION-style webdataset shards (the web set), here, and COCO / Flickr30k Karpathy
JSON with an image root (the human-annotated set, karpathy.py). Bad samples never crash a run: each is
normalised (counted under `normalised`) or skipped (counted under `skipped`, with examples), and
the run fails, naming the worst files, only when the skipped share passes `max_skip_fraction`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Iterator

from webdataset.tariterators import base_plus_ext

from blip.config import IngestConfig
from blip.data import storage
from blip.data.images import ImageError, clean_image
from blip.data.shards import DatasetWriter
from blip.data.text import CaptionError, prepare_caption

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_MAX_EXAMPLES = 20


class IngestError(RuntimeError):
    """The input cannot make a usable dataset (too many samples skipped, or none usable): it is probably
    not what the user thinks it is."""


class Tally:
    """Counts of what was seen, normalised and skipped, with the files that caused skips."""

    def __init__(self) -> None:
        self.seen = 0
        self.skipped: Counter = Counter()
        self.normalised: Counter = Counter()
        self.captions_dropped: Counter = Counter()
        self.by_file: dict[str, list[str]] = defaultdict(list)

    def skip(self, origin: str, reason: str, detail: str = "", samples: int = 1) -> None:
        self.skipped[reason] += samples
        self.by_file[origin].append(f"{reason}{': ' + detail if detail else ''}"
                                    f"{f' ({samples} samples)' if samples > 1 else ''}")

    def count_fixes(self, fixes: tuple[str, ...]) -> None:
        self.normalised.update(fixes)

    def absorb(self, other: "Tally") -> None:
        """Add another tally's counts (its `seen` included) to this one."""
        self.seen += other.seen
        self.skipped.update(other.skipped)
        self.normalised.update(other.normalised)
        self.captions_dropped.update(other.captions_dropped)
        for f, problems in other.by_file.items():
            self.by_file[f].extend(problems)

    def examples(self) -> list[dict]:
        return [{"file": f, "problems": p[:3]} for f, p in self.worst()[:_MAX_EXAMPLES]]

    def worst(self) -> list[tuple[str, list[str]]]:
        return sorted(self.by_file.items(), key=lambda kv: (-len(kv[1]), kv[0]))

    def fields(self) -> dict:
        return {"inputs_seen": self.seen, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()), "normalised": dict(sorted(self.normalised.items())),
                "captions_dropped": dict(sorted(self.captions_dropped.items())), "skip_examples": self.examples()}

    def check(self, cfg: IngestConfig, what: str) -> None:
        """Raise IngestError, naming the worst files, if the skipped share passes the threshold."""
        total = sum(self.skipped.values())
        if self.seen and total / self.seen > cfg.max_skip_fraction:
            lines = [f"  {f}: {', '.join(p[:3])}{' ...' if len(p) > 3 else ''}" for f, p in self.worst()[:10]]
            raise IngestError(
                f"{what}: skipped {total} of {self.seen} samples ({total / self.seen:.1%}), more than "
                f"ingest.max_skip_fraction={cfg.max_skip_fraction}. Reasons: {dict(self.skipped)}.\n"
                "Worst files:\n" + "\n".join(lines) + "\nFix or remove these inputs, or raise the threshold.")


def caption_list(raw: list, cfg: IngestConfig, tally: Tally) -> list[str]:
    """The usable captions of a list, cleaned; the others counted by reason in `captions_dropped`."""
    kept = []
    for c in raw:
        if not isinstance(c, str):  # a number, list, object or null is not a caption: never str() it
            tally.captions_dropped["caption_not_text"] += 1
            continue
        try:
            text, cut = prepare_caption(c, cfg.max_words, cfg.max_caption_chars)
        except CaptionError as e:
            tally.captions_dropped[e.reason] += 1
            continue
        if cut:
            tally.normalised["caption_truncated"] += 1
        kept.append(text)
    return kept


def image_fields(img) -> dict:
    """A cleaned image's size, fixes and sha1, for a sample's metadata."""
    return {"width": img.width, "height": img.height, "fixes": list(img.fixes),
            "image_sha1": hashlib.sha1(img.jpeg).hexdigest()}


# ------------------------------------------------------------------------------------ web shards

def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard paths or URLs from a list, a glob ('web/*.tar', 's3://b/web/*.tar') or a folder; sorted, so
    order is stable."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for s in specs:
        if storage.is_remote(s):
            folder, pattern = (s.rsplit("/", 1) if s.endswith(".tar") or "*" in s else (s, "*.tar"))
            paths += [storage.join(folder, name) for name in storage.names(folder, pattern)]
        else:
            paths += sorted(glob.glob(str(Path(s) / "*.tar"))) if Path(s).is_dir() else sorted(glob.glob(s))
    if not paths:
        raise FileNotFoundError(f"no .tar shards found for {spec!r}")
    return paths


def unsafe_name(name: str) -> bool:
    """A member or file name that is absolute, climbs out of its folder or holds a backslash."""
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or "\\" in name


def read_web_shard(path: str, tally: Tally, max_member_bytes: int,
                   expected: int | None = None) -> Iterator[tuple[str, dict]]:
    """(key, members-by-extension) per sample of one shard; a truncated or broken tar is counted, by the
    shard's `expected` sample count (a manifest's) or else img2dataset's `<shard>_stats.json`.

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
                key, ext = base_plus_ext(member.name)
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
        expected = expected if expected is not None else _shard_successes(path)
        lost = max(1, expected - read) if expected is not None else 1
        _count_lost(tally, path, lost, f"{type(e).__name__}: {e}")
        return
    if current_key is not None:
        read += 1
        yield current_key, current
    expected = expected if expected is not None else _shard_successes(path)
    if expected is not None and read < expected:  # cut at a member boundary: the tar reads as complete
        _count_lost(tally, path, expected - read, f"the shard ends after {read} samples; its _stats.json "
                                                  f"says {expected}")


def shard_problem(key: str, members: dict) -> tuple[str, str] | None:
    """(reason, detail) when `read_web_shard` marked the sample unusable as read; None otherwise."""
    if key.startswith("unsafe:"):
        return "unsafe_key", "member path is absolute or climbs out of the folder"
    if "__oversized__" in members:
        return "oversized_member", f"{members['__oversized__']} > ingest.max_member_bytes"
    if members.get("__duplicate__"):
        return "duplicate_key", "the key or one of its files appears twice in the shard"
    return None


def _count_lost(tally: Tally, path: str, lost: int, detail: str) -> None:
    """Samples a broken shard held but we could not read: seen, and skipped as broken_shard."""
    tally.seen += lost
    tally.skip(path, "broken_shard", detail, samples=lost)


def _shard_successes(path: str) -> int | None:
    """The sample count img2dataset recorded for a shard (`00000_stats.json` beside `00000.tar`), if any."""
    stats = path[:-len(".tar")] + "_stats.json" if path.endswith(".tar") else None
    try:
        value = json.loads(storage.read_bytes(stats))["successes"] if stats and storage.exists(stats) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ingest_webdataset(shards: str | list[str], out_dir: str | Path, cfg: IngestConfig,
                      source: str = "web") -> dict:
    """img2dataset/LAION-style shards (.jpg/.txt/.json per sample) -> out_dir shards + manifest."""
    tally = Tally()
    writer = DatasetWriter(out_dir, cfg.shard_size)
    n = 0
    for shard in expand_shards(shards):
        for key, members in read_web_shard(shard, tally, cfg.max_member_bytes):
            tally.seen += 1
            origin = f"{shard}:{key}"
            problem = shard_problem(key, members)
            if problem is not None:
                tally.skip(origin, *problem)
                continue
            image_ext = next((e for e in IMAGE_EXTS if e in members), None)
            if image_ext is None:
                tally.skip(origin, "missing_image", f"members: {sorted(members)}")
                continue
            meta_in: dict = {}
            if "json" in members:
                try:
                    meta_in = json.loads(members["json"])
                except (UnicodeDecodeError, json.JSONDecodeError):
                    tally.normalised["bad_json_metadata"] += 1
            raw = members.get("txt", meta_in.get("caption"))
            if raw is None:
                tally.skip(origin, "missing_caption")
                continue
            if not isinstance(raw, (str, bytes)):
                tally.skip(origin, "caption_not_text", f"a {type(raw).__name__} in the JSON metadata")
                continue
            try:
                caption, cut = prepare_caption(raw, cfg.max_words, cfg.max_caption_chars)
                img = clean_image(members[image_ext], cfg)
            except (CaptionError, ImageError) as e:
                tally.skip(origin, e.reason, e.detail)
                continue
            if cut:
                tally.normalised["caption_truncated"] += 1
            tally.count_fixes(img.fixes)
            meta = {"source": source, "orig_key": key, "orig_shard": shard.rsplit("/", 1)[-1], "url": meta_in.get("url"),
                    **image_fields(img)}
            if "truth" in meta_in:  # the built-in world's hidden truth, for evaluation only
                meta["truth"] = meta_in["truth"]
            writer.write(f"{source}-{n:09d}", img.jpeg, caption, meta)
            n += 1
    try:
        tally.check(cfg, f"ingesting {shards}")
        if n == 0:
            raise IngestError(f"{shards}: no usable sample among {tally.seen} (skipped: {dict(tally.skipped)}); "
                              "nothing was written")
    except IngestError:
        writer.abort()
        raise
    return writer.finish({"by_source": {source: n}, "texts": n, **tally.fields()})
