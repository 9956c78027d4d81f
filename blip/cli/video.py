"""`blip video`: models scored zero-shot on a video set's clips."""

from __future__ import annotations

import argparse

from blip.cli.common import parse_sources, write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Score each given model zero-shot on the clips."""
    from blip.tasks.video.stage import run_video

    sources = parse_sources(args.sources)
    result = run_video(args.kind, load_params(args.params), sources,
                       args.data or str(WORKSPACE.data(f"video_{args.kind}")))
    write_metrics(args.metrics or WORKSPACE.metrics(f"downstream/video_{args.kind}"), result)
    metric = "vid_r1" if args.kind == "retrieval" else "accuracy"
    print(f"video {args.kind} (zero-shot): {metric} {({n: result[n][metric] for n in sources})}, "
          f"chance {result['chance']}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("video", help="stage: score models zero-shot on clips (text-to-video retrieval, video QA)")
    p.add_argument("kind", choices=["retrieval", "qa"])
    p.add_argument("--from", dest="sources", nargs="+", required=True, metavar="NAME=MODEL",
                   help="models to score, e.g. baseline=models/filter bootstrapped=models/filter_retrain")
    p.add_argument("--data", default=None, help="the clips (default: data/video_KIND)")
    p.add_argument("--metrics", default=None, help="default: metrics/downstream/video_KIND.json")
    p.set_defaults(func=run)
