"""One CapFilt job on any number of ranks: claim shards, bootstrap them, finish once.

Input shards are the unit of work. Output shard i is a pure function of input shard i, the models,
the params and the seed, so ranks need not agree on who does what: each claims the next free shard
(claims.py), writes it atomically, then commits a small JSON of its statistics (`parts/`), which marks
it done. Ranks may start late, stop, die or be added; a dead rank's shards are taken over when its
lease expires. The rank that finds every shard done claims the finishing step: the manifest (the
dataset's commit point), metrics, examples sheet and MLflow run. A re-run of the same command resumes
whatever is unfinished, finishing step included.

    blip capfilt                                     # one process (the DVC stage)
    blip capfilt --procs 4                           # four local ranks
    torchrun --nnodes 4 --nproc-per-node 8 -m blip.cli capfilt ...   # or a Slurm array, a k8s Indexed Job
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blip.capfilt.claims import Claims, Lease, LeaseLost, create_new, owner_id
from blip.capfilt.report import example_images, statistics, write_sheet_html, write_sheet_png
from blip.capfilt.scoring import (SOURCES, Member, RunSettings, bootstrap_web_shard, calibrate_threshold,
                                  copy_human_shard, load_member, model_id)
from blip.config import Params, to_dict
from blip.data.shards import MANIFEST, SHARD_PATTERN, atomic_write_json, read_manifest, write_shard
from blip.launch import Ranks, ranks_from_env, resolve_device, resolve_precision

PARTS = "parts"                  # per-shard statistics: a shard is done when its part exists
CLAIMS = f"{PARTS}/claims"       # leases and the start time, while the job runs
CALIBRATION = f"{PARTS}/calibration.json"
# settings the output does not depend on: a run may resume another's shards with other values. The batch
# size stays in: captions and decisions do not depend on it (sampling is keyed per image), but a CPU's or
# GPU's matrix kernels round differently for other batch shapes, so scores may differ in the last digit
NOT_FINGERPRINTED = ("procs", "lease_seconds", "poll_seconds")


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
    entries = [(source, str(Path(d) / e["name"]), e["sha256"])
               for source, dirs in (("web", web_dirs), ("human", human_dirs))
               for d in dirs for e in read_manifest(d)["shards"]]
    return [Work(i, *entry) for i, entry in enumerate(entries)]


@dataclass
class CapfiltJob:
    """What to bootstrap with what, and where the results go; every rank builds the same job."""

    params: Params
    captioners: list[str]
    filters: list[str]
    web: list[str]
    human: list[str]
    output: Path
    round: int = 1
    threshold: float | None = None      # None: params (fixed, or calibrated when capfilt.calibrate)
    calibrate_on: str = "data/human/val"
    metrics: Path | None = None
    report: Path | None = None
    name: str = "capfilt"
    device: str | None = None           # None: params inference.device
    work: list[Work] = field(init=False)

    def __post_init__(self):
        self.output = Path(self.output)
        self.work = plan(self.web, self.human)

    @property
    def calibrates(self) -> bool:
        """Whether the threshold is calibrated on human val pairs (none given, params ask for it)."""
        return self.threshold is None and self.params.capfilt.calibrate

    def fingerprint(self, precision: str) -> str:
        """What finished shards must match to be reused: inputs, models, settings, seed, round, precision."""
        cfg = {k: v for k, v in to_dict(self.params.capfilt).items() if k not in NOT_FINGERPRINTED}
        parts = {"inputs": [(w.source, w.path, w.sha256) for w in self.work],
                 "models": [model_id(p) for p in self.captioners + self.filters], "cfg": cfg,
                 "threshold": None if self.calibrates else self.fixed_threshold(),
                 "calibrate_on": self.calibrate_on if self.calibrates else None,
                 "seed": self.params.seed, "round": self.round, "precision": precision,
                 "max_words": self.params.ingest.max_words, "max_chars": self.params.ingest.max_caption_chars}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def fixed_threshold(self) -> float:
        """The threshold given or in params, floored to 6 decimals: samples record probabilities to 6
        decimals, and a threshold with more would let a kept text's recorded probability fall under it."""
        t = self.params.capfilt.threshold if self.threshold is None else self.threshold
        return math.floor(t * 1e6) / 1e6


def part_path(out_dir: Path, work: Work) -> Path:
    """Where a shard's statistics go: their presence marks the shard done."""
    return out_dir / PARTS / f"{work.out_name}.json"


def _stamp(out_dir: Path) -> str | None:
    stamp_file = out_dir / PARTS / "fingerprint"
    return stamp_file.read_text().strip() if stamp_file.is_file() else None


def clear_other_job(out_dir: Path, stamp: str) -> None:
    """A plain single run may reuse a folder that holds another job's output: clear it first."""
    if _stamp(out_dir) in (None, stamp):
        return
    for old in list(out_dir.glob("shard-*.tar")) + list(out_dir.glob(".*.tmp")) + [out_dir / MANIFEST]:
        old.unlink(missing_ok=True)
    for old in sorted((out_dir / PARTS).rglob("*"), reverse=True):
        old.rmdir() if old.is_dir() else old.unlink()


def join_output(out_dir: Path, stamp: str) -> None:
    """Stamp the output folder with this job, or refuse one that holds another job's shards."""
    (out_dir / CLAIMS).mkdir(parents=True, exist_ok=True)
    # the first rank to arrive stamps the folder; the others read its stamp
    found = stamp if create_new(out_dir / PARTS / "fingerprint", stamp + "\n") else _stamp(out_dir)
    if found != stamp:
        raise RuntimeError(f"{out_dir} holds shards of another capfilt job (other inputs, models or params); "
                           "give this job another --output, or delete that folder")


def finished(out_dir: Path, stamp: str) -> bool:
    """Whether this job's manifest is already written."""
    if not (out_dir / MANIFEST).is_file():
        return False
    return json.loads((out_dir / MANIFEST).read_text()).get("capfilt", {}).get("fingerprint") == stamp


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

    def threshold(self) -> tuple[float, dict | None]:
        """The fixed threshold, or the calibrated one (computed by whichever rank claims it first)."""
        if not self.job.calibrates:
            return self.job.fixed_threshold(), None
        path = self.out / CALIBRATION
        while not path.is_file():
            lease = self.claims.try_claim("calibration")
            if lease is None:
                self.wait()
                continue
            with lease:
                if not path.is_file():
                    cfg, p = self.job.params.capfilt, self.job.params
                    with torch.inference_mode():
                        result = calibrate_threshold(self.models()[1], self.job.calibrate_on, cfg.target_precision,
                                                     p.seed, p.ingest.max_words, cfg.filter_combine, self.precision)
                    atomic_write_json(path, result)
                    self.log(f"capfilt: calibrated threshold {result['threshold']} (precision {result['precision']}, "
                             f"recall {result['recall']} on {self.job.calibrate_on})")
        calibration = json.loads(path.read_text())
        return calibration["threshold"], calibration

    def settings(self, threshold: float) -> RunSettings:
        """What every shard of this job is processed with, on this rank."""
        p = self.job.params
        return RunSettings(cfg=p.capfilt, threshold=threshold, seed=p.seed, round=self.job.round,
                           max_words=p.ingest.max_words, max_chars=p.ingest.max_caption_chars,
                           precision=self.precision, loader_workers=p.inference.loader_workers)

    def process(self, w: Work, run: RunSettings, lease: Lease) -> None:
        """Bootstrap one shard and commit it: the shard first, then its part, which marks it done."""
        start = time.time()
        if w.source == "web":
            captioners, filters = self.models()
            with torch.inference_mode():
                samples, stats = bootstrap_web_shard(w.path, captioners, filters, run, run.cfg.examples,
                                                     between_batches=lease.check)
        else:
            samples, stats = copy_human_shard(w.path, run.round)
        entry = write_shard(self.out / w.out_name, samples)
        atomic_write_json(part_path(self.out, w), {"shard": entry, "input": w.path, "source": w.source,
                                                   **stats.to_dict()})
        images = stats.counts.get("web_total", stats.counts.get("human_total", 0))
        self.log(f"[capfilt] rank {self.ranks.rank}: {w.out_name} ({w.source}) {entry['samples']} samples kept, "
                 f"{images / max(time.time() - start, 1e-9):.1f} images/s")

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

    def finish(self, calibration: dict | None, threshold: float) -> dict | None:
        """Claim the finishing step and do it; None when another rank is doing it."""
        lease = self.claims.try_claim("finish")
        if lease is None:
            return None
        with lease:
            if finished(self.out, self.stamp):
                return None
            return finish(self.job, self.out, self.stamp, threshold, calibration, self.log)

    def run(self) -> dict | None:
        """This rank's part of the job, to the end: the manifest, written by this rank or another."""
        if finished(self.out, self.stamp):
            self.log(f"capfilt: {self.out} is already finished")
            shutil.rmtree(self.out / CLAIMS, ignore_errors=True)  # left by a finisher that died after the manifest
            return None
        join_output(self.out, self.stamp)
        self._start_clock()
        threshold, calibration = self.threshold()
        run = self.settings(threshold)
        while True:
            self.claim_shards(run)
            result = self.finish(calibration, threshold)
            if result is not None or finished(self.out, self.stamp):
                return result
            self.wait()  # another rank is finishing: wait for its manifest, or take over if it died

    def _start_clock(self) -> None:
        """Record when the job first started (for images/s over the whole job, restarts included)."""
        create_new(self.out / CLAIMS / "started", f"{time.time()}\n")


def manifest_from_parts(job: CapfiltJob, out_dir: Path, fields: dict) -> dict:
    """The manifest, from the per-shard parts (every shard must be done)."""
    missing = [w.out_name for w in job.work if not part_path(out_dir, w).is_file()]
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} shard(s) not finished ({', '.join(missing[:5])}); "
                           "re-run `blip capfilt` with the same arguments to finish them")
    parts = [json.loads(part_path(out_dir, w).read_text()) for w in job.work]
    counts: Counter = Counter()
    for part in parts:
        counts.update(part["counts"])
    return {"format": "blip-shards/1", "samples": sum(p["shard"]["samples"] for p in parts),
            "shards": [p["shard"] for p in parts],
            "by_source": {s: counts.get(f"{s}_kept", 0) for s in SOURCES},
            "capfilt": {"counts": dict(sorted(counts.items())), **fields}}


def examples(out_dir: Path, work: list[Work], n: int) -> list[dict]:
    """The first `n` example images over the web shards, in shard order."""
    rows = []
    for w in work:
        if w.source == "web" and len(rows) < n:
            rows += json.loads(part_path(out_dir, w).read_text())["examples"]
    return rows[:n]


def finish(job: CapfiltJob, out_dir: Path, stamp: str, threshold: float, calibration: dict | None, log=print) -> dict:
    """The finishing step: metrics, examples sheet, MLflow run, then the manifest (the commit point: a
    finisher that dies before it is redone by the next rank or re-run); the job's claims are cleared."""
    from blip.tracking import Tracker, data_hashes, flatten, git_commit

    cfg = job.params.capfilt
    started = out_dir / CLAIMS / "started"
    seconds = time.time() - (float(started.read_text()) if started.is_file() else time.time())
    ids = [model_id(p) for p in job.captioners + job.filters]
    fields = {"threshold": threshold, "calibration": calibration, "fingerprint": stamp, "round": job.round,
              "captioners": ids[:len(job.captioners)], "filters": ids[len(job.captioners):],
              "method": cfg.method, "captions_per_image": cfg.captions_per_image, "inputs": job.web + job.human}
    manifest = manifest_from_parts(job, out_dir, fields)
    stats = statistics(manifest["capfilt"]["counts"])
    metrics = {**stats, "threshold": threshold, "calibration": calibration, "samples": manifest["samples"],
               "seconds": round(seconds, 1), "web_images_per_s": round(stats["web"]["total"] / max(seconds, 1e-9), 2)}
    if job.metrics:
        job.metrics.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.metrics, metrics)
    tracker = Tracker(job.params.tracking.uri, job.params.tracking.experiment, job.name)
    if job.report:
        job.report.mkdir(parents=True, exist_ok=True)
        rows = examples(out_dir, job.work, cfg.examples)
        images = example_images([w.path for w in job.work if w.source == "web"], [r["key"] for r in rows])
        write_sheet_png(rows, images, job.report / "examples.png")
        write_sheet_html(rows, images, job.report / "examples.html", f"CapFilt round {job.round}: {out_dir}")
        for path in (job.report / "examples.png", job.report / "examples.html"):
            tracker.artifact(path, "capfilt")
    tracker.params({"capfilt": {k: v for k, v in vars(cfg).items() if not isinstance(v, list)},
                    "threshold": threshold, "round": job.round, "inputs": ",".join(job.web + job.human)})
    tracker.tags({"stage": "capfilt", "git_commit": git_commit(), "captioner": "+".join(fields["captioners"]),
                  "filter": "+".join(fields["filters"]), **data_hashes(job.web + job.human)})
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
    log(f"capfilt: {manifest['samples']} samples -> {out_dir} in {seconds:.0f} s "
        f"({metrics['web_images_per_s']} web images/s); kept web {stats['web']['kept']}/{stats['web']['total']}, "
        f"synthetic {stats['synthetic']['kept']}/{stats['synthetic']['total']} (noise ratio "
        f"{stats['noise_ratio']}), human {stats['human']['kept']}")
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
        clear_other_job(job.output, rank.stamp)
        spawn_local_ranks(procs, argv or sys.argv[1:])
        if not finished(job.output, rank.stamp):
            raise RuntimeError(f"{job.output}: the ranks ended without a manifest; re-run the same command")
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or torch.get_num_threads())
    rank = Rank(job, ranks)
    if ranks.launcher == "none":
        clear_other_job(job.output, rank.stamp)
    rank.run()
