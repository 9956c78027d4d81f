"""`blip evaluate`: caption metrics or retrieval recalls of a model on a test split, tracked in MLflow."""

from __future__ import annotations

import argparse

from blip.cli.common import DEVICE_HELP, write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Evaluate the model; rank 0 writes and tracks the result."""
    from blip.evaluate.model import evaluate_model
    from blip.tracking import Tracker, data_hashes, git_commit

    params = load_params(args.params)
    metrics, examples, reports = evaluate_model(args.model, args.data, params, args.k_test, args.limit, args.device)
    if not reports:  # rank 0 writes and tracks the result every rank holds
        return 0
    write_metrics(args.metrics, metrics)
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, args.name or f"evaluate {args.model}")
    tracker.tags({"stage": "evaluate", "model": args.model, "git_commit": git_commit(), **data_hashes([args.data])})
    tracker.metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    tracker.dict_artifact({"metrics": metrics, "examples": examples[:200]}, "evaluation.json")
    tracker.end()
    shown = {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)}
    print(f"evaluate {args.model} on {args.data}: {shown}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("evaluate", help="caption metrics / retrieval recalls of a model on a test split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=str(WORKSPACE.human("test")), help="a human split (zero-shot: another dataset's)")
    p.add_argument("--metrics", default=None)
    p.add_argument("--name", default=None, help="MLflow run name")
    p.add_argument("--k-test", type=int, default=None, help="ITC candidates re-ranked by ITM")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    p.add_argument("--device", default=None, help=f"{DEVICE_HELP} (default: params inference.device)")
    p.set_defaults(func=run)
