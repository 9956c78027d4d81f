"""Peak memory of `blip select` and of the bootstrapped contract at 1M and 10M score-table rows.

At a billion pairs the score tables hold about two billion rows. `select` runs each pass as one Ray task
per table and adds up their histograms; the contract computes every check over every row in DuckDB,
which spills to disk past `contracts.memory_mb`. Neither should grow with the rows: this measures the
peak RSS of each command's processes (the driver, and its local Ray's worker processes) at two sizes,
ten times apart, on synthetic tables of the real schema (10,000 rows each, two candidates an image).

    python bench/select_contract_memory.py            # -> bench/results/select_contract_memory.json

The rule exercises every pass: a threshold, top_percent (two histogram passes and a tie count) and a
web/synthetic mix (two more and a tie count), then the final pass that writes the selection tables. The
input shards are empty stand-ins (nothing here reads them but the contract's decoded sample), so the
contract runs every check over every row and then fails on its image sample (exit 1): what is measured is
the cost of the checks, not a verdict.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import where  # noqa: E402
from blip.capfilt.formats import SCORES_FORMAT  # noqa: E402
from blip.capfilt.scoring import score_schema  # noqa: E402
from blip.data.parquet import write_table  # noqa: E402
from blip.data.shards import atomic_write_json  # noqa: E402

ROWS_PER_TABLE = 10_000
SIZES = (1_000_000, 10_000_000)
WORDS = "a red blue green small large circle square star on left right of the picture white black".split()


def write_scores(root: Path, rows: int, seed: int = 0) -> Path:
    """Score tables of `rows` rows (10,000 a table; the web text and one synthetic caption per image) and their
    manifest; each table's input shard is an empty file (select never reads it, the contract lists it)."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(2000)]
    scores, inputs = root / "scores", root / "web"
    scores.mkdir(parents=True)
    inputs.mkdir()
    schema = score_schema(1)
    entries = []
    images = ROWS_PER_TABLE // 2
    for t in range(rows // ROWS_PER_TABLE):
        image = np.repeat(np.arange(images, dtype=np.int32), 2)
        candidate = np.tile(np.array([0, 1], np.int16), images)
        keys = [f"{t:06d}{i:05d}" for i in range(images)]
        text = [texts[i] for i in rng.integers(0, len(texts), ROWS_PER_TABLE)]
        itm = rng.random(ROWS_PER_TABLE, dtype=np.float32)
        itc = (rng.random(ROWS_PER_TABLE, dtype=np.float32) * 2 - 1)
        shard = str(inputs / f"{t:06d}.tar")
        Path(shard).touch()
        table = pa.table({
            "key": pa.array(np.repeat(keys, 2)), "image": image, "candidate": candidate,
            "source": pa.array(np.where(candidate == 0, "web", "synthetic")), "text": pa.array(text),
            "words": pa.array([len(x.split()) for x in text], pa.int16()),
            "itm": pa.FixedSizeListArray.from_arrays(pa.array(itm), 1),
            "itc": pa.FixedSizeListArray.from_arrays(pa.array(itc), 1),
            "captioner": pa.array(np.where(candidate == 0, "", "captioner@0")),
            "filters": pa.array(["filter@0"] * ROWS_PER_TABLE),
            "image_sha256": pa.array(np.repeat([f"{t:06d}{i:058d}" for i in range(images)], 2)),
            "pixels_sha256": pa.array(np.repeat([f"p{t:06d}{i:057d}" for i in range(images)], 2)),
            "round": pa.array(np.ones(ROWS_PER_TABLE, np.int16)), "shard": pa.array([shard] * ROWS_PER_TABLE),
            "url": pa.array([None] * ROWS_PER_TABLE, pa.string()),
        }, schema=schema)
        url = str(scores / f"scores-{t:06d}.parquet")
        entry = write_table(url, table)
        counts = {"images": images, "web_total": images, "synthetic_total": images}
        entries.append({"url": url, "rows": entry["rows"], "bytes": entry["bytes"], "sha256": entry["sha256"],
                        "input": {"url": shard, "samples": images, "sha256": "0" * 64}, "counts": counts})
    atomic_write_json(scores / "manifest.json", {
        "format": SCORES_FORMAT, "rows": rows, "tables": entries, "calibration": None, "counts": {},
        "fingerprint": "bench", "round": 1, "captioners": ["captioner@0"], "filters": ["filter@0"]})
    return scores


def measure(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run a command; its wall time and peak RSS: of the command's own process, of any one process it started
    (a Ray worker), and of all of them together, sampled every 50 ms."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    driver = worker = total = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = {p.pid: p.memory_info().rss for p in tree if p.is_running()}
        except psutil.Error:
            continue
        driver = max(driver, rss.get(proc.pid, 0))
        worker = max([worker, *[v for k, v in rss.items() if k != proc.pid]])
        total = max(total, sum(rss.values()))
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode not in (0, 1):  # the contract exits 1 on a finding; the bench measures it all the same
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    mb = 2 ** 20
    return {"seconds": round(time.time() - start, 1), "driver_peak_mb": round(driver / mb),
            "worker_peak_mb": round(worker / mb), "all_processes_peak_mb": round(total / mb), "exit": proc.returncode}


def main() -> int:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    results = {"rows_per_table": ROWS_PER_TABLE, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params = copy.deepcopy(raw)
        params["world"].update(human={"train": 16, "val": 8, "test": 8}, web={**params["world"]["web"], "images": 8})
        params["select"].update(calibrate=False, threshold=0.1, top_percent=50.0, web_share=0.5)
        params["tracking"]["uri"] = "off"
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        # a local Ray inside each command (no RAY_ADDRESS): its worker processes are the command's own children
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
        env["PYTHONPATH"] = str(ROOT)
        blip = [sys.executable, "-m", "blip.cli", "--params", str(tmp / "params.yaml")]
        subprocess.run(blip + ["prepare", "--out", str(tmp / "data"), "--metrics", str(tmp / "prepare.json")],
                       env=env, check=True, capture_output=True)
        for rows in SIZES:
            work = tmp / f"rows{rows}"
            t = time.time()
            scores = write_scores(work, rows)
            made = round(time.time() - t, 1)
            select = measure(blip + ["select", "--scores", str(scores), "--human", str(tmp / "data/human/train"),
                                     "--output", str(work / "boot"), "--metrics", str(work / "select.json"),
                                     "--report", ""], tmp, env)
            contract = measure([sys.executable, "-m", "data_contracts", "--params", str(tmp / "params.yaml"),
                                "bootstrapped", str(work / "boot"), "--eval", str(tmp / "data/human/val"),
                                str(tmp / "data/human/test"), "--results", str(work / "contract.json")], tmp, env)
            report = json.loads((work / "contract.json").read_text())["reports"][0]
            kept = json.loads((work / "select.json").read_text())["samples"]
            results["sizes"][str(rows)] = {"tables": rows // ROWS_PER_TABLE, "tables_seconds": made, "select": select,
                                           "selected_samples": kept, "contract": contract,
                                           "contract_rows_checked": report["rows"]}
            print(rows, json.dumps(results["sizes"][str(rows)]), flush=True)
            import shutil

            shutil.rmtree(work)
    small, large = (results["sizes"][str(n)] for n in SIZES)
    results["growth_1M_to_10M"] = {
        f"{step}.{figure}": round(large[step][figure] / small[step][figure], 3)
        for step in ("select", "contract") for figure in ("driver_peak_mb", "worker_peak_mb", "all_processes_peak_mb")
        if small[step][figure]}
    results.update(where())
    out = ROOT / "bench" / "results" / "select_contract_memory.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["growth_1M_to_10M"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
