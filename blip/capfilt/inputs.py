"""CapFilt's input pipeline: a shard's samples decoded and resized in CPU worker processes.

The main process only runs models; `loader_workers` processes read the shard, decode each JPEG once,
resize and normalise it once per distinct model input (image size, mean, std) and hand the tensors
over. Worker w takes the samples whose index is w modulo the worker
count and the DataLoader takes one item from each worker in turn, so the items arrive in shard order
whatever the number of workers: the output cannot depend on it. Unusable samples arrive as a skip
with its reason, so they keep their place in that order: a member over ingest.max_member_bytes (never
read), an image over ingest.max_pixels (never decoded), and each sample a broken shard lost (by the
input manifest's count) are skips like any other, never the end of the run.
"""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from blip.config import IngestConfig
from blip.data.ingest import Tally, read_web_shard, shard_problem
from blip.data.text import CaptionError, prepare_caption


@dataclass
class WebSample:
    """One web sample ready for the models, or the reason it was skipped."""

    key: str
    skip: str | None = None           # a count name (skipped_<reason>) when the sample is unusable
    jpeg: bytes = b""
    text: str = ""
    meta: dict | None = None
    pixels: tuple[torch.Tensor, ...] = ()  # one normalised image per distinct model transform


def decode_web_sample(key: str, members: dict, transforms: list[Callable], cfg: IngestConfig) -> WebSample:
    """A raw webdataset sample (its members by extension) -> the image tensors, cleaned text and metadata;
    a skip when unusable."""
    problem = shard_problem(key, members)
    if problem is not None:
        return WebSample(key, skip=f"skipped_{problem[0]}")
    try:
        text, _ = prepare_caption(members.get("txt", b""), cfg.max_words, cfg.max_caption_chars)
    except CaptionError as e:
        return WebSample(key, skip=f"skipped_{e.reason}")
    try:
        if "jpg" not in members:
            raise OSError("no jpg member")
        meta = json.loads(members["json"]) if "json" in members else {}
        with Image.open(io.BytesIO(members["jpg"])) as image:
            if image.width * image.height > cfg.max_pixels:  # read from the header: nothing decoded yet
                return WebSample(key, skip="skipped_too_many_pixels")
            image.load()
            rgb = image.convert("RGB")
        pixels = tuple(t(rgb) for t in transforms)
    except (OSError, ValueError, Image.DecompressionBombError):  # JSONDecodeError is a ValueError
        return WebSample(key, skip="skipped_bad_image_or_metadata")
    return WebSample(key, jpeg=members["jpg"], text=text, meta=meta, pixels=pixels)


class ShardSamples(IterableDataset):
    """A web shard's samples (its first `limit`), decoded; each worker takes every n-th one. `expected` is
    the shard's sample count (its manifest's): what a broken shard lost is counted by it."""

    def __init__(self, path: str, transforms: list[Callable], cfg: IngestConfig, expected: int | None = None,
                 limit: int | None = None):
        self.path, self.transforms, self.cfg, self.expected, self.limit = path, transforms, cfg, expected, limit

    def __iter__(self) -> Iterator[WebSample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        tally, read = Tally(), 0
        samples = read_web_shard(self.path, tally, self.cfg.max_member_bytes, self.expected)
        for i, (key, members) in enumerate(itertools.islice(samples, self.limit)):
            read = i + 1
            if i % workers == worker:
                yield decode_web_sample(key, members, self.transforms, self.cfg)
        lost = tally.skipped["broken_shard"]  # the samples after the break: each a skip in its place
        for i in range(read, read + lost if self.limit is None else min(self.limit, read + lost)):
            if i % workers == worker:
                yield WebSample(f"{self.path}#{i}", skip="skipped_broken_shard")


def _keep(item: WebSample) -> WebSample:
    return item  # no collation: items stay whole, the batches are formed in the main process


def web_batches(dataset: ShardSamples, batch_size: int, workers: int) -> Iterator[list[WebSample]]:
    """The shard's samples in order, in lists of `batch_size` (skips included, so they are counted)."""
    # forkserver: workers never inherit the parent's CUDA context (fork would); the server imports this
    # module (torch, PIL) once, so a shard's workers start in milliseconds
    multiprocessing.set_forkserver_preload([__name__])
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_keep,
                        # about two batches decoded ahead in all (a 384 px image is 1.8 MB as a tensor)
                        prefetch_factor=max(2, 2 * batch_size // workers) if workers else None,
                        multiprocessing_context="forkserver" if workers else None)
    batch: list[WebSample] = []
    for item in loader:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def stack_pixels(batch: list[WebSample], which: int, device: torch.device) -> torch.Tensor:
    """One model input (transform `which`) of a batch's usable samples, on `device` (copied asynchronously
    from pinned memory to a GPU)."""
    pixels = torch.stack([s.pixels[which] for s in batch])
    if device.type == "cuda":
        return pixels.pin_memory().to(device, non_blocking=True)
    return pixels
