"""`blip prepare`: the stage that builds the human set and registers the web set (the built-in world by default)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from blip.cli.common import write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Build the datasets under --out and write the stage's metrics."""
    from blip.data.prepare import check_sources, prepare
    from blip.world.generate import write_sources

    params = load_params(args.params)
    check_sources(params.data)
    start = time.time()
    # the built-in world stands in for each source params leave unset: a data source, written first
    sources, world = write_sources(params, Path(args.out) / "world")
    metrics = ({"world": world} if world is not None else {}) | prepare(params, args.out, sources)
    metrics["seconds"] = round(time.time() - start, 1)
    write_metrics(args.metrics, metrics)
    web, human = metrics["web"], metrics["human"]
    print(f"prepare: human train/val/test {human['train']['samples']}/{human['val']['samples']}/"
          f"{human['test']['samples']} images, web {web['samples']} pairs in {web['shards']} shards, registered "
          f"where they are, in {metrics['seconds']} s -> {args.out}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("prepare", help="stage: build the human and web datasets (built-in world by default)")
    p.add_argument("--out", default=str(WORKSPACE.folder("data")))
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("prepare")))
    p.set_defaults(func=run)
