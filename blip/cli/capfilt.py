"""`blip capfilt`: caption every web image and score every text into score tables (CapFilt), on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from blip.cli.common import DEVICE_HELP
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Score the web set(s) with the captioner(s) and filter(s)."""
    from blip.capfilt.job import CapfiltJob, run_capfilt

    params = load_params(args.params)
    job = CapfiltJob(params, captioners=(args.captioner or [str(WORKSPACE.model("captioner"))])
                     + list(params.capfilt.captioners),
                     filters=(args.filter or [str(WORKSPACE.model("filter"))]) + list(params.capfilt.filters),
                     web=args.input or [str(WORKSPACE.data("web"))], output=args.output, round=args.round,
                     calibrate_on=args.calibrate_on, metrics=Path(args.metrics) if args.metrics else None,
                     name=args.name, device=args.device, tables=args.tables)
    run_capfilt(job)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("capfilt", help="stage / user command: caption web images and score every text (CapFilt)")
    p.add_argument("--captioner", nargs="+", default=None, help="captioner model(s) (default: models/captioner)")
    p.add_argument("--filter", nargs="+", default=None, help="filter model(s) (default: models/filter)")
    p.add_argument("--input", nargs="+", default=None, help="registered web set(s) (default: data/web)")
    p.add_argument("--output", default=str(WORKSPACE.data("scores")), help="folder or URL for the scores manifest")
    p.add_argument("--tables", default=None, help="folder or URL the score tables go to (default: params "
                                                 "capfilt.tables); every Ray worker must be able to write it")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--calibrate-on", default=str(WORKSPACE.human("val")),
                   help="human split whose pairs select calibrates on")
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("capfilt")))
    p.add_argument("--name", default="capfilt", help="MLflow run name")
    p.add_argument("--device", default=None, help=f"{DEVICE_HELP} (default: params inference.device)")
    p.set_defaults(func=run)
