"""`blip select` throughput on a synthetic score-table set, in candidate rows per second.

Writes a CapFilt-shaped scores folder (default 10M rows: 5M images, the web text and one synthetic
caption each, in 100 tables of 100k rows, one filter) and runs the selection with three rules:

- threshold:  the paper's rule, one pass (apply, write the selection tables);
- calibrated: the same after calibrating on 10k scored human pairs;
- full:       top 50%, one text per image, web share 0.5: five passes over the tables.

    python bench/selection.py                      # 10M rows, 3 repeats
    python bench/selection.py --rows 1000000 --repeats 5

Writes bench/results/select_cpu.json: per rule every run's seconds, the median, rows/s, and peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.capfilt.job import SCORES_FORMAT  # noqa: E402
from blip.config import load_params  # noqa: E402
from blip.data.parquet import write_table  # noqa: E402
from blip.data.shards import atomic_write_json  # noqa: E402

RULES = {"threshold": dict(calibrate=False, threshold=0.5),
         "calibrated": dict(calibrate=True, target_precision=0.8),
         "full": dict(calibrate=False, threshold=0.2, top_percent=50.0, max_texts_per_image=1, web_share=0.5)}


def score_table(rng: np.random.Generator, table: int, images: int) -> pa.Table:
    """One shard's scores: the web text and one synthetic caption per image, as capfilt writes them."""
    n = 2 * images
    image = np.repeat(np.arange(images, dtype=np.int32), 2)
    candidate = np.tile(np.array([0, 1], np.int16), images)
    keys = np.char.add(f"{table:06d}", np.char.zfill(image.astype(str), 6))
    source = np.where(candidate == 0, "web", "synthetic")
    words = rng.integers(3, 20, n).astype(np.int16)
    text = np.char.add("a photo of object ", rng.integers(0, 100_000, n).astype(str))
    itm = rng.beta(2, 2, n).astype(np.float32)
    itc = rng.normal(0.2, 0.1, n).astype(np.float32)
    digest = np.repeat(np.array([rng.bytes(32).hex() for _ in range(images)]), 2)
    one = pa.list_(pa.float32(), 1)
    return pa.table({
        "key": keys, "image": image, "candidate": candidate, "source": source, "text": text, "words": words,
        "itm": pa.FixedSizeListArray.from_arrays(pa.array(itm), type=one),
        "itc": pa.FixedSizeListArray.from_arrays(pa.array(itc), type=one),
        "captioner": np.where(candidate == 0, "", "captioner@0123456789ab"),
        "filters": np.full(n, "filter@0123456789ab"), "image_sha256": digest,
        "round": np.ones(n, np.int16), "shard": np.full(n, f"s3://bucket/web/shard-{table:06d}.tar"),
        "url": pa.nulls(n, pa.string()), "truth": pa.nulls(n, pa.string())})


def write_scores(root: Path, rows: int, tables: int, seed: int = 0) -> None:
    """A scores folder of `rows` candidate rows in `tables` tables, with 10k scored calibration pairs."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    entries = []
    for t in range(tables):
        entry = write_table(root / f"scores-{t:06d}.parquet", score_table(rng, t, rows // tables // 2))
        entries.append({**entry, "input": {"url": f"s3://bucket/web/shard-{t:06d}.tar", "sha256": "0" * 64,
                                           "samples": rows // tables // 2}})
    labels = rng.integers(0, 2, 10_000)
    one = pa.list_(pa.float32(), 1)
    itm = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1).astype(np.float32)
    calibration = pa.table({"label": pa.array(labels, pa.int8()),
                            "itm": pa.FixedSizeListArray.from_arrays(pa.array(itm), type=one),
                            "itc": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(10_000, np.float32)),
                                                                     type=one)})
    atomic_write_json(root / "manifest.json", {
        "format": SCORES_FORMAT, "rows": sum(e["rows"] for e in entries), "tables": entries, "round": 1,
        "fingerprint": "bench", "calibration": write_table(root / "calibration.parquet", calibration),
        "captioners": ["captioner@0123456789ab"], "filters": ["filter@0123456789ab"], "calibrate_on": "bench",
        "counts": {}})


def main() -> None:
    """Build the synthetic tables once, then time each rule."""
    from blip.selection.job import SelectJob, run_select

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--tables", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "select_cpu.json"))
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    params = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, uri="off"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_scores(Path(tmp) / "scores", args.rows, args.tables)
        print(f"wrote {args.rows} rows in {time.perf_counter() - start:.0f} s", flush=True)
        for name, rule in RULES.items():
            job = SelectJob(dataclasses.replace(params, select=dataclasses.replace(params.select, **rule)),
                            scores=Path(tmp) / "scores", human=[], output=Path(tmp) / f"boot_{name}")
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                metrics = run_select(job, log=lambda *_: None)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            results.append({"rule": name, "params": rule, "seconds": [round(t, 2) for t in times],
                            "median_s": round(median, 2), "rows_per_s": round(args.rows / median),
                            "kept": metrics["samples"], "threshold": metrics["threshold"]})
            print(f"{name}: median {median:.1f} s, {args.rows / median / 1e6:.2f} M rows/s, kept {metrics['samples']}",
                  flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    out = {"machine": {"cpu": cpu, "python": platform.python_version(), "pyarrow": pa.__version__},
           "rows": args.rows, "tables": args.tables, "repeats": args.repeats, "results": results,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    atomic_write_json(Path(args.out), out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
