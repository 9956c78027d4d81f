"""`blip rounds`: bootstrapping rounds 2..R after the main chain's round 1."""

from __future__ import annotations

import argparse
from pathlib import Path

from blip.cli.common import write_metrics
from blip.layout import ROUNDS, WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Run the later rounds and write a row per round."""
    from blip.data import storage
    from blip.rounds import rounds_table, run_rounds

    params = load_params(args.params)
    out = Path(args.out)
    rows = run_rounds(params.rounds, out, args.params, continue_pretraining=bool(params.retrain.init_from))
    table = rounds_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(out / "rounds.md", table.encode())
    write_metrics(args.metrics, {"rounds": params.rounds, "per_round": rows})
    print(table)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("rounds", help="stage: bootstrapping rounds 2..R (params `rounds`) after the main chain's "
                                      "round 1")
    p.add_argument("--out", default=str(ROUNDS), help="folder for the later rounds' data, models and reports")
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("rounds")))
    p.set_defaults(func=run)
