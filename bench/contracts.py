"""Data-contract throughput: rows/s of the bootstrapped rows suite (every expectation over every row)
on a synthetic 1M-row manifest table. (Reading the table from shards is measured by the contract runs
themselves: `rows_per_s` in metrics/validate_*.json.)

    python bench/contracts.py [--rows 1000000]

Writes bench/results/contracts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from blip.config import load_params
from data_contracts.runner import _context
from data_contracts.suites import rows_suite

ROOT = Path(__file__).resolve().parents[1]


def synthetic_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """A bootstrapped dataset's rows table: human / web / synthetic captions with ITM scores."""
    rng = np.random.default_rng(seed)
    source = rng.choice(np.array(["human", "web", "synthetic"]), size=n, p=[0.2, 0.4, 0.4])
    itm = np.where(source == "human", np.nan, rng.uniform(0.5, 1.0, size=n))
    words = rng.integers(3, 25, size=n)
    return pd.DataFrame({"key": [f"{i:09d}" for i in range(n)], "key_safe": True,
                         "shard": [f"shard-{i // 10000:06d}.tar" for i in range(n)],
                         "caption": ["a small red circle above a blue square"] * n, "utf8": True, "words": words,
                         "longest_word": 6, "source": source, "score": itm, "itm": itm, "score_missing": False,
                         "has_image": True, "in_eval": False})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import great_expectations as gx

    params = load_params(ROOT / "params.yaml")
    df = synthetic_rows(args.rows)
    context = _context(None)
    batch = context.data_sources.add_pandas("bench").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    vd = context.validation_definitions.add(gx.ValidationDefinition(
        name="bench", data=batch, suite=context.suites.add(rows_suite("bootstrapped", params.contracts, 0.5))))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
        times.append(time.perf_counter() - start)
        assert result.success, "the synthetic table should satisfy the contract"
    median = statistics.median(times)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "rows": args.rows, "expectations": len(result.results), "seconds_median": round(median, 2),
           "rows_per_s": round(args.rows / median), "seconds_all": [round(t, 2) for t in times]}
    print(json.dumps(out))
    path = ROOT / "bench" / "results" / "contracts.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
