"""CapFilt's input pipeline: a shard read once, its images decoded and resized by CPU processes.

The shard is streamed once, by the process that runs the models (at a billion pairs, the object
store's bytes are the cost to keep at 1x). Its samples' cleaned texts are checked there; the image
bytes go in batches to `loader_workers` processes that decode each image once (`images.open_image`,
the rules every reader shares), hash its bytes and pixels, and resize and normalise it once per
distinct model input (image size, mean, std). The next batch is decoded while the models run on this
one. Results come back in shard order whatever the number of workers, so the output cannot depend
on it. Unusable samples arrive as a skip with its reason and keep their place in that order: a member
over ingest.max_member_bytes (never read), a bad caption, an image that does not decode or is out of
bounds, each sample a broken shard lost (by the manifest's count).
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from blip.config import IngestConfig
from blip.data.images import ImageError, open_image, pixel_digest
from blip.data.ingest import Tally
from blip.data.web import WebSample, parse_web_sample, read_web_shard


@dataclass
class Decoded:
    """One web sample ready for the models, or the reason it was skipped."""

    key: str
    skip: str | None = None           # a skip reason (the manifest's `skipped` names) when unusable
    text: str = ""
    meta: dict = field(default_factory=dict)
    image_sha256: str = ""            # of the file's bytes, as stored
    pixels_sha256: str = ""           # of the decoded picture (images.pixel_digest)
    fixes: tuple[str, ...] = ()
    pixels: tuple[torch.Tensor, ...] = ()  # one normalised image per distinct model transform


def decode(sample: WebSample, transforms: list[Callable], cfg: IngestConfig) -> Decoded:
    """A parsed web sample -> its model inputs and digests; a skip when the image is unusable."""
    if sample.skip:
        return Decoded(sample.key, skip=sample.skip)
    try:
        opened = open_image(sample.image, cfg)
    except ImageError as e:
        return Decoded(sample.key, skip=e.reason)
    pixels = tuple(t(opened.image) for t in transforms)
    return Decoded(sample.key, text=sample.text, meta=sample.meta,
                   image_sha256=hashlib.sha256(sample.image).hexdigest(),
                   pixels_sha256=pixel_digest(opened.image), fixes=sample.fixes + opened.fixes, pixels=pixels)


def shard_samples(url: str, cfg: IngestConfig, expected: int | None, limit: int | None = None
                  ) -> Iterator[WebSample]:
    """A shard's samples (its first `limit`), parsed, in order, with a skip in place of each one a broken
    shard lost (counted by `expected`, the manifest's count)."""
    tally, read = Tally(), 0
    for i, (key, members) in enumerate(itertools.islice(read_web_shard(url, tally, cfg.max_member_bytes, expected),
                                                        limit)):
        read = i + 1
        yield parse_web_sample(key, members, cfg)
    lost = tally.skipped["broken_shard"]
    for i in range(read, read + lost if limit is None else min(limit, read + lost)):
        yield WebSample(f"{url}#{i}", skip="broken_shard")


_WORKER: tuple[list[Callable], IngestConfig] | None = None


def _init_worker(transforms: list[Callable], cfg: IngestConfig) -> None:
    global _WORKER
    torch.set_num_threads(1)  # each worker is one core's worth of decoding
    _WORKER = (transforms, cfg)


def _decode_in_worker(sample: WebSample) -> Decoded:
    return decode(sample, *_WORKER)


class Decoder:
    """Decodes batches of samples in `workers` processes (in this process with 0), results in order.
    Made once per model set and reused for every shard: the processes start once."""

    def __init__(self, transforms: list[Callable], cfg: IngestConfig, workers: int):
        self.transforms, self.cfg, self.workers = transforms, cfg, workers
        self.pool = None
        if workers:
            # forkserver: workers never inherit the parent's CUDA context (fork would); the server imports
            # this module (torch, PIL) once, so the workers start in milliseconds
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self.pool = context.Pool(workers, initializer=_init_worker, initargs=(transforms, cfg))

    def submit(self, samples: list[WebSample]):
        """Start decoding a batch; `.get()` on the result waits for it."""
        if self.pool is None:
            return _Ready([decode(s, self.transforms, self.cfg) for s in samples])
        return self.pool.map_async(_decode_in_worker, samples, chunksize=max(1, len(samples) // (4 * self.workers)))

    def close(self) -> None:
        """Stop the worker processes."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Ready:
    value: list

    def get(self) -> list:
        return self.value


def decoded_batches(url: str, decoder: Decoder, batch_size: int, expected: int | None,
                    limit: int | None = None) -> Iterator[list[Decoded]]:
    """The shard's samples in order, decoded, in lists of `batch_size` (skips included, so they are counted).
    The next batch is read and decoding while the caller works on this one."""
    samples = shard_samples(url, decoder.cfg, expected, limit)
    pending = None
    while True:
        raw = list(itertools.islice(samples, batch_size))
        following = decoder.submit(raw) if raw else None
        if pending is not None:
            yield pending.get()
        if following is None:
            return
        pending = following


def stack_pixels(batch: list[Decoded], which: int, device: torch.device) -> torch.Tensor:
    """One model input (transform `which`) of a batch's usable samples, on `device` (copied asynchronously
    from pinned memory to a GPU)."""
    pixels = torch.stack([s.pixels[which] for s in batch])
    if device.type == "cuda":
        return pixels.pin_memory().to(device, non_blocking=True)
    return pixels
