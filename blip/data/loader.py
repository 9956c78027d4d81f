"""webdataset pipelines for training and evaluation, split across ranks and data-loader workers.

Two modes:
- finite (an epoch sees every shard once): the shard list is shuffled by (seed, epoch), dealt to
  ranks (`split_by_node`) and then to workers (`split_by_worker`). Needs #shards >= ranks x workers,
  or some workers get nothing.
- resampled (epoch-less): every rank/worker draws shards with replacement from its own seeded
  stream, so no split is needed and a restart never waits for an epoch boundary.

Every random choice is seeded by (seed, epoch, rank, worker) or by the sample's key, so the same
params give the same batches. The epoch lives in shared memory so workers see `set_epoch`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import webdataset as wds
from webdataset.filters import _shuffle
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.utils import make_seed, pytorch_worker_info

from blip.config import IngestConfig
from blip.data import storage
from blip.data.images import open_image
from blip.data.selected import Joiner
from blip.data.text import clean_caption


class SharedEpoch:
    """An epoch counter that data-loader worker processes read at iteration time."""

    def __init__(self, epoch: int = 0):
        self._value = mp.Value("i", epoch)

    def set(self, epoch: int) -> None:
        self._value.value = epoch

    def get(self) -> int:
        return self._value.value


def _role(offset: int) -> tuple[int, int, int]:
    """(rank, worker role, workers): the role is the worker id rotated by `offset` (see _SkipBatches)."""
    rank, _, worker, workers = pytorch_worker_info()
    return rank, (worker + offset) % workers, workers


def _rank_worker_seed(seed: int, epoch: SharedEpoch, offset: int = 0) -> int:
    rank, role, _ = _role(offset)
    return make_seed(seed, epoch.get(), rank, role)


class _EpochShardShuffle(wds.PipelineStage):
    """Shuffle the shard list identically on every rank, differently every epoch."""

    def __init__(self, seed: int, epoch: SharedEpoch):
        self.seed, self.epoch = seed, epoch

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        items = list(src)
        random.Random(make_seed(self.seed, self.epoch.get())).shuffle(items)
        yield from items


class _SeededSampleShuffle(wds.PipelineStage):
    """webdataset's buffer shuffle with an rng seeded by (seed, epoch, rank, worker role)."""

    def __init__(self, bufsize: int, initial: int, seed: int, epoch: SharedEpoch, offset: int = 0):
        self.bufsize, self.initial, self.seed, self.epoch, self.offset = bufsize, initial, seed, epoch, offset

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        rng = random.Random(_rank_worker_seed(self.seed, self.epoch, self.offset))
        yield from _shuffle(src, self.bufsize, self.initial, rng=rng)


class _WorkerSeed:
    """ResampledShards' worker seed: rank, worker role and epoch (picklable, unlike a lambda)."""

    def __init__(self, seed: int, epoch: SharedEpoch, offset: int = 0):
        self.seed, self.epoch, self.offset = seed, epoch, offset

    def __call__(self) -> int:
        return _rank_worker_seed(self.seed, self.epoch, self.offset)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W), normalised
    captions: list[str]
    keys: list[str]
    meta: list[dict]


class _SkipBatches(wds.PipelineStage):
    """Drop the raw samples of the first `batches` global batches (before decoding: cheap).

    A DataLoader takes batches from its workers round-robin starting at worker 0, so in an
    uninterrupted epoch the stream of role r (seeded by r) made global batches r, r+W, ... On
    resume after s batches, worker w plays role (w + s) % W, so that worker 0 makes batch s; each
    role skips as many of its own batches as fell before s.
    """

    def __init__(self, batches: int, batch_size: int):
        self.batches, self.batch_size = batches, batch_size

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        _, role, workers = _role(self.batches)
        own = max(0, (self.batches - role + workers - 1) // workers)
        for i, sample in enumerate(src):
            if i >= own * self.batch_size:
                yield sample


def _tar_samples(src: Iterator[dict], handler: Callable = wds.warn_and_continue) -> Iterator[dict]:
    """Shard URLs -> samples, each shard streamed from a local file or object storage (storage.py)."""

    def opened() -> Iterator[dict]:
        for shard in src:
            try:
                yield {**shard, "stream": storage.open_read(shard["url"])}
            except OSError as e:  # an unreachable shard: skipped with a warning, like a broken one
                if not handler(e):
                    return

    yield from group_by_keys(tar_file_expander(opened(), handler=handler), handler=handler)


class _Join(wds.PipelineStage):
    """A selection dataset's join (blip/selection): each raw sample of a web shard becomes one sample per
    selected text of its key; other shards' samples pass through. One shard's table is held at a time."""

    def __init__(self, joiner: Joiner):
        self.joiner = joiner

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        shard, table = None, None
        for raw in src:
            if raw["__url__"] != shard:
                shard = raw["__url__"]
                table = self.joiner.table(shard)
            yield from self.joiner.samples(shard, raw, table)


class _ToItem:
    """Decoded sample -> (image tensor, caption, key, meta); picks one of several human captions.

    The augmentation's randomness is seeded by (seed, epoch, key), so a sample looks the same
    whichever worker decodes it and whatever came before it: a resumed run sees the same batches.
    """

    def __init__(self, transform: Callable, max_words: int, pick_random_caption: bool, seed: int,
                 epoch: SharedEpoch):
        self.transform, self.max_words = transform, max_words
        self.pick_random_caption, self.seed, self.epoch = pick_random_caption, seed, epoch

    def __call__(self, sample: dict) -> tuple:
        meta = sample.get("json") or {}
        caption = sample["txt"]
        captions = meta.get("captions")
        if self.pick_random_caption and captions:
            # seeded by the key, not by the worker, so the choice does not depend on how shards are dealt
            rng = random.Random(make_seed(self.seed, self.epoch.get(), zlib.crc32(sample["__key__"].encode())))
            caption = captions[rng.randrange(len(captions))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(make_seed(self.seed, self.epoch.get(), zlib.crc32(sample["__key__"].encode())))
            image = self.transform(sample["jpg"])
            if "right.jpg" in sample:  # an image pair (NLVR): (2, 3, H, W)
                image = torch.stack([image, self.transform(sample["right.jpg"])])
        return image, clean_caption(caption, self.max_words), sample["__key__"], meta


class _DecodeImages:
    """A sample's image bytes (`jpg`, and NLVR's `right.jpg`) as upright RGB pictures, by the rules every reader
    shares (images.open_image: EXIF, alpha, modes, size bounds); an unusable image drops its sample."""

    def __init__(self, limits: IngestConfig):
        self.limits = limits

    def __call__(self, sample: dict) -> dict:
        for name in ("jpg", "right.jpg"):
            if isinstance(sample.get(name), bytes):
                sample[name] = open_image(sample[name], self.limits).image
        if isinstance(sample.get("json"), bytes):
            sample["json"] = json.loads(sample["json"])
        if isinstance(sample.get("txt"), bytes):
            sample["txt"] = sample["txt"].decode("utf-8")
        return sample


def _collate(items: list[tuple]) -> Batch:
    images, captions, keys, meta = zip(*items)
    return Batch(torch.stack(images), list(captions), list(keys), list(meta))


def build_pipeline(shards: list[str], transform: Callable, batch_size: int, *, train: bool, seed: int,
                   epoch: SharedEpoch, max_words: int, resampled: bool = False, shuffle_buffer: int = 1000,
                   shuffle_initial: int = 100, skip_batches: int = 0, joiner: Joiner | None = None,
                   expand: Callable | None = None) -> wds.DataPipeline:
    """The sample pipeline: shards -> (rank, worker) split -> samples -> shuffle -> decode -> batches.

    `expand` turns each raw sample into several before shuffling (VQA: one per question, the image shared).
    """
    handler = wds.warn_and_continue
    if skip_batches and not resampled:
        raise ValueError("skip_batches (mid-epoch resume) needs the resampled mode")
    offset = skip_batches  # worker roles rotate on resume, see _SkipBatches
    if resampled:
        stages: list = [wds.ResampledShards(shards, seed=seed, deterministic=True,
                                            worker_seed=_WorkerSeed(seed, epoch, offset))]
    else:
        stages = [wds.SimpleShardList(shards)]
        if train:
            stages.append(_EpochShardShuffle(seed, epoch))
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(_tar_samples)
    if joiner is not None:
        stages.append(_Join(joiner))
    if expand is not None:
        stages.append(expand)
    if train:
        stages.append(_SeededSampleShuffle(shuffle_buffer, shuffle_initial, seed, epoch, offset))
    if skip_batches:
        stages.append(_SkipBatches(skip_batches, batch_size))
    limits = joiner.limits if joiner is not None else None
    if limits is not None:  # registered web shards: images decoded by the web rules
        decode = wds.map(_DecodeImages(limits), handler=handler)
    else:
        decode = wds.decode("pilrgb", handler=handler)
    stages += [
        decode,
        wds.map(_ToItem(transform, max_words, train, seed, epoch), handler=handler),
        wds.batched(batch_size, collation_fn=_collate, partial=not train),
    ]
    return wds.DataPipeline(*stages)


def build_loader(shards: list[str], transform: Callable, batch_size: int, *, train: bool, seed: int,
                 num_workers: int, max_words: int, epoch: SharedEpoch | None = None, resampled: bool = False,
                 batches_per_epoch: int | None = None, shuffle_buffer: int = 1000,
                 shuffle_initial: int = 100, skip_batches: int = 0, joiner: Joiner | None = None,
                 expand: Callable | None = None) -> tuple[wds.WebLoader, SharedEpoch]:
    """A WebLoader of `Batch`es and the epoch handle to advance it; resampled loaders need a length.

    `skip_batches` resumes an epoch mid-way: the loader yields what an uninterrupted one would have
    yielded after that many batches (same samples, same augmentation). `joiner` reads selection datasets;
    `expand` makes several samples of one (see build_pipeline).
    """
    epoch = epoch or SharedEpoch()
    rank, world, _, _ = pytorch_worker_info()
    if not resampled and len(shards) < world * max(1, num_workers):
        raise ValueError(f"{len(shards)} shards cannot feed {world} ranks x {max(1, num_workers)} workers; "
                         "write more, smaller shards (ingest.shard_size) or use resampled mode")
    pipeline = build_pipeline(shards, transform, batch_size, train=train, seed=seed, epoch=epoch,
                              max_words=max_words, resampled=resampled, shuffle_buffer=shuffle_buffer,
                              shuffle_initial=shuffle_initial, skip_batches=skip_batches, joiner=joiner,
                              expand=expand)
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers,
                           persistent_workers=False)
    if resampled:
        if not batches_per_epoch:
            raise ValueError("a resampled (epoch-less) loader needs batches_per_epoch")
        loader = loader.with_epoch(batches_per_epoch - skip_batches)
    return loader, epoch
