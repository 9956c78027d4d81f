"""One CapFilt scoring job: every web shard scored once, as Ray tasks on an actor pool, resumable anywhere.

Input web shards are the unit of work. Score table i (one row per candidate text: the web text and
every synthetic caption, with every filter's scores) is a pure function of input shard i, the models,
the params and the seed. So the job is a map over shards (workers.py: an actor per GPU, the models
loaded once per actor, each shard read once), and Ray does what a cluster needs: it places the
actors, hands the next shard to whichever actor is free, restarts an actor that died and runs its
shard again. Nothing here claims, leases or locks.

The tables are filed under the job's fingerprint (inputs, models, params, seed, round, precision) in
`capfilt.tables`, so a table that exists is a finished shard of this very job: a re-run of the same
job, wherever it runs (a retried flow run in a fresh experiment folder, another cluster), scores only
the shards still missing. The driver then writes the metrics, the MLflow run and, last, the scores
manifest (the commit point), which names every table by URL and sha256.

Which texts to keep is not decided here: `blip select` (blip/selection) reads the tables.

    blip capfilt                                               # the DVC stage: a local Ray on this machine
    RAY_ADDRESS=head:6379 blip capfilt --output s3://bucket/scores   # a cluster (infra/ray-slurm.sbatch)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blip.capfilt.formats import CALIBRATION, SCORES_FORMAT
from blip.capfilt.scoring import RunSettings, model_id
from blip.capfilt.workers import ShardScorer, Work
from blip.cluster import cluster_nodes, map_ordered, ray_session
from blip.config import Params, to_dict
from blip.data import storage
from blip.data.parquet import table_meta
from blip.data.shards import MANIFEST, atomic_write_json, unfinish
from blip.data.web import web_shards
from blip.launch import resolve_precision
from blip.layout import WORKSPACE

# the ingest params that decide which web samples are usable: the tables depend on them
SAMPLE_LIMITS = ("max_words", "max_caption_chars", "max_pixels", "max_member_bytes", "min_side", "max_aspect")
# settings the output does not depend on: a run may resume another's shards with other values. The batch
# size stays in: captions do not depend on it (sampling is keyed per image), but a CPU's or GPU's matrix
# kernels round differently for other batch shapes, so scores may differ in the last digit
NOT_FINGERPRINTED = ("workers", "cpus_per_worker", "tables")


def plan(web_dirs: list[str]) -> list[Work]:
    """Every input web shard, in manifest order."""
    shards = [s for d in web_dirs for s in web_shards(d)]
    return [Work(i, storage.absolute(s.url), s.check, s.samples, storage.portable(s.url))
            for i, s in enumerate(shards)]


def cache_root() -> str:
    """Where this machine keeps what a re-run may reuse: $BLIP_CACHE, else ~/.cache/blip."""
    return os.path.abspath(os.environ.get("BLIP_CACHE") or str(Path("~/.cache/blip").expanduser()))


@dataclass
class CapfiltJob:
    """What to score with what, and where the manifest and tables go."""

    params: Params
    captioners: list[str]
    filters: list[str]
    web: list[str]
    output: str                         # the scores manifest's folder (local or a URL)
    round: int = 1
    calibrate_on: str = str(WORKSPACE.human("val"))
    metrics: Path | None = None
    name: str = "capfilt"
    device: str | None = None           # None: params inference.device
    tables: str | None = None           # None: params capfilt.tables (see tables_root)
    work: list[Work] = field(init=False)
    recorded_calibrate_on: str = field(init=False)  # how manifests and the fingerprint name it

    def __post_init__(self):
        # every path the Ray workers get is absolute: they do not share the driver's working directory
        self.output = storage.absolute(storage.check_url(str(self.output)))
        if self.tables is not None:
            self.tables = storage.absolute(storage.check_url(self.tables))
        self.captioners = [storage.absolute(m) for m in self.captioners]
        self.filters = [storage.absolute(m) for m in self.filters]
        self.recorded_calibrate_on = storage.portable(storage.check_url(self.calibrate_on))
        self.calibrate_on = storage.absolute(self.calibrate_on)
        self.work = plan(self.web)

    def fingerprint(self, precision: str) -> str:
        """What finished tables must match to be reused: inputs, models, settings, seed, round, precision."""
        cfg = {k: v for k, v in to_dict(self.params.capfilt).items() if k not in NOT_FINGERPRINTED}
        # what the job reads, by names that hold in any workspace: the same job run again in another folder (a
        # retried flow run's experiment) has the same fingerprint, so it finds the tables it already wrote
        parts = {"inputs": [(w.recorded, w.check) for w in self.work],
                 "models": [model_id(p) for p in self.captioners + self.filters], "cfg": cfg,
                 "calibrate_on": self.recorded_calibrate_on, "seed": self.params.seed, "round": self.round,
                 "precision": precision, **{k: getattr(self.params.ingest, k) for k in SAMPLE_LIMITS}}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def tables_root(self) -> str:
        """Where the job's table folder goes: --tables, params capfilt.tables, beside a remote output, or the
        local cache (a path that a retried run in another experiment folder finds again)."""
        root = self.tables or self.params.capfilt.tables
        if root:
            return storage.absolute(storage.check_url(os.path.expanduser(root)))
        if storage.is_remote(self.output):
            return storage.join(self.output, "tables")
        return storage.join(cache_root(), "scores")

    def settings(self, precision: str) -> RunSettings:
        """What every shard of this job is processed with."""
        p = self.params
        return RunSettings(cfg=p.capfilt, seed=p.seed, round=self.round, ingest=p.ingest, precision=precision,
                           loader_workers=p.inference.loader_workers)


@dataclass(frozen=True)
class Placement:
    """How many actors, with what resources, on which kind of device."""

    workers: int
    cpus: int
    gpus: int
    device: str     # the device spec each actor resolves (auto | cpu | cuda | cuda:N)
    kind: str       # cuda | cpu: what the actors run on, for the precision


def placement(job: CapfiltJob) -> Placement:
    """The actor pool's shape, from params and what the joined cluster has."""
    import ray

    p = job.params
    spec = (job.device or p.inference.device).strip().lower()
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if spec != "cpu" and spec != "auto" and not gpus:
        raise ValueError(f"device {spec!r} was asked for, but the Ray cluster has no GPU "
                         f"({cpus} CPUs); use --device cpu or auto")
    on_gpu = gpus > 0 and spec != "cpu"
    workers = p.capfilt.workers or (gpus if on_gpu else 1)
    per = p.capfilt.cpus_per_worker or (p.inference.loader_workers + 1 if on_gpu else max(1, cpus // workers))
    return Placement(workers, per, 1 if on_gpu else 0, spec, "cuda" if on_gpu else "cpu")


class Progress:
    """Shards done out of the total, images/s and an ETA: a line in the log per finished shard, and a
    `[progress]` JSON line that the Prefect flow turns into an artifact updated during the run."""

    def __init__(self, total: int, resumed: int, log):
        self.total, self.done, self.log = total, resumed, log
        self.scored, self.images, self.start = 0, 0, time.time()

    def shard(self, counts: dict) -> None:
        self.done, self.scored = self.done + 1, self.scored + 1
        self.images += counts.get("images", 0)
        elapsed = time.time() - self.start
        rate = self.images / max(elapsed, 1e-9)
        eta = (self.total - self.done) * elapsed / self.scored
        self.log(f"capfilt: {self.done}/{self.total} shards, {self.images} images scored in {elapsed:.0f} s "
                 f"({rate:.1f} images/s), ETA {eta:.0f} s")
        self.log("[progress] " + json.dumps({"stage": "capfilt", "done": self.done, "total": self.total,
                                             "images": self.images, "images_per_s": round(rate, 2),
                                             "eta_s": round(eta, 1)}))


def _resumed_entry(url: str) -> dict:
    """A finished table's manifest entry, read back (a Ray task): its footer's record and its bytes' sha256."""
    record, rows = table_meta(url)
    if record is None:
        raise ValueError(f"{url}: a table without CapFilt's record in its footer: not written by this job; delete "
                         "it and re-run `blip capfilt`")
    return {"url": url, "rows": rows, "bytes": storage.size(url), "sha256": storage.sha256(url),
            **({"input": record["input"], "counts": record["counts"]} if "input" in record else {})}


def run_capfilt(job: CapfiltJob, log=print) -> dict:
    """Run the job to its manifest on the joined Ray cluster (a local one on a laptop); returns the metrics."""
    import ray
    from ray.util import ActorPool

    start = time.time()
    with ray_session():
        where = placement(job)
        precision = resolve_precision(job.params.inference.precision, torch.device(where.kind))
        stamp = job.fingerprint(precision)
        folder = storage.join(job.tables_root(), stamp)
        if cluster_nodes() > 1 and not storage.is_remote(folder):
            log(f"capfilt: warning: the tables go to the local path {folder} on a cluster of {cluster_nodes()} nodes; "
                "every node must see it (a shared filesystem), else set capfilt.tables to an s3:// URL")
        storage.make_folder(folder)
        unfinish(job.output)  # unreadable until this job's manifest is written
        finished = set(storage.names(folder, "scores-*.parquet"))
        todo = [w for w in job.work if w.out_name not in finished]
        calibrated = storage.exists(storage.join(folder, CALIBRATION))
        log(f"capfilt: {len(job.work)} shards of {', '.join(job.web)}; {len(job.work) - len(todo)} already scored "
            f"in {folder}; {where.workers} Ray worker(s) on {where.kind} ({where.cpus} CPUs each), {precision}")
        entries: dict[int, dict] = {}
        calibration = None
        progress = Progress(len(job.work), len(job.work) - len(todo), log)
        if todo or not calibrated:
            actor = ray.remote(ShardScorer).options(num_cpus=where.cpus, num_gpus=where.gpus, max_restarts=3,
                                                    max_task_retries=3)
            run = job.settings(precision)
            actors = [actor.remote(job.captioners, job.filters, run, where.device, where.cpus)
                      for _ in range(min(where.workers, max(1, len(todo))))]
            pending_calibration = None if calibrated else actors[0].calibrate.remote(
                job.calibrate_on, job.params.seed, job.params.ingest.max_words, folder, stamp)
            pool = ActorPool(actors)
            for entry in pool.map_unordered(lambda a, w: a.score.remote(w, folder, stamp), todo):
                entries[entry.pop("index")] = entry
                progress.shard(entry["counts"])
            if pending_calibration is not None:
                calibration = ray.get(pending_calibration)
            ray.get([a.close.remote() for a in actors])
            for a in actors:
                ray.kill(a)
        resumed = [w for w in job.work if w.index not in entries]
        for w, entry in zip(resumed, map_ordered(_resumed_entry, [storage.join(folder, w.out_name) for w in resumed])):
            entries[w.index] = entry
        if calibration is None:
            calibration = _resumed_entry(storage.join(folder, CALIBRATION))
    return finish(job, [entries[w.index] for w in job.work], calibration, stamp, folder, where,
                  time.time() - start, progress, log)


def finish(job: CapfiltJob, tables: list[dict], calibration: dict, stamp: str, folder: str, where: Placement,
           seconds: float, progress: Progress, log=print) -> dict:
    """The finishing step: metrics, MLflow run, then the manifest (the commit point)."""
    from blip.tracking import Tracker, data_hashes, flatten, git_commit

    counts: Counter = Counter()
    for t in tables:
        counts.update(t["counts"])
    ids = [model_id(p) for p in job.captioners + job.filters]
    manifest = {"format": SCORES_FORMAT, "rows": sum(t["rows"] for t in tables), "tables": tables,
                "calibration": calibration, "counts": dict(sorted(counts.items())), "fingerprint": stamp,
                "folder": folder, "round": job.round, "captioners": ids[:len(job.captioners)],
                "filters": ids[len(job.captioners):], "method": job.params.capfilt.method,
                "captions_per_image": job.params.capfilt.captions_per_image, "inputs": job.web,
                "calibrate_on": job.recorded_calibrate_on}
    metrics = {"images": counts.get("images", 0), "candidates": manifest["rows"],
               "web_texts": counts.get("web_total", 0), "synthetic_texts": counts.get("synthetic_total", 0),
               "skipped": {k[len("skipped_"):]: v for k, v in counts.items() if k.startswith("skipped_")},
               "normalised": {k[len("normalised_"):]: v for k, v in counts.items() if k.startswith("normalised_")},
               "calibration_pairs": calibration["rows"], "shards": len(tables),
               "shards_resumed": len(tables) - progress.scored, "workers": where.workers,
               "seconds": round(seconds, 1), "scored_images_per_s": round(progress.images / max(
                   time.time() - progress.start, 1e-9), 2) if progress.scored else None}
    if job.metrics:
        job.metrics.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.metrics, metrics)
    tracker = Tracker(job.params.tracking.uri, job.params.tracking.experiment, job.name)
    tracker.params({"capfilt": {k: v for k, v in vars(job.params.capfilt).items() if not isinstance(v, list)},
                    "round": job.round, "inputs": ",".join(job.web)})
    tracker.tags({"stage": "capfilt", "git_commit": git_commit(), "captioner": "+".join(manifest["captioners"]),
                  "filter": "+".join(manifest["filters"]), "tables": folder, **data_hashes(job.web)})
    tracker.metrics({k: float(v) for k, v in flatten(metrics).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if job.metrics:
        tracker.artifact(job.metrics)
    tracker.end()
    storage.make_folder(job.output)
    atomic_write_json(storage.join(job.output, MANIFEST), manifest)
    log(f"capfilt: {metrics['candidates']} candidate texts of {metrics['images']} web images -> {job.output} "
        f"in {seconds:.0f} s ({metrics['shards_resumed']} of {len(tables)} shards were already scored)")
    return metrics
