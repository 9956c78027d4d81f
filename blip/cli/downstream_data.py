"""`blip downstream-data`: a transfer task's data as shards, from params data.<task>'s files or the built-in
world's."""

from __future__ import annotations

import argparse
import time

from blip.cli.common import write_metrics
from blip.params import load_params


def run_data(args: argparse.Namespace) -> int:
    """Write the task's data (the built-in world's, or params data.<task>'s files) under --out."""
    from blip.tasks.registry import transfer_task
    from blip.world.tasks import add_to_given, write_task_data

    task = transfer_task(args.task)
    params = load_params(args.params)
    start = time.time()
    if getattr(params.data, args.task) is None:  # no files given: the built-in world's data stands in
        metrics = write_task_data(args.task, params, args.out)
    else:
        metrics = task.build_data(params, args.out)
    counts = next(metrics[k] for k in ("questions", "pairs", "rounds") if k in metrics)  # per split
    if metrics["source"] == "files":
        counts.update(add_to_given(args.task, params, args.out))
    metrics["seconds"] = round(time.time() - start, 1)
    write_metrics(args.metrics, metrics)
    print(f"downstream-data {args.task}: {counts} ({metrics['source']}) in {metrics['seconds']} s -> {args.out}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("downstream-data", help="stage: a transfer task's data as shards (built-in world, or params "
                                               "data.<task>'s files)")
    p.add_argument("task", help="a transfer task of the registry (blip/tasks/registry.py): vqa, nlvr, dialog, ...")
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=run_data)
