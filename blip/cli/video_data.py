"""`blip video-data`: a zero-shot video set as shards of clips, from params data.video_<kind>'s MSRVTT / MSVD
files or the built-in world's."""

from __future__ import annotations

import argparse
import time

from blip.cli.common import write_metrics
from blip.params import load_params


def run_data(args: argparse.Namespace) -> int:
    """Write the clips (the built-in world's, or params data.video_KIND's MSRVTT / MSVD files) under --out."""
    from blip.tasks.video.stage import build_video_data
    from blip.world.video import write_clips

    params, start = load_params(args.params), time.time()
    if getattr(params.data, f"video_{args.kind}") is None:  # no files given: the built-in world's clips stand in
        metrics = write_clips(args.kind, params, args.out)
    else:
        metrics = build_video_data(args.kind, params, args.out)
    metrics["seconds"] = round(time.time() - start, 1)
    write_metrics(args.metrics, metrics)
    print(f"video-data {args.kind}: {metrics['clips']} clips ({metrics['source']}) in {metrics['seconds']} s "
          f"-> {args.out}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("video-data", help="stage: a zero-shot video set as shards of clips (built-in world, or "
                                          "params data.video_KIND's MSRVTT / MSVD files)")
    p.add_argument("kind", choices=["retrieval", "qa"])
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=run_data)
