"""One CapFilt scoring job on any number of ranks: claim shards, score them, finish once.

Input web shards are the unit of work. Score table i (one row per candidate text: the web text and
every synthetic caption, with every filter's scores) is a pure function of input shard i, the models,
the params and the seed, so ranks need not agree on who does what: each claims the next free shard
(claims.py), writes its table atomically, then commits a small JSON of its statistics (`parts/`), which
marks it done. Ranks may start late, stop, die or be added; a dead rank's shards are taken over when
its lease expires. The human val pairs that select calibrates on are scored once, the same way. The
rank that finds every shard done claims the finishing step: metrics, MLflow run, then the manifest
(the commit point). A re-run of the same command resumes whatever is unfinished.

Which texts to keep is not decided here: `blip select` (blip/selection) reads the tables.

    blip capfilt                                     # one process (the DVC stage)
    blip capfilt --procs 4                           # four local ranks
    torchrun --nnodes 4 --nproc-per-node 8 -m blip.cli capfilt ...   # or a Slurm array, a k8s Indexed Job
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch

from blip.capfilt.claims import Claims, Lease, LeaseLost, create_new, owner_id
from blip.capfilt.scoring import Member, RunSettings, calibration_table, load_member, model_id, score_web_shard
from blip.capfilt.world_quality import world_quality
from blip.config import Params, to_dict
from blip.data import storage
from blip.data.parquet import write_table
from blip.data.shards import MANIFEST, atomic_write_json, read_manifest
from blip.launch import Ranks, ranks_from_env, resolve_device, resolve_precision

SCORES_FORMAT = "blip-scores/1"
TABLE_PATTERN = "scores-{:06d}.parquet"
CALIBRATION = "calibration.parquet"  # the human val pairs, scored
PARTS = "parts"                  # per-shard statistics: a shard is done when its part exists
CLAIMS = f"{PARTS}/claims"       # leases and the start time, while the job runs
# the ingest params that decide which web samples are usable: the tables depend on them
SAMPLE_LIMITS = ("max_words", "max_caption_chars", "max_pixels", "max_member_bytes")
# settings the output does not depend on: a run may resume another's shards with other values. The batch
# size stays in: captions do not depend on it (sampling is keyed per image), but a CPU's or GPU's matrix
# kernels round differently for other batch shapes, so scores may differ in the last digit
NOT_FINGERPRINTED = ("procs", "lease_seconds", "poll_seconds")


@dataclass
class Work:
    """One unit of work: an input web shard and the score table it becomes."""

    index: int
    path: str
    sha256: str    # as the input's manifest records it
    samples: int

    @property
    def out_name(self) -> str:
        return TABLE_PATTERN.format(self.index)


def plan(web_dirs: list[str]) -> list[Work]:
    """Every input web shard, in manifest order."""
    entries = [(storage.join(d, e["name"]), e["sha256"], e["samples"]) for d in web_dirs
               for e in read_manifest(d)["shards"]]
    return [Work(i, *entry) for i, entry in enumerate(entries)]


@dataclass
class CapfiltJob:
    """What to score with what, and where the tables go; every rank builds the same job."""

    params: Params
    captioners: list[str]
    filters: list[str]
    web: list[str]
    output: Path
    round: int = 1
    calibrate_on: str = "data/human/val"
    metrics: Path | None = None
    name: str = "capfilt"
    device: str | None = None           # None: params inference.device
    work: list[Work] = field(init=False)

    def __post_init__(self):
        self.output = Path(self.output)
        self.work = plan(self.web)

    def fingerprint(self, precision: str) -> str:
        """What finished tables must match to be reused: inputs, models, settings, seed, round, precision."""
        cfg = {k: v for k, v in to_dict(self.params.capfilt).items() if k not in NOT_FINGERPRINTED}
        parts = {"inputs": [(w.path, w.sha256) for w in self.work],
                 "models": [model_id(p) for p in self.captioners + self.filters], "cfg": cfg,
                 "calibrate_on": self.calibrate_on, "seed": self.params.seed, "round": self.round,
                 "precision": precision, **{k: getattr(self.params.ingest, k) for k in SAMPLE_LIMITS}}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def part_path(out_dir: Path, work: Work) -> Path:
    """Where a shard's statistics go: their presence marks the shard done."""
    return out_dir / PARTS / f"{work.out_name}.json"


def _stamp(out_dir: Path) -> str | None:
    stamp_file = out_dir / PARTS / "fingerprint"
    return stamp_file.read_text().strip() if stamp_file.is_file() else None


def clear_other_job(out_dir: Path, stamp: str, claims: Claims) -> None:
    """A plain single run may reuse a folder that holds another job's output: clear it first, unless that
    job is still running there (a live lease), which is refused."""
    if _stamp(out_dir) in (None, stamp):
        return
    running = claims.live()
    if running:
        raise RuntimeError(f"{out_dir}: another capfilt job (other inputs, models or params) is running here, "
                           f"holding {', '.join(running[:3])}; give this job another --output, or wait for that "
                           "one to finish")
    for old in list(out_dir.glob("scores-*.parquet")) + list(out_dir.glob(".*.tmp")) + [out_dir / MANIFEST,
                                                                                        out_dir / CALIBRATION]:
        old.unlink(missing_ok=True)
    for old in sorted((out_dir / PARTS).rglob("*"), reverse=True):
        old.rmdir() if old.is_dir() else old.unlink()


def join_output(out_dir: Path, stamp: str) -> None:
    """Stamp the output folder with this job, or refuse one that holds another job's shards."""
    (out_dir / CLAIMS).mkdir(parents=True, exist_ok=True)
    # the first rank to arrive stamps the folder; the others read its stamp
    found = stamp if create_new(out_dir / PARTS / "fingerprint", stamp + "\n") else _stamp(out_dir)
    if found != stamp:
        raise RuntimeError(f"{out_dir} holds tables of another capfilt job (other inputs, models or params); "
                           "give this job another --output, or delete that folder")


def finished(out_dir: Path, stamp: str) -> bool:
    """Whether this job's manifest is already written."""
    if not (out_dir / MANIFEST).is_file():
        return False
    return json.loads((out_dir / MANIFEST).read_text()).get("fingerprint") == stamp


class Rank:
    """One process's share of a job: models on its device, claims on the shared output folder."""

    def __init__(self, job: CapfiltJob, ranks: Ranks, log=print):
        p = job.params
        self.job, self.ranks, self.log = job, ranks, log
        self.device = resolve_device(job.device or p.inference.device, ranks.local_rank)
        self.precision = resolve_precision(p.inference.precision, self.device)
        self.stamp = job.fingerprint(self.precision)
        self.out = job.output
        self.claims = Claims(self.out / CLAIMS, owner_id(ranks.rank), p.capfilt.lease_seconds)
        self._models: tuple[list[Member], list[Member]] | None = None

    def models(self) -> tuple[list[Member], list[Member]]:
        """Captioners and filters, loaded on first use (a rank that only finishes the job loads none)."""
        if self._models is None:
            self._models = ([load_member(m, self.device) for m in self.job.captioners],
                            [load_member(m, self.device) for m in self.job.filters])
        return self._models

    def wait(self) -> None:
        """Sleep until the next look at the claims."""
        time.sleep(self.job.params.capfilt.poll_seconds)

    def score_calibration_pairs(self) -> None:
        """Score the human val pairs that select calibrates on (done by whichever rank claims it first)."""
        path = self.out / CALIBRATION
        while not path.is_file():
            lease = self.claims.try_claim("calibration")
            if lease is None:
                self.wait()
                continue
            with lease:
                if not path.is_file():
                    p = self.job.params
                    with torch.inference_mode():
                        table = calibration_table(self.models()[1], self.job.calibrate_on, p.seed, p.ingest.max_words,
                                                  self.precision)
                    write_table(path, table)
                    self.log(f"capfilt: scored {table.num_rows} calibration pairs of {self.job.calibrate_on}")

    def settings(self) -> RunSettings:
        """What every shard of this job is processed with, on this rank."""
        p = self.job.params
        return RunSettings(cfg=p.capfilt, seed=p.seed, round=self.job.round, ingest=p.ingest,
                           precision=self.precision, loader_workers=p.inference.loader_workers)

    def process(self, w: Work, run: RunSettings, lease: Lease) -> None:
        """Score one shard and commit it: the table first, then its part, which marks it done."""
        start = time.time()
        captioners, filters = self.models()
        with torch.inference_mode():
            table, stats = score_web_shard(w.path, captioners, filters, run, between_batches=lease.check,
                                           expected=w.samples)
        entry = write_table(self.out / w.out_name, table)
        atomic_write_json(part_path(self.out, w), {"table": entry, "input": {"url": w.path, "sha256": w.sha256,
                                                                               "samples": w.samples},
                                                   **stats.to_dict()})
        self.log(f"[capfilt] rank {self.ranks.rank}: {w.out_name} {stats.counts['images']} images, "
                 f"{entry['rows']} candidate texts, {stats.counts['images'] / max(time.time() - start, 1e-9):.1f} "
                 "images/s")

    def claim_shards(self, run: RunSettings) -> None:
        """Claim and process shards until every one is done (by this rank or others)."""
        work, done = self.job.work, set()
        # ranks start their scans at different places, so they rarely race for the same shard
        world = self.ranks.world or len(work)
        offset = (self.ranks.rank % world) * len(work) // world
        order = work[offset:] + work[:offset]
        while True:
            claimed = False
            for w in order:  # one pass: each unfinished shard is looked at once
                if w.index in done:
                    continue
                if part_path(self.out, w).is_file():
                    done.add(w.index)
                    continue
                lease = self.claims.try_claim(w.out_name)
                if lease is None:
                    continue
                claimed = True
                if lease.generation > 0:
                    self.log(f"[capfilt] rank {self.ranks.rank}: took over {w.out_name} (its holder's lease expired)")
                with lease:
                    if part_path(self.out, w).is_file():  # finished by another rank since we looked
                        continue
                    try:
                        self.process(w, run, lease)
                    except LeaseLost as e:  # the rank that took it over writes the same bytes
                        self.log(f"[capfilt] rank {self.ranks.rank}: {e}")
            if len(done) == len(work):
                return
            if not claimed:  # every unfinished shard is held by a live rank: wait for it, or its lease to expire
                self.wait()

    def finish(self) -> dict | None:
        """Claim the finishing step and do it; None when another rank is doing it."""
        lease = self.claims.try_claim("finish")
        if lease is None:
            return None
        with lease:
            if finished(self.out, self.stamp):
                return None
            return finish(self.job, self.out, self.stamp, self.log)

    def run(self) -> dict | None:
        """This rank's part of the job, to the end: the manifest, written by this rank or another."""
        if finished(self.out, self.stamp):
            self.log(f"capfilt: {self.out} is already finished")
            shutil.rmtree(self.out / CLAIMS, ignore_errors=True)  # left by a finisher that died after the manifest
            return None
        join_output(self.out, self.stamp)
        self._start_clock()
        self.score_calibration_pairs()
        run = self.settings()
        while True:
            self.claim_shards(run)
            result = self.finish()
            if result is not None or finished(self.out, self.stamp):
                return result
            self.wait()  # another rank is finishing: wait for its manifest, or take over if it died

    def _start_clock(self) -> None:
        """Record when the job first started (for images/s over the whole job, restarts included)."""
        create_new(self.out / CLAIMS / "started", f"{time.time()}\n")


def manifest_from_parts(job: CapfiltJob, out_dir: Path, fields: dict) -> dict:
    """The scores manifest, from the per-shard parts (every shard must be done)."""
    missing = [w.out_name for w in job.work if not part_path(out_dir, w).is_file()]
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} shard(s) not finished ({', '.join(missing[:5])}); "
                           "re-run `blip capfilt` with the same arguments to finish them")
    parts = [json.loads(part_path(out_dir, w).read_text()) for w in job.work]
    counts: Counter = Counter()
    for part in parts:
        counts.update(part["counts"])
    path = out_dir / CALIBRATION
    calibration = {"name": CALIBRATION, "rows": pq.read_metadata(path).num_rows, "bytes": path.stat().st_size,
                   "sha256": storage.sha256(path)}
    return {"format": SCORES_FORMAT, "rows": sum(p["table"]["rows"] for p in parts),
            "tables": [{**p["table"], "input": p["input"], "counts": p["counts"]} for p in parts],
            "calibration": calibration, "counts": dict(sorted(counts.items())), **fields}


def finish(job: CapfiltJob, out_dir: Path, stamp: str, log=print) -> dict:
    """The finishing step: metrics, MLflow run, then the manifest (the commit point: a finisher that dies
    before it is redone by the next rank or re-run); the job's claims are cleared."""
    from blip.tracking import Tracker, data_hashes, flatten, git_commit

    started = out_dir / CLAIMS / "started"
    seconds = time.time() - (float(started.read_text()) if started.is_file() else time.time())
    ids = [model_id(p) for p in job.captioners + job.filters]
    fields = {"fingerprint": stamp, "round": job.round, "captioners": ids[:len(job.captioners)],
              "filters": ids[len(job.captioners):], "method": job.params.capfilt.method,
              "captions_per_image": job.params.capfilt.captions_per_image, "inputs": job.web,
              "calibrate_on": job.calibrate_on}
    manifest = manifest_from_parts(job, out_dir, fields)
    counts = manifest["counts"]
    metrics = {"images": counts.get("images", 0), "candidates": manifest["rows"],
               "web_texts": counts.get("web_total", 0), "synthetic_texts": counts.get("synthetic_total", 0),
               "skipped": {k[len("skipped_"):]: v for k, v in counts.items() if k.startswith("skipped_")},
               "calibration_pairs": manifest["calibration"]["rows"], "seconds": round(seconds, 1),
               "web_images_per_s": round(counts.get("images", 0) / max(seconds, 1e-9), 2)}
    quality = world_quality(job.web, [str(out_dir / t["name"]) for t in manifest["tables"]],
                            job.params.ingest.max_member_bytes)
    if quality is not None:  # the built-in world: the filter and the captioner judged against its truth
        metrics["world"] = quality
    if job.metrics:
        job.metrics.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.metrics, metrics)
    tracker = Tracker(job.params.tracking.uri, job.params.tracking.experiment, job.name)
    tracker.params({"capfilt": {k: v for k, v in vars(job.params.capfilt).items() if not isinstance(v, list)},
                    "round": job.round, "inputs": ",".join(job.web)})
    tracker.tags({"stage": "capfilt", "git_commit": git_commit(), "captioner": "+".join(fields["captioners"]),
                  "filter": "+".join(fields["filters"]), **data_hashes(job.web)})
    tracker.metrics({k: float(v) for k, v in flatten(metrics).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if job.metrics:
        tracker.artifact(job.metrics)
    tracker.end()
    atomic_write_json(out_dir / MANIFEST, manifest)
    # committed: the job's transient state goes (leases, start time, leftovers of killed writers)
    shutil.rmtree(out_dir / CLAIMS, ignore_errors=True)
    for path in out_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    log(f"capfilt: {metrics['candidates']} candidate texts of {metrics['images']} web images -> {out_dir} "
        f"in {seconds:.0f} s ({metrics['web_images_per_s']} web images/s)")
    return metrics


def spawn_local_ranks(procs: int, argv: list[str]) -> None:
    """The laptop's launcher: run `blip <argv>` as `procs` local ranks and wait for them."""
    threads = str(max(1, (os.cpu_count() or 1) // procs))
    ranks = [subprocess.Popen([sys.executable, "-m", "blip.cli", *argv],
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": str(procs), "LOCAL_RANK": str(r),
                                   "OMP_NUM_THREADS": threads}) for r in range(procs)]
    codes = [r.wait() for r in ranks]
    if any(codes):
        raise RuntimeError(f"capfilt rank(s) failed with exit codes {codes}; finished shards are kept, "
                           "re-run the same command to resume")


def run_capfilt(job: CapfiltJob, procs: int = 1, argv: list[str] | None = None) -> None:
    """Run a CapFilt job from this process: as one rank of a launcher's job, or as `procs` local ranks
    running `blip <argv>` (the command that made this job)."""
    ranks = ranks_from_env()
    if ranks.launcher == "none" and procs > 1:
        rank = Rank(job, ranks)
        clear_other_job(job.output, rank.stamp, rank.claims)
        spawn_local_ranks(procs, argv or sys.argv[1:])
        if not finished(job.output, rank.stamp):
            raise RuntimeError(f"{job.output}: the ranks ended without a manifest; re-run the same command")
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or torch.get_num_threads())
    rank = Rank(job, ranks)
    if ranks.launcher == "none":
        clear_other_job(job.output, rank.stamp, rank.claims)
    rank.run()
