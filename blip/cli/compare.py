"""`blip compare`: the baseline against the bootstrapped model, as JSON and a markdown table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blip.cli.common import write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Compare the two chains' metrics and print the table."""
    from blip.data import storage
    from blip.evaluate.compare import chain_of, compare, compare_table

    params = load_params(args.params)
    result = compare(Path(args.metrics_dir), params.downstream.tasks + [f"video_{k}" for k in params.downstream.video])
    write_metrics(args.out, result)
    seeds = json.loads(Path(args.seeds).read_text()) if args.seeds and Path(args.seeds).is_file() else None
    table = compare_table(result, chain_of(params), seeds)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        storage.write_bytes(Path(args.table), table.encode())
    print(table)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("compare", help="baseline vs bootstrapped evaluation, as JSON and a markdown table")
    p.add_argument("--metrics-dir", default=str(WORKSPACE.folder("metrics")))
    p.add_argument("--out", default=str(WORKSPACE.metrics("compare")))
    p.add_argument("--table", default=None)
    p.add_argument("--seeds", default=None, help="Table 12 over seeds (experiments/table12.py's result): shown when it "
                                                 "ran on this chain's data, world and preset")
    p.set_defaults(func=run)
