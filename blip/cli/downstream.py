"""`blip downstream`: a transfer task fine-tuned from each given model and scored."""

from __future__ import annotations

import argparse

from blip.cli.common import parse_sources, write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Fine-tune the task from each given model and score each (relaunched under DeepSpeed when train.procs > 1)."""
    from blip.launch import relaunch
    from blip.tasks.registry import transfer_task

    task = transfer_task(args.task)
    params = load_params(args.params)
    relaunched = relaunch(args.procs if args.procs is not None else params.train.procs)
    if relaunched is not None:
        return relaunched
    sources = parse_sources(args.sources)
    data = args.data or str(WORKSPACE.data(args.task))
    result = task.run(params, sources, data, args.models or str(WORKSPACE.model(args.task)),
                      args.max_steps)
    import torch.distributed as dist

    if dist.get_rank() == 0:  # rank 0 scored the models
        if task.serve is not None:  # servable pyfuncs, each champion when it scores best
            from blip.registry import register_transfer_models

            for name, decision in register_transfer_models(params, args.task, task.metric, result, sources).items():
                result[name]["registered"] = decision
        write_metrics(args.metrics or WORKSPACE.metrics(f"downstream/{args.task}"), result)
        scores = {n: result[n][task.metric] for n in sources}
        print(f"downstream {args.task}: {task.metric} {scores}, chance {result['chance']}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("downstream", help="stage: fine-tune and score a transfer task from each given model")
    p.add_argument("task", help="a transfer task of the registry (blip/tasks/registry.py): vqa, nlvr, dialog, ...")
    p.add_argument("--from", dest="sources", nargs="+", required=True, metavar="NAME=MODEL",
                   help="models to fine-tune from, e.g. baseline=models/pretrain bootstrapped=models/retrain")
    p.add_argument("--data", default=None, help="the task's data (default: data/TASK)")
    p.add_argument("--models", default=None,
                   help="folder of the fine-tuned models, one per NAME (default: models/TASK)")
    p.add_argument("--metrics", default=None, help="default: metrics/downstream/TASK.json")
    p.add_argument("--max-steps", type=int, default=None, help="stop each fine-tuning after this many steps")
    p.add_argument("--procs", type=int, default=None, help="processes (default: train.procs)")
    p.set_defaults(func=run)
