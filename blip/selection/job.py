"""`blip select`: CapFilt's score tables + the rule in params `select` -> the bootstrapped dataset.

Runs no model: it reads the tables capfilt wrote (only the columns a pass needs), so a new threshold,
target precision, mix or cap costs seconds, not a captioner and filter pass over every web image.
The rule (rule.py) needs up to five passes over the tables, each holding one table at a time:

    top_percent cut:          2 passes (high and low bits of the k-th best score)
    per-source caps and mix:  2 passes (after cuts 1-3: counts and histograms, then low bits)
    final:                    1 pass (apply every cut, write the selection tables, count)

The output (dataset.py) is a manifest and selection tables over the input shards: no image is copied.
The manifest is written last; a folder without one is unfinished and every reader refuses it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from blip.capfilt.job import SCORES_FORMAT
from blip.capfilt.report import example_images, statistics, write_sheet_html, write_sheet_png
from blip.config import Params, SelectConfig, to_dict
from blip.data import storage
from blip.data.parquet import read_table, write_table
from blip.data.shards import MANIFEST, atomic_write_json, read_manifest
from blip.gates import FILTER_ADVICE
from blip.selection.dataset import SELECTION_FORMAT, TABLE_PATTERN
from blip.selection.rule import (
    CutoffFilter,
    KthBest,
    calibrate,
    cap_per_image,
    filter_matrix,
    passes_threshold,
    scores,
    sort_keys,
    source_targets,
)

SCORE_COLUMNS = ["image", "candidate", "source", "itm", "itc"]
# the final pass also writes the kept rows' text and provenance and counts the world's truth
FINAL_COLUMNS = SCORE_COLUMNS + ["key", "text", "captioner", "filters", "round", "image_sha256", "truth"]
SOURCES = ("web", "synthetic")


@dataclass
class SelectJob:
    """Which score tables, which human data, where the bootstrapped dataset goes."""

    params: Params
    scores: str | Path        # capfilt's output folder (a local path or a URL)
    human: list[str]
    output: str | Path
    threshold: float | None = None      # a fixed threshold for this run (None: params select)
    metrics: Path | None = None
    report: Path | None = None
    name: str = "select"


@dataclass
class Scored:
    """One score table's columns as the rule sees them."""

    table: pa.Table
    per_filter: np.ndarray
    score: np.ndarray
    keys: np.ndarray
    source: np.ndarray      # 0 web, 1 synthetic
    image: np.ndarray
    candidate: np.ndarray


def scored_tables(scores_dir: str, manifest: dict, cfg: SelectConfig, full: bool = False) -> Iterator[Scored]:
    """The score tables in manifest order, one at a time (`full`: the columns the final pass writes)."""
    filters = len(manifest["filters"])
    for entry in manifest["tables"]:
        table = read_table(storage.join(scores_dir, entry["name"]), FINAL_COLUMNS if full else SCORE_COLUMNS)
        per_filter, score = scores(filter_matrix(table["itm"], filters), filter_matrix(table["itc"], filters), cfg)
        yield Scored(table, per_filter, score, sort_keys(score),
                     pc.equal(table["source"], "synthetic").to_numpy(zero_copy_only=False).astype(np.int8),
                     table["image"].to_numpy(), table["candidate"].to_numpy())


def threshold_for(job: SelectJob, scores_dir: str, manifest: dict) -> tuple[float, dict | None]:
    """The fixed threshold, or the one calibrated on the scored human val pairs."""
    cfg = job.params.select
    if job.threshold is not None or not cfg.calibrate:
        return (cfg.threshold if job.threshold is None else job.threshold), None
    filters = len(manifest["filters"])
    table = read_table(storage.join(scores_dir, manifest["calibration"]["name"]))
    _, score = scores(filter_matrix(table["itm"], filters), filter_matrix(table["itc"], filters), cfg)
    result = calibrate(score, table["label"].to_numpy(), cfg.target_precision)
    if result is None:
        raise ValueError(f"no score threshold reaches precision {cfg.target_precision} on the human val pairs "
                         f"({manifest.get('calibrate_on')}); lower select.target_precision, or fine-tune the filter "
                         "longer and re-run capfilt")
    gates = job.params.gates
    if result["recall"] < gates.min_recall:
        message = (f"the threshold calibrated to precision {cfg.target_precision} ({result['threshold']:.4g}) keeps "
                   f"{result['recall']:.1%} of the true human val pairs ({manifest.get('calibrate_on')}), below "
                   f"gates.min_recall {gates.min_recall}: CapFilt would remove nearly every text. "
                   + FILTER_ADVICE.format(preset=job.params.preset))
        if gates.on_fail == "stop":
            raise ValueError(message)
        print(f"select: warning (gates.on_fail=warn): {message}", flush=True)
    return result["threshold"], {**result, "target_precision": cfg.target_precision, "pairs": table.num_rows}


class Selector:
    """The rule's cuts over one job's tables; each pass re-derives the earlier cuts the same way."""

    def __init__(self, job: SelectJob, scores_dir: str, manifest: dict, threshold: float):
        self.cfg, self.dir, self.manifest, self.threshold = job.params.select, scores_dir, manifest, threshold
        self.top = None
        self.per_source = [None, None]
        if self.cfg.top_percent is not None:
            self.top = self._kth(math.ceil(self.cfg.top_percent / 100 * manifest["rows"]), lambda s: s.keys)
        if (self.cfg.max_web, self.cfg.max_synthetic, self.cfg.web_share) != (None, None, None):
            self.per_source = self._source_cutoffs()

    def _kth(self, k: int, keys_of) -> object:
        best = KthBest(k)
        for s in scored_tables(self.dir, self.manifest, self.cfg):
            best.add_pass1(keys_of(s))
        if best.needs_pass2():
            for s in scored_tables(self.dir, self.manifest, self.cfg):
                best.add_pass2(keys_of(s))
        return best.cutoff()

    def _source_cutoffs(self) -> list:
        """Cut 4: each source's cutoff, after cuts 1-3 (their counts and histograms in one pass)."""
        bests = [KthBest(0), KthBest(0)]
        counts = [0, 0]
        top = CutoffFilter(self.top)
        for s in scored_tables(self.dir, self.manifest, self.cfg):
            kept = self.first_cuts(s, top)
            for code in (0, 1):
                keys = s.keys[kept & (s.source == code)]
                counts[code] += len(keys)
                bests[code].add_pass1(keys)
        targets = source_targets(counts[0], counts[1], self.cfg)
        for best, k in zip(bests, targets):
            best.k = k
        if any([best.needs_pass2() for best in bests]):  # a list: each must decide whether it needs refining
            top = CutoffFilter(self.top)
            for s in scored_tables(self.dir, self.manifest, self.cfg):
                kept = self.first_cuts(s, top)
                for code in (0, 1):
                    if bests[code].bin is not None:
                        bests[code].add_pass2(s.keys[kept & (s.source == code)])
        return [b.cutoff() for b in bests]

    def first_cuts(self, s: Scored, top: CutoffFilter) -> np.ndarray:
        """Cuts 1-3 (threshold or vote, top_percent, per-image cap) on one table."""
        kept = passes_threshold(s.per_filter, s.score, self.threshold, self.cfg.filter_combine)
        # top_percent ranks every candidate, so its ties are counted over all rows, not only the kept ones
        kept &= top.keep(s.keys, np.ones_like(kept))
        return cap_per_image(s.image, s.candidate, s.keys, kept, self.cfg.max_texts_per_image)

    def kept(self, tables: Iterator[Scored]) -> Iterator[tuple[Scored, np.ndarray]]:
        """Every table with its final kept mask."""
        top, sources = CutoffFilter(self.top), [CutoffFilter(c) for c in self.per_source]
        for s in tables:
            kept = self.first_cuts(s, top)
            final = np.zeros_like(kept)
            for code in (0, 1):
                final |= sources[code].keep(s.keys, kept & (s.source == code))
            yield s, final


def _count(counts: Counter, s: Scored, kept: np.ndarray) -> None:
    for code, name in enumerate(SOURCES):
        mine = s.source == code
        counts[f"{name}_total"] += int(mine.sum())
        counts[f"{name}_kept"] += int((mine & kept).sum())
        counts[f"{name}_removed"] += int((mine & ~kept).sum())
    truth = s.table["truth"]
    if truth.null_count < len(truth):  # the built-in world records what each text really is
        for i in np.flatnonzero(truth.is_valid().to_numpy(zero_copy_only=False)):
            verdict = "kept" if kept[i] else "removed"
            counts[f"truth_{SOURCES[s.source[i]]}_{truth[i].as_py()}_{verdict}"] += 1


def selection_table(s: Scored, kept: np.ndarray) -> pa.Table:
    """The kept rows of one score table, with the scores the rule used."""
    rows = pa.array(np.flatnonzero(kept))
    t = s.table.take(rows)
    mean = lambda column: pa.array(  # noqa: E731
        filter_matrix(t[column], s.per_filter.shape[1]).mean(axis=1).astype(np.float32))
    return pa.table({"key": t["key"], "candidate": t["candidate"], "source": t["source"], "text": t["text"],
                     "score": pa.array(s.score[kept]), "itm": mean("itm"), "itc": mean("itc"),
                     "captioner": t["captioner"], "filters": t["filters"], "round": t["round"],
                     "image_sha256": t["image_sha256"]})


def _examples(s: Scored, kept: np.ndarray, n: int) -> list[dict]:
    """The first `n` images of a table as examples-sheet rows (every text, kept or not)."""
    t = s.table
    images = t["image"].to_numpy()
    first = np.unique(images)[:n]
    rows = []
    itm = filter_matrix(t["itm"], s.per_filter.shape[1]).mean(axis=1)
    for image in first:
        idx = np.flatnonzero(images == image)
        rows.append({"key": t["key"][idx[0]].as_py(), "texts": [
            {"source": t["source"][i].as_py(), "text": t["text"][i].as_py(), "itm": round(float(itm[i]), 4),
             "kept": bool(kept[i]), "truth": t["truth"][i].as_py()} for i in idx]})
    return rows


def clear_output(out: str) -> None:
    """From now on the folder is unfinished: the old manifest goes, and what a killed writer left (older
    selection tables stay: content-addressed, they are never overwritten, and older manifests use them)."""
    storage.make_folder(out)
    storage.remove(storage.join(out, MANIFEST))
    for old in storage.names(out, ".*.tmp"):
        storage.remove(storage.join(out, old))


def run_select(job: SelectJob, log=print) -> dict:
    """Select from the score tables into the bootstrapped dataset; returns the metrics."""
    from blip.tracking import Tracker, data_hashes, flatten, git_commit

    start = time.time()
    cfg = job.params.select
    scores_dir, out = str(job.scores), str(job.output)
    manifest = read_manifest(scores_dir, (SCORES_FORMAT,))
    threshold, calibration = threshold_for(job, scores_dir, manifest)
    selector = Selector(job, scores_dir, manifest, threshold)
    clear_output(out)
    counts: Counter = Counter()
    parts, examples = [], []
    tables = scored_tables(scores_dir, manifest, cfg, full=True)
    for i, (entry, (s, kept)) in enumerate(zip(manifest["tables"], selector.kept(tables))):
        _count(counts, s, kept)
        if len(examples) < cfg.examples:
            examples += _examples(s, kept, cfg.examples - len(examples))
        if kept.any():
            table = write_table(storage.join(out, TABLE_PATTERN.format(i)), selection_table(s, kept))
            parts.append({"kind": "web", **entry["input"], "samples": table["rows"], "selection": table})
    for d in job.human:
        for e in read_manifest(d)["shards"]:
            parts.append({"kind": "human", "url": storage.join(d, e["name"]), "sha256": e["sha256"],
                          "samples": e["samples"]})
            counts["human_total"] += e["samples"]
            counts["human_kept"] += e["samples"]
    by_source = {"human": counts["human_kept"], "web": counts["web_kept"], "synthetic": counts["synthetic_kept"]}
    seconds = time.time() - start
    stats = statistics(dict(counts))
    metrics = {**stats, "threshold": threshold, "calibration": calibration, "samples": sum(by_source.values()),
               "rule": to_dict(cfg), "candidates": manifest["rows"], "seconds": round(seconds, 2),
               "rows_per_s": round(manifest["rows"] / max(seconds, 1e-9), 1)}
    if job.metrics:
        job.metrics.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.metrics, metrics)
    tracker = Tracker(job.params.tracking.uri, job.params.tracking.experiment, job.name)
    if job.report:
        job.report.mkdir(parents=True, exist_ok=True)
        inputs = [e["input"]["url"] for e in manifest["tables"]]
        images = example_images(inputs, [r["key"] for r in examples])
        write_sheet_png(examples, images, job.report / "examples.png")
        write_sheet_html(examples, images, job.report / "examples.html",
                         f"CapFilt round {manifest['round']}: {out}")
        for path in (job.report / "examples.png", job.report / "examples.html"):
            tracker.artifact(path, "select")
    tracker.params({"select": to_dict(cfg), "threshold": threshold, "round": manifest["round"],
                    "scores": scores_dir})
    tracker.tags({"stage": "select", "git_commit": git_commit(), "captioner": "+".join(manifest["captioners"]),
                  "filter": "+".join(manifest["filters"]), **data_hashes([scores_dir])})
    tracker.metrics({k: float(v) for k, v in flatten(metrics).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if job.metrics:
        tracker.artifact(job.metrics)
    tracker.end()
    selection = {"threshold": threshold, "calibration": calibration, "rule": to_dict(cfg),
                 "counts": dict(sorted(counts.items())), "round": manifest["round"],
                 "captioners": manifest["captioners"], "filters": manifest["filters"],
                 "scores": {"url": scores_dir, "fingerprint": manifest["fingerprint"],
                            "manifest_sha256": storage.sha256(storage.join(scores_dir, MANIFEST))}}
    atomic_write_json(storage.join(out, MANIFEST), {"format": SELECTION_FORMAT, "samples": sum(p["samples"] for p in parts),
                                       "parts": parts, "by_source": by_source, "selection": selection})
    log(f"select: {metrics['samples']} samples -> {out} in {seconds:.1f} s ({metrics['rows_per_s']} rows/s); "
        f"threshold {threshold}; kept web {stats['web']['kept']}/{stats['web']['total']}, synthetic "
        f"{stats['synthetic']['kept']}/{stats['synthetic']['total']} (noise ratio {stats['noise_ratio']}), "
        f"human {stats['human']['kept']}")
    return metrics
