"""CapFilt's model work (BLIP sec. 3.3): caption web images, score every text with the filter.

For every web image the captioner writes synthetic captions (nucleus sampling by default); the
filter scores the web text and every synthetic text with its ITM head, and a text survives when its
match probability reaches the threshold. Human-annotated pairs pass through unfiltered.

Each model's image tower runs once per image: the filter's image embeddings serve the web text and
every synthetic caption. Sampling is keyed by (seed, round, image key, captioner), so an output
shard depends only on its input shard, the models and the params: not on the number of loader
workers, or which process ran it. Its captions and decisions do not depend on the batch size either;
its scores do, in the last float digit (matrix kernels round differently for other batch shapes).
"""

from __future__ import annotations

import functools
import json
import math
import random
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from webdataset.utils import make_seed

from blip.capfilt.inputs import ShardSamples, WebSample, stack_pixels, web_batches
from blip.config import CapfiltConfig
from blip.data.shards import encode_sample, iter_tar_samples, sha256_file
from blip.data.world import describes, scene_from_json
from blip.inference import BlipInference, load
from blip.launch import autocast
from blip.models.blip import Blip
from blip.models.generate import GenerationSettings, generate

SOURCES = ("human", "web", "synthetic")


@dataclass
class Member:
    """One model of the captioner or filter ensemble, with its id for provenance."""

    blip: BlipInference
    model_id: str

    @property
    def model(self) -> Blip:
        return self.blip.model


def generation_settings(cfg: CapfiltConfig) -> GenerationSettings:
    """The captioner's decoding for CapFilt (nucleus: top-p with the release's repetition penalty)."""
    if cfg.method not in ("nucleus", "beam"):
        raise ValueError(f"capfilt.method must be 'nucleus' or 'beam', got {cfg.method!r}")
    return GenerationSettings(method=cfg.method, top_p=cfg.top_p, max_length=cfg.max_length,
                              min_length=cfg.min_length, num_captions=cfg.captions_per_image,
                              num_beams=max(3, cfg.captions_per_image))


@dataclass(frozen=True)
class RunSettings:
    """What every shard of one CapFilt job is processed with."""

    cfg: CapfiltConfig
    threshold: float
    seed: int
    round: int
    max_words: int
    max_chars: int
    precision: str        # fp32 | bf16 (resolved for the device)
    loader_workers: int   # CPU processes decoding and resizing images


@torch.no_grad()
def filter_scores(filters: list[Member], pixels: list[torch.Tensor], pairs: list[tuple[int, str]],
                  text_len: int = 35) -> tuple[list[list[float]], list[list[float]]]:
    """ITM match probabilities and ITC similarities of (image index, text) pairs, per filter; `pixels[f]`
    is filter f's input batch. One image-tower pass per image serves all of that image's texts."""
    probs, sims = [], []
    for f, images in zip(filters, pixels):
        m = f.model
        embeds = m.image_embeds(images)
        image_feat = m.image_feat(embeds)
        ids, mask = f.blip.text_inputs([t for _, t in pairs], text_len)
        which = torch.tensor([i for i, _ in pairs], device=embeds.device)
        p = m.itm_logits(embeds[which], ids, mask).float().softmax(-1)[:, 1]
        s = (image_feat[which].float() * m.text_feat(ids, mask).float()).sum(-1)
        probs.append(p.tolist())  # one device-to-host copy per batch and filter
        sims.append(s.tolist())
    return probs, sims


def combine(probs: list[float], threshold: float, how: str) -> tuple[float, bool]:
    """The ensemble's probability and decision for one text (one filter: its own)."""
    mean = sum(probs) / len(probs)
    if how == "mean":
        return mean, mean >= threshold
    if how == "vote":
        return mean, sum(p >= threshold for p in probs) * 2 > len(probs)
    raise ValueError(f"capfilt.filter_combine must be 'mean' or 'vote', got {how!r}")


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


def image_seeds(keys: list[str], run: RunSettings, captioner: int, device: torch.device) -> torch.Tensor:
    """Each image's sampling seed: a function of (seed, round, image key, captioner) only."""
    return torch.tensor([make_seed(run.seed, run.round, zlib.crc32(k.encode()), captioner) for k in keys],
                        dtype=torch.int64, device=device)


def model_inputs(members: list[Member]) -> tuple[list, list[int]]:
    """The distinct image transforms of the models (each applied once per image), and each model's index."""
    transforms, specs, which = [], [], []
    for m in members:
        c = m.model.cfg
        spec = (c.image_size, tuple(c.mean), tuple(c.std))
        if spec not in specs:
            specs.append(spec)
            transforms.append(m.blip.transform)
        which.append(specs.index(spec))
    return transforms, which


def bootstrap_web_shard(path: str, captioners: list[Member], filters: list[Member], run: RunSettings,
                        n_examples: int, limit: int | None = None,
                        between_batches: Callable[[], None] = lambda: None) -> tuple[list[dict], ShardStats]:
    """Caption and filter one web shard (its first `limit` samples): the kept samples and statistics.
    `between_batches` runs after each batch (a claim's check that the shard is still ours)."""
    stats, out = ShardStats(), []
    cfg = run.cfg
    settings = generation_settings(cfg)
    filter_id = "+".join(f.model_id for f in filters)
    device = captioners[0].blip.device
    transforms, which = model_inputs(captioners + filters)
    dataset = ShardSamples(path, transforms, run.max_words, run.max_chars, limit)
    for raw in web_batches(dataset, cfg.batch_size, run.loader_workers):
        batch: list[WebSample] = []
        for sample in raw:
            if sample.skip:
                stats.add(sample.skip)
            else:
                batch.append(sample)
        if not batch:
            continue
        keys = [s.key for s in batch]
        pixels = {t: stack_pixels(batch, t, device) for t in sorted(set(which))}
        # candidates per image: the web text, then every captioner's synthetic captions
        candidates = [[("web", s.text, "")] for s in batch]
        with autocast(run.precision, device):
            for c, cap in enumerate(captioners):
                seeds = image_seeds(keys, run, c, device) if settings.method == "nucleus" else None
                captions = generate(cap.model, pixels[which[c]], cap.blip.tokenizer, settings, seeds=seeds)
                for i, caps in enumerate(captions):
                    candidates[i] += [("synthetic", t, cap.model_id) for t in caps if t]
            pairs = [(i, t) for i, cands in enumerate(candidates) for _, t, _ in cands]
            probs, sims = filter_scores(filters, [pixels[w] for w in which[len(captioners):]], pairs)
        j = 0
        for i, cands in enumerate(candidates):
            example = {"key": keys[i], "texts": []}
            for n, (source, text, captioner_id) in enumerate(cands):
                p, kept = combine([pf[j] for pf in probs], run.threshold, cfg.filter_combine)
                s = sum(sf[j] for sf in sims) / len(sims)
                j += 1
                stats.add(f"{source}_total")
                stats.add(f"{source}_kept" if kept else f"{source}_removed")
                truth = _world_truth(source, text, batch[i].meta)
                if truth is not None:
                    stats.add(f"truth_{source}_{truth}_{'kept' if kept else 'removed'}")
                example["texts"].append({"source": source, "text": text, "itm": round(p, 4), "kept": kept,
                                         "truth": truth})
                if kept:
                    suffix = "web" if source == "web" else f"syn{n - 1}"
                    meta = {"source": source, "itm": round(p, 6), "itc": round(s, 6), "captioner": captioner_id,
                            "filter": filter_id, "round": run.round, "threshold": run.threshold, "image_key": keys[i],
                            "origin": {k: v for k, v in batch[i].meta.items() if k in ("url", "truth")}}
                    out.append(encode_sample(f"{keys[i]}_{suffix}", batch[i].jpeg, text, meta))
            if len(stats.examples) < n_examples:
                stats.examples.append(example)
        between_batches()
    return out, stats


def copy_human_shard(path: str, round_: int) -> tuple[list[dict], ShardStats]:
    """Human-annotated pairs pass through unfiltered, marked as such."""
    stats, out = ShardStats(), []
    for sample in iter_tar_samples(path):
        meta = json.loads(sample["json"])
        meta.update(source="human", round=round_)
        out.append(encode_sample(sample["__key__"], sample["jpg"], sample["txt"].decode("utf-8"), meta))
        stats.add("human_total")
        stats.add("human_kept")
    return out, stats


def model_id(path: str) -> str:
    """A model's provenance id: its folder name and a digest of its weights."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return f"{Path(path).name}@external"
    stat = weights.stat()
    return f"{Path(path).name}@{_digest(weights, stat.st_size, stat.st_mtime_ns)[:12]}"


@functools.cache
def _digest(weights: Path, size: int, mtime_ns: int) -> str:
    # a job asks for each model's id several times (fingerprint, loading, manifest): hash a GB file once
    return sha256_file(weights)


def load_member(path: str, device: torch.device | str = "cpu") -> Member:
    """A captioner or filter model ready for inference on `device`, with its provenance id."""
    return Member(load(path, device=str(device)), model_id(path))


@torch.no_grad()
def calibrate_threshold(filters: list[Member], human_val: str, target_precision: float, seed: int,
                        max_words: int, how: str, precision: str = "fp32", batch_size: int = 64) -> dict:
    """The lowest threshold whose kept set reaches `target_precision` on human val pairs.

    Positives: every image with each of its own captions. Negatives: the same captions paired with
    another image (a seeded cyclic shift, so no caption meets its own image).
    """
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
            probs, _ = filter_scores(filters, [f.blip.images(images) for f in filters], pairs)
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
