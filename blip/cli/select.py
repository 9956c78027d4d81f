"""`blip select`: choose the kept texts from CapFilt's score tables and write the bootstrapped dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Select from the score tables at the threshold params (or --threshold) give."""
    from blip.selection.job import SelectJob, run_select

    job = SelectJob(load_params(args.params), scores=args.scores, human=args.human, output=args.output,
                    threshold=args.threshold, metrics=Path(args.metrics) if args.metrics else None,
                    report=Path(args.report) if args.report else None, name=args.name)
    run_select(job)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("select", help="stage / user command: choose the kept texts from capfilt's score tables")
    p.add_argument("--scores", default=str(WORKSPACE.data("scores")), help="capfilt's output folder")
    p.add_argument("--human", nargs="*", default=[str(WORKSPACE.human("train"))],
                   help="human-annotated dataset(s) taken whole (default: %(default)s)")
    p.add_argument("--output", default=str(WORKSPACE.data("bootstrapped")))
    p.add_argument("--threshold", type=float, default=None, help="a fixed score threshold (default: params select)")
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("select")))
    p.add_argument("--report", default=str(WORKSPACE.report("capfilt")), help="folder for the examples sheet")
    p.add_argument("--name", default="select", help="MLflow run name")
    p.set_defaults(func=run)
