"""CapFilt's model work (BLIP sec. 3.3): caption web images, score every text with the filter.

For every web image the captioner writes synthetic captions (nucleus sampling by default); every
filter scores the web text and every synthetic text with its ITM head (match probability) and its
ITC heads (cosine similarity). Every candidate is recorded, however bad: which texts survive is
decided later and cheaply by `select` (blip/selection), so a new threshold never re-runs a model.

Each model's image tower runs once per image: the filter's image embeddings serve the web text and
every synthetic caption. Sampling is keyed by (seed, round, image key, captioner), so an output
shard depends only on its input shard, the models and the params: not on the number of loader
workers, or which process ran it. Its captions do not depend on the batch size either; its scores
do, in the last float digit (matrix kernels round differently for other batch shapes).
"""

from __future__ import annotations

import functools
import random
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from webdataset.utils import make_seed

from blip.capfilt.config import CapfiltConfig
from blip.capfilt.inputs import Decoded, Decoder, decoded_batches, stack_pixels
from blip.config import IngestConfig
from blip.data import storage
from blip.inference import BlipInference, load
from blip.launch import autocast
from blip.models.blip import Blip
from blip.models.generate import GenerationSettings, generate


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
    return GenerationSettings(method=cfg.method, top_p=cfg.top_p, max_length=cfg.max_length,
                              min_length=cfg.min_length, num_captions=cfg.captions_per_image,
                              num_beams=max(3, cfg.captions_per_image))


@dataclass(frozen=True)
class RunSettings:
    """What every shard of one CapFilt job is processed with."""

    cfg: CapfiltConfig
    seed: int
    round: int
    ingest: IngestConfig  # what makes a web sample unusable: caption limits, image bounds, member size
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


class ShardStats:
    """Counts for one scored shard (images, candidates by source, skips); summed over shards."""

    def __init__(self):
        self.counts: Counter = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items()))}


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


def score_schema(filters: int) -> pa.Schema:
    """A score table's columns: one row per candidate text (the web text, then each synthetic caption)."""
    scores = pa.list_(pa.float32(), filters)  # one entry per filter, in the scores manifest's order
    return pa.schema([
        ("key", pa.string()), ("image", pa.int32()),      # the input sample's key; its index in the shard
        ("candidate", pa.int16()), ("source", pa.string()),  # 0 = the web text, 1.. = synthetic captions
        ("text", pa.string()), ("words", pa.int16()),
        ("itm", scores), ("itc", scores),                 # ITM match probability, ITC cosine similarity
        ("captioner", pa.string()), ("filters", pa.string()),
        ("image_sha256", pa.string()),                    # the image file's bytes, as the input shard holds them
        ("pixels_sha256", pa.string()),                   # its decoded picture (the contract's leak check)
        ("round", pa.int16()),
        ("shard", pa.string()),                           # the input shard's URL
        ("url", pa.string()),                             # the sample's source URL
    ])


def decoder_for(captioners: list[Member], filters: list[Member], run: RunSettings) -> tuple[Decoder, list[int]]:
    """The image decoder for these models (each distinct transform applied once per image), and each model's
    transform index."""
    transforms, which = model_inputs(captioners + filters)
    return Decoder(transforms, run.ingest, run.loader_workers), which


def score_web_shard(path: str, captioners: list[Member], filters: list[Member], run: RunSettings,
                    limit: int | None = None, expected: int | None = None,
                    decoder: Decoder | None = None, shard_name: str | None = None) -> tuple[pa.Table, ShardStats]:
    """Caption and score one web shard (its first `limit` samples): every candidate text, however bad.

    The shard is read once. `expected` is its sample count in its manifest (the samples a broken shard lost are
    counted by it); `decoder` is a running Decoder for these models (one is made and closed here otherwise);
    `shard_name` is how the table names the shard (default: `path`), the same in whatever folder the job runs.
    """
    stats, rows = ShardStats(), {name: [] for name in score_schema(len(filters)).names}
    settings = generation_settings(run.cfg)
    filter_ids = "+".join(f.model_id for f in filters)
    device = captioners[0].blip.device
    own = decoder is None
    if own:
        decoder, which = decoder_for(captioners, filters, run)
    else:
        which = model_inputs(captioners + filters)[1]
    image = 0
    try:
        for raw in decoded_batches(path, decoder, run.cfg.batch_size, expected, limit):
            batch: list[Decoded] = []
            for sample in raw:
                if sample.skip:
                    stats.add(f"skipped_{sample.skip}")
                else:
                    batch.append(sample)
                    for fix in sample.fixes:
                        stats.add(f"normalised_{fix}")
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
                sample = batch[i]
                stats.add("images")
                for n, (source, text, captioner_id) in enumerate(cands):
                    stats.add(f"{source}_total")
                    for name, value in (("key", sample.key), ("image", image), ("candidate", n), ("source", source),
                                        ("text", text), ("words", len(text.split())),
                                        ("itm", [pf[j] for pf in probs]), ("itc", [sf[j] for sf in sims]),
                                        ("captioner", captioner_id), ("filters", filter_ids),
                                        ("image_sha256", sample.image_sha256),
                                        ("pixels_sha256", sample.pixels_sha256),
                                        ("round", run.round), ("shard", shard_name or path),
                                        ("url", sample.meta.get("url"))):
                        rows[name].append(value)
                    j += 1
                image += 1
    finally:
        if own:
            decoder.close()
    return pa.Table.from_pydict(rows, schema=score_schema(len(filters))), stats


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
    return storage.sha256(weights)


def load_member(path: str, device: torch.device | str = "cpu") -> Member:
    """A captioner or filter model ready for inference on `device`, with its provenance id."""
    return Member(load(path, device=str(device)), model_id(path))


@torch.no_grad()
def calibration_table(filters: list[Member], human_val: str, seed: int, max_words: int, precision: str = "fp32",
                      batch_size: int = 64) -> pa.Table:
    """Human val pairs scored by every filter, for select to calibrate a threshold on (label 1 = true pair).

    Positives: every image with each of its own captions. Negatives: the same captions paired with
    another image (a seeded cyclic shift, so no caption meets its own image).
    """
    from blip.evaluate.common import load_eval_set

    data = load_eval_set(human_val, max_words)
    n = len(data.images)
    if n < 2:
        raise ValueError(f"{human_val}: calibration needs at least 2 images")
    shift = random.Random(seed).randrange(1, n)
    labels, itm, itc = [], [], []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        images = [data.images[i] for i in idx]
        pairs = [(j, c) for j, i in enumerate(idx) for c in data.captions[i]]
        negatives = [(j, c) for j, i in enumerate(idx) for c in data.captions[(i + shift) % n]]
        with autocast(precision, filters[0].blip.device):  # scored as the shards are
            probs, sims = filter_scores(filters, [f.blip.images(images) for f in filters], pairs + negatives)
        labels += [1] * len(pairs) + [0] * len(negatives)
        itm += [list(p) for p in zip(*probs)]
        itc += [list(s) for s in zip(*sims)]
    scores = pa.list_(pa.float32(), len(filters))
    return pa.table({"label": pa.array(labels, pa.int8()), "itm": pa.array(itm, scores),
                     "itc": pa.array(itc, scores)})
