"""Zero-shot video sets as shards: MSRVTT's retrieval captions, MSRVTT-QA / MSVD-QA questions (the built-in world
writes its clips of moving objects in the same form).

One sample per clip: the encoded clip as it came (`.video`), a poster frame (`.jpg`, the middle frame, for
browsing) and its .json:

    retrieval: {"video": name, "captions": [...]}
    qa:        {"video": name, "questions": [{"question_id", "question", "answer", "question_type"}]}

Clips are read and checked one at a time (a clip that does not decode is skipped and counted); the annotation
files are read whole (MSRVTT-QA's largest is some 30 MB).
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Literal


from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.karpathy import safe_image_path
from blip.data.shards import DatasetWriter
from blip.tasks.video.frames import VideoError, read_frames

Kind = Literal["retrieval", "qa"]


class VideoFormatError(ValueError):
    """An annotation file that is none of the forms read here."""


def _records(path: str) -> list | dict:
    """A JSON document's records: a list, or JSON lines (MSRVTT's own {"sentences": [...]} as it is)."""
    raw = storage.read_bytes(path).decode("utf-8")
    try:
        d = json.loads(raw)
        return [d] if isinstance(d, dict) and "sentences" not in d else d  # JSON lines of one record
    except ValueError:
        try:
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as e:
            raise VideoFormatError(f"{path}: neither JSON nor JSON lines ({e})") from None


def _clip_file(name: str) -> str:
    return name if Path(name).suffix else f"{name}.mp4"


def read_retrieval_files(files: list[str]) -> dict[str, list[str]]:
    """{clip file: captions} from MSRVTT-style files: a list (or JSON lines) of {clip_name | video | video_id,
    caption (one or a list)}, or MSRVTT's own videodatainfo JSON ({"sentences": [{video_id, caption}]})."""
    captions: dict[str, list[str]] = defaultdict(list)
    for f in files:
        d = _records(f)
        rows = d["sentences"] if isinstance(d, dict) and "sentences" in d else d
        if not isinstance(rows, list):
            raise VideoFormatError(f"{f}: expected a list of {{clip_name, caption}} records or MSRVTT's "
                                   "{'sentences': [...]}")
        for r in rows:
            name = next((r[k] for k in ("clip_name", "video", "video_id") if isinstance(r, dict) and k in r), None)
            caption = r.get("caption", r.get("sentence")) if isinstance(r, dict) else None
            if name is None or caption is None:
                raise VideoFormatError(f"{f}: a record without a clip name (clip_name, video or video_id) or a "
                                       f"caption: {str(r)[:200]}")
            captions[_clip_file(str(name))] += [caption] if isinstance(caption, str) else list(caption)
    return dict(captions)


def read_qa_files(files: list[str], names: str, mapping: str | None = None) -> dict[str, list[dict]]:
    """{clip file: questions} from MSRVTT-QA / MSVD-QA files ([{question, answer, video_id, id}]). A clip's file
    is `names` formatted with video_id (MSRVTT-QA: "video{video_id}.mp4"); MSVD-QA's youtube_mapping.txt
    ("<youtube name> vid<N>" per line) gives {name} too ("{name}.avi")."""
    youtube = {}
    if mapping:
        for line in storage.read_bytes(mapping).decode("utf-8").splitlines():
            if line.strip():
                name, vid = line.split()
                youtube[int(vid.removeprefix("vid"))] = name
    questions: dict[str, list[dict]] = defaultdict(list)
    for f in files:
        for i, r in enumerate(_records(f)):
            try:
                vid = r["video_id"]
                clip = names.format(video_id=vid, name=youtube.get(int(vid), "")) if mapping else \
                    names.format(video_id=vid)
                q = str(r["question"]).strip()
                questions[clip].append({"question_id": r.get("id", f"{f}:{i}"), "question": q,
                                        "answer": str(r["answer"]).strip(),
                                        "question_type": q.split()[0].lower() if q else ""})
            except (KeyError, TypeError, ValueError) as e:
                raise VideoFormatError(f"{f}: a question without a usable {e} (each needs question, answer and "
                                       f"video_id): {str(r)[:200]}") from None
    return dict(questions)


def _poster(frame, cfg: IngestConfig) -> bytes:
    frame.thumbnail((cfg.max_side, cfg.max_side))
    out = io.BytesIO()
    frame.save(out, format="JPEG", quality=cfg.jpeg_quality)
    return out.getvalue()


def ingest_clips(kind: Kind, annotations: dict[str, list], video_root: str, out_dir: str | Path, cfg: IngestConfig,
                 shard_size: int) -> dict:
    """Shards + manifest of annotated clips; a clip that is missing, too large or does not decode is skipped and
    counted (with its captions or questions)."""
    tally, writer = Tally(), DatasetWriter(out_dir, shard_size)
    field = "captions" if kind == "retrieval" else "questions"
    try:
        for i, (name, items) in enumerate(sorted(annotations.items())):
            tally.seen += len(items)
            path = safe_image_path(video_root, name)
            if path is None or not storage.exists(path):
                tally.skip(name, "missing_file" if path else "path_escapes_root", samples=len(items))
                continue
            if storage.size(path) > cfg.max_member_bytes:
                tally.skip(name, "too_large", f"over {cfg.max_member_bytes} bytes", samples=len(items))
                continue
            data = storage.read_bytes(path)
            try:
                poster = _poster(read_frames(data, 1, name)[0], cfg)
            except VideoError as e:
                tally.skip(name, "undecodable_video", str(e), samples=len(items))
                continue
            text = items[0] if kind == "retrieval" else items[0]["question"]
            writer.write(f"{i:09d}", poster, text, {"video": name, field: items}, extra={"video": data})
        tally.check(cfg, f"{kind} video ingest of {video_root}")
        return writer.finish({"kind": f"video_{kind}", field: tally.seen - sum(tally.skipped.values()),
                              **tally.fields()})
    except BaseException:
        writer.abort()
        raise


def iter_clips(dataset_dir: str | Path) -> Iterator[tuple[str, bytes, dict]]:
    """(key, encoded clip, json) of a video dataset, in order."""
    from blip.data.finished import iter_raw_samples

    for _, sample in iter_raw_samples(dataset_dir):
        if "video" not in sample:
            raise VideoFormatError(f"{dataset_dir}: sample {sample['__key__']} holds no clip: not a video dataset "
                                   "(build one with `blip video-data`)")
        yield sample["__key__"], sample["video"], json.loads(sample["json"])
