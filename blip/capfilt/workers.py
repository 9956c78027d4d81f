"""The Ray actor that scores shards: the models loaded once, then one shard per call, written straight to storage.

An actor holds one GPU (or `cpus_per_worker` CPU slots on a laptop), the captioners and filters on it,
and a pool of image-decoding processes. Each `score` call reads one input shard once, scores every
candidate text, and writes the table to the job's table folder (local or object storage) with its
statistics in the table's own footer, so a table that exists is a finished shard. Ray restarts an
actor that died and runs its call again; the table is a pure function of the shard, the models and
the params, so a shard scored twice is written with the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from blip.capfilt.formats import CALIBRATION, TABLE_PATTERN
from blip.capfilt.scoring import Member, RunSettings, calibration_table, decoder_for, load_member, score_web_shard
from blip.data import storage
from blip.data.parquet import write_table
from blip.launch import resolve_device


@dataclass(frozen=True)
class Work:
    """One unit of work: an input web shard and the score table it becomes."""

    index: int
    url: str       # where the worker reads it (absolute)
    check: dict    # the input's content tag or sha256, as its manifest records it
    samples: int
    recorded: str  # how manifests and fingerprints name it (storage.portable: relative inside the workspace)

    @property
    def out_name(self) -> str:
        return TABLE_PATTERN.format(self.index)


class ShardScorer:
    """Captioners and filters on one device; scores whole shards (run as a Ray actor)."""

    def __init__(self, captioners: list[str], filters: list[str], run: RunSettings, device: str, threads: int):
        torch.set_num_threads(threads)
        # Ray gives a GPU actor its own CUDA_VISIBLE_DEVICES: its GPU is device 0
        self.device = resolve_device(device, 0)
        self.run = run
        self.captioners: list[Member] = [load_member(m, self.device) for m in captioners]
        self.filters: list[Member] = [load_member(m, self.device) for m in filters]
        self.decoder, _ = decoder_for(self.captioners, self.filters, run)

    def pid(self) -> int:
        """This actor's process id (a test kills it mid-shard)."""
        return os.getpid()

    def score(self, work: Work, folder: str, fingerprint: str) -> dict:
        """Score one shard and write its table; returns the table's manifest entry with the shard's counts."""
        with torch.inference_mode():
            table, stats = score_web_shard(work.url, self.captioners, self.filters, self.run, expected=work.samples,
                                           decoder=self.decoder, shard_name=work.recorded)
        record = {"fingerprint": fingerprint, "index": work.index,
                  "input": {"url": work.recorded, "samples": work.samples, **work.check},
                  "counts": stats.to_dict()["counts"]}
        url = storage.join(folder, work.out_name)
        entry = write_table(url, table, record)
        return {"index": work.index, "url": url, "rows": entry["rows"], "bytes": entry["bytes"],
                "sha256": entry["sha256"], "input": record["input"], "counts": record["counts"]}

    def calibrate(self, human_val: str, seed: int, max_words: int, folder: str, fingerprint: str) -> dict:
        """Score the human val pairs that select calibrates on, and write their table."""
        with torch.inference_mode():
            table = calibration_table(self.filters, human_val, seed, max_words, self.run.precision)
        url = storage.join(folder, CALIBRATION)
        entry = write_table(url, table, {"fingerprint": fingerprint, "calibrate_on": human_val})
        return {"url": url, "rows": entry["rows"], "bytes": entry["bytes"], "sha256": entry["sha256"]}

    def close(self) -> None:
        """Stop the decoding processes (before the actor is let go)."""
        self.decoder.close()
