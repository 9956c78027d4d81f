"""CapFilt (BLIP sec. 3.3): bootstrap noisy web data with a captioner and a filter.

For every web image the captioner writes synthetic captions (nucleus sampling by default); the
filter scores the web text and every synthetic text with its ITM head, and a text survives when its
match probability reaches the threshold. The output dataset is the surviving web and synthetic
texts plus the human-annotated pairs, each sample recording where it came from and its scores.

Scale: input shards are the unit of work. Output shard i is a pure function of input shard i, the
models, the params and the seed (generation is seeded by shard and batch, never by process), so any
number of processes can share the work, each owning whole shards. A finished shard is committed
atomically together with a small JSON of its statistics; a restarted run skips shards that have
both and redoes the rest, so a crashed-and-resumed run writes the same bytes as one that never
crashed. The manifest is written last, from the per-shard statistics.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image
from webdataset.utils import make_seed

from blip.config import CapfiltConfig
from blip.data.shards import (MANIFEST, SHARD_PATTERN, atomic_write_bytes, atomic_write_json, encode_sample,
                              iter_tar_samples, read_manifest, sha256_file, write_shard)
from blip.data.text import CaptionError, prepare_caption
from blip.data.world import describes, scene_from_json
from blip.models.blip import Blip
from blip.inference import BlipInference, load
from blip.models.generate import GenerationSettings

PARTS = "parts"        # per-shard statistics, next to the shards while the run is unfinished
SOURCES = ("human", "web", "synthetic")


@dataclass
class Member:
    """One model of the captioner or filter ensemble, with its id for provenance."""

    blip: BlipInference
    model_id: str

    @property
    def model(self) -> Blip:
        return self.blip.model


@dataclass
class Work:
    """One unit of work: an input shard and the output shard it becomes."""

    index: int
    source: str    # web | human
    path: str
    sha256: str    # as the input's manifest records it

    @property
    def out_name(self) -> str:
        return SHARD_PATTERN.format(self.index)


def plan(web_dirs: list[str], human_dirs: list[str]) -> list[Work]:
    """Every input shard in a fixed order: web shards first, then the human-annotated ones."""
    work = [Work(0, source, str(Path(d) / entry["name"]), entry["sha256"])
            for source, dirs in (("web", web_dirs), ("human", human_dirs))
            for d in dirs for entry in read_manifest(d)["shards"]]
    for i, w in enumerate(work):
        w.index = i
    return work


def generation_settings(cfg: CapfiltConfig) -> GenerationSettings:
    """The captioner's decoding for CapFilt (nucleus: top-p with the release's repetition penalty)."""
    if cfg.method not in ("nucleus", "beam"):
        raise ValueError(f"capfilt.method must be 'nucleus' or 'beam', got {cfg.method!r}")
    return GenerationSettings(method=cfg.method, top_p=cfg.top_p, max_length=cfg.max_length,
                              min_length=cfg.min_length, num_captions=cfg.captions_per_image,
                              num_beams=max(3, cfg.captions_per_image))


@torch.no_grad()
def filter_scores(filters: list[Member], images: list[Image.Image], pairs: list[tuple[int, str]],
                  text_len: int = 35) -> tuple[list[list[float]], list[list[float]]]:
    """ITM match probabilities and ITC similarities of (image index, text) pairs, per filter."""
    probs, sims = [], []
    for f in filters:
        m = f.model
        embeds = m.image_embeds(f.blip.images(images))
        image_feat = m.image_feat(embeds)
        ids, mask = f.blip.text_inputs([t for _, t in pairs], text_len)
        which = torch.tensor([i for i, _ in pairs], device=embeds.device)
        p = m.itm_logits(embeds[which], ids, mask).float().softmax(-1)[:, 1]
        s = (image_feat[which].float() * m.text_feat(ids, mask).float()).sum(-1)
        probs.append(p.tolist())
        sims.append(s.tolist())
    return probs, sims


def autocast(precision: str, device: torch.device):
    """The context captioner and filter run in: fp32 as they are, or bf16 autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"capfilt.precision must be 'fp32' or 'bf16', got {precision!r}")


def combine(probs: list[float], threshold: float, how: str) -> tuple[float, bool]:
    """The ensemble's probability and decision for one text (one filter: its own)."""
    mean = sum(probs) / len(probs)
    if how == "mean":
        return mean, mean >= threshold
    if how == "vote":
        return mean, sum(p >= threshold for p in probs) * 2 > len(probs)
    raise ValueError(f"capfilt.filter_combine must be 'mean' or 'vote', got {how!r}")


def _decode(sample: dict, max_words: int, max_chars: int) -> tuple[Image.Image, str, dict]:
    """A raw web sample -> (RGB image, cleaned text, metadata); CaptionError / OSError when unusable."""
    if "jpg" not in sample:
        raise OSError("no jpg member")
    image = Image.open(io.BytesIO(sample["jpg"]))
    image.load()
    text, _ = prepare_caption(sample.get("txt", b""), max_words, max_chars)
    meta = json.loads(sample["json"]) if "json" in sample else {}
    return image.convert("RGB"), text, meta


def _batches(samples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ShardStats:
    """Counts for one output shard; summed over shards for the report."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.examples: list[dict] = []

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": self.examples}


def _world_truth(source: str, text: str, meta: dict) -> str | None:
    """On the built-in world, what the text really is: clean | mismatched | partial | uninformative for
    web texts, true | false for synthetic captions (one of the scene's true wordings or not)."""
    truth = meta.get("truth")
    if not truth:
        return None
    if source == "web":
        return truth["kind"]
    return "true" if describes(scene_from_json(truth["scene"]), text) else "false"


def bootstrap_web_shard(work: Work, captioners: list[Member], filters: list[Member], cfg: CapfiltConfig,
                        threshold: float, seed: int, round_: int, max_words: int, max_chars: int,
                        n_examples: int, limit: int | None = None) -> tuple[list[dict], ShardStats]:
    """Caption and filter one web shard (its first `limit` samples): the kept samples and statistics."""
    stats, out = ShardStats(), []
    settings = generation_settings(cfg)
    filter_id = "+".join(f.model_id for f in filters)
    samples = itertools.islice(iter_tar_samples(work.path), limit)
    for b, raw in enumerate(_batches(samples, cfg.batch_size)):
        keys, images, jpegs, texts, metas = [], [], [], [], []
        for sample in raw:
            try:
                image, text, meta = _decode(sample, max_words, max_chars)
            except CaptionError as e:
                stats.add(f"skipped_{e.reason}")
                continue
            except (OSError, ValueError, json.JSONDecodeError):
                stats.add("skipped_bad_image_or_metadata")
                continue
            keys.append(sample["__key__"]), images.append(image), jpegs.append(sample["jpg"])
            texts.append(text), metas.append(meta)
        if not images:
            continue
        # candidates per image: the web text, then every captioner's synthetic captions
        candidates = [[("web", t, "")] for t in texts]
        with autocast(cfg.precision, captioners[0].blip.device):
            for c, cap in enumerate(captioners):
                # seeded by (seed, round, shard, batch, captioner): independent of which process runs it
                torch.manual_seed(make_seed(seed, round_, work.index, b, c))
                for i, caps in enumerate(cap.blip.caption(images, settings)):
                    candidates[i] += [("synthetic", t, cap.model_id) for t in caps if t]
            pairs = [(i, t) for i, cands in enumerate(candidates) for _, t, _ in cands]
            probs, sims = filter_scores(filters, images, pairs)
        j = 0
        for i, cands in enumerate(candidates):
            example = {"key": keys[i], "texts": []}
            for n, (source, text, captioner_id) in enumerate(cands):
                p, kept = combine([pf[j] for pf in probs], threshold, cfg.filter_combine)
                s = sum(sf[j] for sf in sims) / len(sims)
                j += 1
                stats.add(f"{source}_total")
                stats.add(f"{source}_kept" if kept else f"{source}_removed")
                truth = _world_truth(source, text, metas[i])
                if truth is not None:
                    stats.add(f"truth_{source}_{truth}_{'kept' if kept else 'removed'}")
                example["texts"].append({"source": source, "text": text, "itm": round(p, 4), "kept": kept,
                                         "truth": truth})
                if kept:
                    suffix = "web" if source == "web" else f"syn{n - 1}"
                    meta = {"source": source, "itm": round(p, 6), "itc": round(s, 6), "captioner": captioner_id,
                            "filter": filter_id, "round": round_, "threshold": threshold, "image_key": keys[i],
                            "origin": {k: v for k, v in metas[i].items() if k in ("url", "truth")}}
                    out.append(encode_sample(f"{keys[i]}_{suffix}", jpegs[i], text, meta))
            if len(stats.examples) < n_examples:
                stats.examples.append(example)
    return out, stats


def copy_human_shard(work: Work, round_: int) -> tuple[list[dict], ShardStats]:
    """Human-annotated pairs pass through unfiltered, marked as such."""
    stats, out = ShardStats(), []
    for sample in iter_tar_samples(work.path):
        meta = json.loads(sample["json"])
        meta.update(source="human", round=round_)
        out.append(encode_sample(sample["__key__"], sample["jpg"], sample["txt"].decode("utf-8"), meta))
        stats.add("human_total")
        stats.add("human_kept")
    return out, stats


def part_path(out_dir: Path, work: Work) -> Path:
    return out_dir / PARTS / f"{work.out_name}.json"


def run_worker(work: list[Work], rank: int, world: int, out_dir: Path, captioners: list[Member],
               filters: list[Member], cfg: CapfiltConfig, threshold: float, seed: int, round_: int,
               max_words: int, max_chars: int, log=print) -> int:
    """Process this rank's shards (index % world == rank), skipping finished ones; returns shards done."""
    (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
    done = 0
    for w in work:
        if w.index % world != rank or part_path(out_dir, w).is_file():
            continue
        start = time.time()
        if w.source == "web":
            samples, stats = bootstrap_web_shard(w, captioners, filters, cfg, threshold, seed, round_,
                                                 max_words, max_chars, cfg.examples)
        else:
            samples, stats = copy_human_shard(w, round_)
        entry = write_shard(out_dir / w.out_name, samples)
        images = stats.counts.get("web_total", stats.counts.get("human_total", 0))
        seconds = time.time() - start
        # the part file marks the shard finished: written after the shard itself
        atomic_write_json(part_path(out_dir, w), {"shard": entry, "input": w.path, "source": w.source,
                                                  **stats.to_dict()})
        done += 1
        log(f"[capfilt] rank {rank}: {w.out_name} ({w.source}) {entry['samples']} samples kept, "
            f"{images / max(seconds, 1e-9):.1f} images/s")
    return done


def finalize(work: list[Work], out_dir: Path, fields: dict) -> dict:
    """Write the manifest from the per-shard parts once every shard is finished; returns it."""
    missing = [w.out_name for w in work if not part_path(out_dir, w).is_file()]
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} shard(s) not finished ({', '.join(missing[:5])}); "
                           "re-run `blip capfilt` with the same arguments to finish them")
    parts = [json.loads(part_path(out_dir, w).read_text()) for w in work]
    counts: Counter = Counter()
    for part in parts:
        counts.update(part["counts"])
    manifest = {"format": "blip-shards/1", "samples": sum(p["shard"]["samples"] for p in parts),
                "shards": [p["shard"] for p in parts],
                "by_source": {s: counts.get(f"{s}_kept", 0) for s in SOURCES},
                "capfilt": {"counts": dict(sorted(counts.items())), **fields}}
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def examples(out_dir: Path, work: list[Work], n: int) -> list[dict]:
    """The first `n` example images over the web shards, in shard order."""
    rows = []
    for w in work:
        if w.source == "web":
            rows += json.loads(part_path(out_dir, w).read_text())["examples"]
    return rows[:n]


def input_counts(web_dirs: list[str]) -> int:
    """Web samples the inputs hold (from their manifests)."""
    return sum(read_manifest(d)["samples"] for d in web_dirs)


def model_id(path: str) -> str:
    """A model's provenance id: its folder name and a digest of its weights."""
    weights = Path(path) / "model.safetensors"
    return f"{Path(path).name}@{sha256_file(weights)[:12] if weights.is_file() else 'external'}"


def load_member(path: str) -> Member:
    """A captioner or filter model ready for inference, with its provenance id."""
    return Member(load(path), model_id(path))


@torch.no_grad()
def calibrate_threshold(filters: list[Member], human_val: str, target_precision: float, seed: int,
                        max_words: int, how: str, precision: str = "fp32", batch_size: int = 64) -> dict:
    """The lowest threshold whose kept set reaches `target_precision` on human val pairs.

    Positives: every image with each of its own captions. Negatives: the same captions paired with
    another image (a seeded cyclic shift, so no caption meets its own image).
    """
    import random

    from blip.evaluate.common import load_eval_set

    data = load_eval_set(human_val, max_words)
    n = len(data.images)
    if n < 2:
        raise ValueError(f"{human_val}: calibration needs at least 2 images")
    shift = random.Random(seed).randrange(1, n)
    scored: list[tuple[float, int]] = []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        images = [data.images[i] for i in idx]
        pairs = [(j, c) for j, i in enumerate(idx) for c in data.captions[i]]
        pairs += [(j, c) for j, i in enumerate(idx) for c in data.captions[(i + shift) % n]]
        with autocast(precision, filters[0].blip.device):  # scored as the shards will be
            probs, _ = filter_scores(filters, images, pairs)
        half = len(pairs) // 2
        for k in range(len(pairs)):
            scored.append((combine([p[k] for p in probs], 0.5, how)[0], int(k < half)))
    best = lowest_threshold(scored, target_precision)
    if best is None:
        raise RuntimeError(f"no ITM threshold reaches precision {target_precision} on {human_val}; "
                           "lower capfilt.target_precision or fine-tune the filter longer")
    return {**best, "target_precision": target_precision, "pairs": len(scored)}


def lowest_threshold(scored: list[tuple[float, int]], target_precision: float) -> dict | None:
    """The lowest score t such that the pairs scoring >= t have precision >= target (None if none)."""
    scored = sorted(scored, key=lambda x: -x[0])
    positives = sum(label for _, label in scored)
    best, tp = None, 0
    for k, (score, label) in enumerate(scored):
        tp += label
        last_of_tie = k + 1 == len(scored) or scored[k + 1][0] != score
        if last_of_tie and tp / (k + 1) >= target_precision:
            # floored to the 6 decimals samples record their probabilities with, so that every kept
            # text's recorded probability is still >= the threshold
            best = {"threshold": math.floor(score * 1e6) / 1e6, "precision": round(tp / (k + 1), 4),
                    "recall": round(tp / max(1, positives), 4)}
    return best


def fingerprint(work: list[Work], model_ids: list[str], cfg: CapfiltConfig, threshold: float, seed: int,
                round_: int) -> str:
    """What finished shards must match to be reused: inputs, models, settings, threshold, seed, round."""
    import hashlib

    from blip.config import to_dict

    parts = {"inputs": [(w.source, w.path, w.sha256) for w in work],
             "models": model_ids, "cfg": to_dict(cfg), "threshold": threshold,
             "seed": seed, "round": round_}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stamp_matches(out_dir: Path, stamp: str) -> bool | None:
    """Whether the output folder's finished shards belong to this job (None: it has no stamp yet)."""
    stamp_file = out_dir / PARTS / "fingerprint"
    return stamp_file.read_text().strip() == stamp if stamp_file.is_file() else None


def prepare_output(out_dir: Path, stamp: str) -> None:
    """Keep finished shards of the same job; clear the folder when it holds another job's."""
    stamp_file = out_dir / PARTS / "fingerprint"
    if out_dir.exists() and not stamp_matches(out_dir, stamp):
        for old in list(out_dir.glob("shard-*.tar")) + list(out_dir.glob(".*.tmp")) + [out_dir / MANIFEST]:
            old.unlink(missing_ok=True)
        for old in (out_dir / PARTS).glob("*") if (out_dir / PARTS).is_dir() else []:
            old.unlink()
    (out_dir / MANIFEST).unlink(missing_ok=True)  # unfinished again until finalize
    claim_output(out_dir, stamp)


def claim_output(out_dir: Path, stamp: str) -> None:
    """Stamp the output folder with this job (no clearing: safe for several workers at once)."""
    (out_dir / PARTS).mkdir(parents=True, exist_ok=True)
    if stamp_matches(out_dir, stamp) is None:
        atomic_write_bytes(out_dir / PARTS / "fingerprint", (stamp + "\n").encode())
