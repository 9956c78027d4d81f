"""`blip pretrain | finetune_captioner | finetune_filter`: the training stages, on DeepSpeed."""

from __future__ import annotations

import argparse
from pathlib import Path

from blip.layout import TRAINING, WORKSPACE
from blip.params import load_params


def _chain_tasks() -> dict:
    """The chain's own trainable tasks, imported one by one rather than through the registry: so the training
    stages' code (and DVC's record of it) holds no transfer task, and a change to one never re-runs pre-training."""
    from blip.tasks.captioner.training import TRAIN as CAPTIONER
    from blip.tasks.filter.training import SHARED
    from blip.tasks.filter.training import TRAIN as FILTER
    from blip.tasks.pretrain.training import TRAIN as PRETRAIN

    return {t.name: t for t in (PRETRAIN, CAPTIONER, FILTER, SHARED)}


def run(args: argparse.Namespace) -> int:
    """Train the stage's model (relaunched under DeepSpeed when train.procs > 1)."""
    from blip.launch import relaunch

    params = load_params(args.params)
    relaunched = relaunch(args.procs if args.procs is not None else params.train.procs)
    if relaunched is not None:
        return relaunched
    # here, not above: the process that only relaunches under DeepSpeed never loads the model stack
    from blip.train.engine import TrainJob, train

    task, data, init, out = TRAINING[args.stage]
    name = args.name or args.stage
    if args.models == "shared" and args.stage == "finetune_captioner":
        from blip.train.shared import adopt_shared_captioner

        adopt_shared_captioner(TRAINING["finetune_filter"][3], Path(args.out or out),
                               WORKSPACE.metrics("finetune_filter"), Path(args.metrics or WORKSPACE.metrics(name)),
                               WORKSPACE.plot("finetune_filter"), Path(args.plot or WORKSPACE.plot(name)))
        print(f"[{name}] capfilt.models is shared: the captioner is the shared captioner-filter, not trained apart")
        return 0
    if args.models == "shared" and args.stage == "finetune_filter":
        task = "shared"
    job = TrainJob(
        name=name, task=_chain_tasks()[task], stage=getattr(params.active, args.stage), params=params,
        data=args.data or [str(d) for d in data],
        out_dir=Path(args.out or (WORKSPACE.model(name) if args.name else out)),
        ckpt_dir=Path(args.ckpt_dir or WORKSPACE.checkpoints(name)),
        init_from=args.init_from if args.init_from is not None else (str(init) if init else None),
        metrics_path=Path(args.metrics or WORKSPACE.metrics(name)),
        plot_path=Path(args.plot or WORKSPACE.plot(name)), max_steps=args.max_steps)
    train(job)
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add a parser per training stage."""
    for stage, (task, *_) in TRAINING.items():
        p = sub.add_parser(stage, help=f"stage: train ({task}) with DeepSpeed")
        p.add_argument("--data", nargs="+", default=None, help="dataset folders (default: %(default)s)")
        p.add_argument("--init-from", default=None, help="model to start from ('' = from scratch)")
        p.add_argument("--out", default=None, help="final model folder")
        p.add_argument("--name", default=None, help="run name (e.g. retrain); sets default paths")
        p.add_argument("--ckpt-dir", default=None)
        p.add_argument("--metrics", default=None)
        p.add_argument("--plot", default=None)
        p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
        p.add_argument("--procs", type=int, default=None, help="processes (default: train.procs)")
        if stage != "pretrain":
            p.add_argument("--models", choices=["decoupled", "shared"], default="decoupled",
                           help="CapFilt's models (params capfilt.models): shared = one captioner-filter, trained "
                                "by finetune_filter and adopted by finetune_captioner (Table 4's ablation)")
        p.set_defaults(func=run, stage=stage, models="decoupled")
