"""`blip select`: CapFilt's score tables + the rule in params `select` -> the bootstrapped dataset.

Runs no model: it reads the tables capfilt wrote (only the columns a pass needs), so a new threshold,
target precision, mix or cap costs seconds, not a captioner and filter pass over every web image.
The rule (rule.py) needs up to seven passes over the tables. Each pass is one Ray task per table
(at a billion pairs, 100k tables read in parallel across the cluster); the driver adds up what they
return, histograms of 65,536 counts and a few integers, so no process ever holds more than one table:

    top_percent cut:          2 passes (high and low bits of the k-th best score), 1 counting its ties
    per-source caps and mix:  2 passes (after cuts 1-3: counts and histograms, then low bits), 1 for ties
    final:                    1 pass (apply every cut, write the table's selection, count)

A cut keeps ties in table order: each table learns how many tied rows the tables before it hold (a
prefix sum of the tie counts), so the tasks need not run in order and the result is exact.

The output (dataset.py) is a manifest and selection tables over the input shards: no image is copied.
The manifest is written last; a folder without one is unfinished and every reader refuses it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from blip.capfilt.formats import SCORES_FORMAT
from blip.capfilt.report import example_images, statistics, write_sheet_html, write_sheet_png
from blip.cluster import map_ordered, ray_session
from blip.config import Params, to_dict
from blip.data import storage
from blip.data.parquet import read_table, write_table
from blip.data.selected import SELECTION_FORMAT, TABLE_PATTERN
from blip.data.shards import MANIFEST, atomic_write_json, read_manifest
from blip.gates import FILTER_ADVICE
from blip.selection.config import SelectConfig
from blip.selection.rule import (
    Cutoff,
    CutoffFilter,
    KthBest,
    calibrate,
    cap_per_image,
    filter_matrix,
    high_histogram,
    low_histogram,
    passes_threshold,
    scores,
    sort_keys,
    source_targets,
    ties_at,
)

SCORE_COLUMNS = ["image", "candidate", "source", "itm", "itc"]
# the final pass also writes the kept rows' text and provenance
FINAL_COLUMNS = SCORE_COLUMNS + ["key", "text", "captioner", "filters", "round", "image_sha256", "pixels_sha256"]
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


def read_scored(url: str, filters: int, cfg: SelectConfig, full: bool = False) -> Scored:
    """One score table as the rule sees it (`full`: with the columns the final pass writes)."""
    table = read_table(url, FINAL_COLUMNS if full else SCORE_COLUMNS)
    try:
        per_filter, score = scores(filter_matrix(table["itm"], filters), filter_matrix(table["itc"], filters), cfg)
        keys = sort_keys(score)
    except ValueError as e:
        raise ValueError(f"{url}: {e}") from None
    return Scored(table, per_filter, score, keys,
                  pc.equal(table["source"], "synthetic").to_numpy(zero_copy_only=False).astype(np.int8),
                  table["image"].to_numpy(), table["candidate"].to_numpy())


def threshold_for(job: SelectJob, scores_dir: str, manifest: dict) -> tuple[float, dict | None]:
    """The fixed threshold, or the one calibrated on the scored human val pairs."""
    cfg = job.params.select
    if job.threshold is not None or not cfg.calibrate:
        return (cfg.threshold if job.threshold is None else job.threshold), None
    filters = len(manifest["filters"])
    table = read_table(manifest["calibration"]["url"])
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


@dataclass(frozen=True)
class Cuts:
    """The rule with every global cutoff found so far; each table's pass re-derives the earlier cuts from it."""

    cfg: SelectConfig
    filters: int
    threshold: float
    top: Cutoff | None = None
    sources: tuple = (None, None)       # cut 4's cutoff per source code


@dataclass(frozen=True)
class TablePass:
    """One per-table step (a Ray task): which table, the rule so far, and this table's place in the tie order."""

    url: str
    cuts: Cuts
    top_ties_before: int = 0            # tied rows at the top cutoff in all earlier tables
    source_ties_before: tuple = (0, 0)  # the same per source, at cut 4's cutoffs
    bins: tuple = (None, None)          # pass 2: the bin of each source's k-th key


def first_cuts(s: Scored, task: TablePass) -> np.ndarray:
    """Cuts 1-3 (threshold or vote, top_percent, per-image cap) on one table."""
    c = task.cuts
    kept = passes_threshold(s.per_filter, s.score, c.threshold, c.cfg.filter_combine)
    # top_percent ranks every candidate, so its ties are counted over all rows, not only the kept ones
    kept &= CutoffFilter(c.top, task.top_ties_before).keep(s.keys, np.ones_like(kept))
    return cap_per_image(s.image, s.candidate, s.keys, kept, c.cfg.max_texts_per_image)


def _top_high(task: TablePass) -> np.ndarray:
    return high_histogram(read_scored(task.url, task.cuts.filters, task.cuts.cfg).keys)


def _top_low(task: TablePass) -> np.ndarray:
    return low_histogram(read_scored(task.url, task.cuts.filters, task.cuts.cfg).keys, task.bins[0])


def _top_ties(task: TablePass) -> int:
    s = read_scored(task.url, task.cuts.filters, task.cuts.cfg)
    return ties_at(task.cuts.top, s.keys, np.ones(len(s.keys), bool))


def _source_high(task: TablePass) -> tuple[np.ndarray, np.ndarray]:
    s = read_scored(task.url, task.cuts.filters, task.cuts.cfg)
    kept = first_cuts(s, task)
    return tuple(high_histogram(s.keys[kept & (s.source == code)]) for code in (0, 1))


def _source_low(task: TablePass) -> tuple:
    s = read_scored(task.url, task.cuts.filters, task.cuts.cfg)
    kept = first_cuts(s, task)
    return tuple(None if task.bins[code] is None else low_histogram(s.keys[kept & (s.source == code)], task.bins[code])
                 for code in (0, 1))


def _source_ties(task: TablePass) -> tuple[int, int]:
    s = read_scored(task.url, task.cuts.filters, task.cuts.cfg)
    kept = first_cuts(s, task)
    return tuple(ties_at(task.cuts.sources[code], s.keys, kept & (s.source == code)) for code in (0, 1))


def final_kept(s: Scored, task: TablePass) -> np.ndarray:
    """Every cut on one table: its final kept mask."""
    kept = first_cuts(s, task)
    final = np.zeros_like(kept)
    for code in (0, 1):
        final |= CutoffFilter(task.cuts.sources[code], task.source_ties_before[code]).keep(s.keys,
                                                                                           kept & (s.source == code))
    return final


@dataclass(frozen=True)
class FinalPass:
    """The last per-table step: apply every cut and write the table's selection."""

    task: TablePass
    index: int
    out: str
    examples: int       # how many of its images the examples sheet may take


def _final(job: FinalPass) -> dict:
    """Apply the rule to one table, write its selection table (when anything is kept); counts and examples."""
    s = read_scored(job.task.url, job.task.cuts.filters, job.task.cuts.cfg, full=True)
    kept = final_kept(s, job.task)
    counts: Counter = Counter()
    _count(counts, s, kept)
    selection = None
    if kept.any():
        selection = write_table(storage.join(job.out, TABLE_PATTERN.format(job.index)), selection_table(s, kept))
    return {"counts": counts, "selection": selection, "examples": _examples(s, kept, job.examples)}


def _summed(fn, tasks: list, log_every: int | None = None):
    """The sum of fn(task) over the tables, added up as each finishes (never all held at once)."""
    total = {}

    def add(_, result) -> None:
        parts = result if isinstance(result, tuple) else (result,)
        for i, part in enumerate(parts):
            if part is not None:
                total[i] = part if i not in total else total[i] + part
    map_ordered(fn, tasks, on_result=add, keep=False)
    return total


def find_cuts(cfg: SelectConfig, urls: list[str], filters: int, threshold: float, rows: int) -> tuple[Cuts, list, list]:
    """The global cutoffs (cut 2 and cut 4), each from histograms that the tables' tasks add up; with each
    table's place in the tie order (top, per source)."""
    cuts = Cuts(cfg, filters, threshold)
    top_before = [0] * len(urls)
    if cfg.top_percent is not None:
        best = KthBest(math.ceil(cfg.top_percent / 100 * rows))
        best.add_high(_summed(_top_high, [TablePass(u, cuts) for u in urls]).get(0, np.zeros(1 << 16, np.int64)))
        if best.needs_pass2():
            best.add_low(_summed(_top_low, [TablePass(u, cuts, bins=(best.bin, None)) for u in urls])[0])
        cuts = dataclasses.replace(cuts, top=best.cutoff())
        if cuts.top is not None:
            top_before = _before(map_ordered(_top_ties, [TablePass(u, cuts) for u in urls]))
    source_before = [(0, 0)] * len(urls)
    if (cfg.max_web, cfg.max_synthetic, cfg.web_share) != (None, None, None):
        tasks = [TablePass(u, cuts, top) for u, top in zip(urls, top_before)]
        highs = _summed(_source_high, tasks)
        bests = [KthBest(0), KthBest(0)]
        for code in (0, 1):
            bests[code].add_high(highs.get(code, np.zeros(1 << 16, np.int64)))
        targets = source_targets(bests[0].seen, bests[1].seen, cfg)
        for best, k in zip(bests, targets):
            best.k = k
        bins = tuple(best.bin if best.needs_pass2() else None for best in bests)
        if bins != (None, None):
            lows = _summed(_source_low, [dataclasses.replace(t, bins=bins) for t in tasks])
            for code in (0, 1):
                if bins[code] is not None:
                    bests[code].add_low(lows[code])
        cuts = dataclasses.replace(cuts, sources=tuple(b.cutoff() for b in bests))
        ties = map_ordered(_source_ties, [dataclasses.replace(t, cuts=cuts) for t in tasks])
        source_before = list(zip(*[_before([t[code] for t in ties]) for code in (0, 1)]))
    return cuts, top_before, source_before


def _before(counts: list[int]) -> list[int]:
    """Each table's count of earlier tables' tied rows (an exclusive prefix sum)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []


def _count(counts: Counter, s: Scored, kept: np.ndarray) -> None:
    for code, name in enumerate(SOURCES):
        mine = s.source == code
        counts[f"{name}_total"] += int(mine.sum())
        counts[f"{name}_kept"] += int((mine & kept).sum())
        counts[f"{name}_removed"] += int((mine & ~kept).sum())


def selection_table(s: Scored, kept: np.ndarray) -> pa.Table:
    """The kept rows of one score table, with the scores the rule used."""
    rows = pa.array(np.flatnonzero(kept))
    t = s.table.take(rows)
    mean = lambda column: pa.array(  # noqa: E731
        filter_matrix(t[column], s.per_filter.shape[1]).mean(axis=1).astype(np.float32))
    return pa.table({"key": t["key"], "candidate": t["candidate"], "source": t["source"], "text": t["text"],
                     "score": pa.array(s.score[kept]), "itm": mean("itm"), "itc": mean("itc"),
                     "captioner": t["captioner"], "filters": t["filters"], "round": t["round"],
                     "image_sha256": t["image_sha256"], "pixels_sha256": t["pixels_sha256"]})


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
             "kept": bool(kept[i])} for i in idx]})
    return rows


def clear_output(out: str) -> None:
    """From now on the folder is unfinished: the old manifest goes, and what a killed writer left (older
    selection tables stay: content-addressed, they are never overwritten, and older manifests use them)."""
    storage.make_folder(out)
    storage.remove(storage.join(out, MANIFEST))
    for old in storage.names(out, ".*.tmp"):
        storage.remove(storage.join(out, old))


def run_select(job: SelectJob, log=print) -> dict:
    """Select from the score tables into the bootstrapped dataset; returns the metrics.

    Every pass over the tables is one Ray task per table (on a laptop, a local Ray inside the command); the
    driver adds up their histograms and counts, so its memory does not grow with the number of rows."""
    from blip.tracking import Tracker, data_hashes, flatten, git_commit

    start = time.time()
    cfg = job.params.select
    # absolute: the Ray tasks that write the selection tables do not share this process's working directory
    scores_dir, out = storage.check_url(str(job.scores)), storage.absolute(storage.check_url(str(job.output)))
    manifest = read_manifest(scores_dir, (SCORES_FORMAT,))
    threshold, calibration = threshold_for(job, scores_dir, manifest)
    urls = [entry["url"] for entry in manifest["tables"]]
    clear_output(out)
    counts: Counter = Counter()
    parts, examples = [], []
    with ray_session():
        cuts, top_before, source_before = find_cuts(cfg, urls, len(manifest["filters"]), threshold, manifest["rows"])
        finals = [FinalPass(TablePass(u, cuts, top, src), i, out, cfg.examples if i < cfg.examples else 0)
                  for i, (u, top, src) in enumerate(zip(urls, top_before, source_before))]
        for entry, result in zip(manifest["tables"], map_ordered(_final, finals)):
            counts.update(result["counts"])
            if len(examples) < cfg.examples:
                examples += result["examples"][:cfg.examples - len(examples)]
            if result["selection"] is not None:
                table = result["selection"]
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
        # the examples are the first tables' first images: only their input shards are read
        inputs = [e["input"] for e in manifest["tables"][:max(1, cfg.examples)]]
        images = example_images(inputs, [r["key"] for r in examples], job.params.ingest.max_member_bytes)
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
    atomic_write_json(storage.join(out, MANIFEST), {"format": SELECTION_FORMAT,
                                                   "samples": sum(p["samples"] for p in parts), "parts": parts,
                                                   "by_source": by_source, "selection": selection})
    log(f"select: {metrics['samples']} samples -> {out} in {seconds:.1f} s ({metrics['rows_per_s']} rows/s); "
        f"threshold {threshold}; kept web {stats['web']['kept']}/{stats['web']['total']}, synthetic "
        f"{stats['synthetic']['kept']}/{stats['synthetic']['total']} (noise ratio {stats['noise_ratio']}), "
        f"human {stats['human']['kept']}")
    return metrics
