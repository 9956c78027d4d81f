"""`blip register`: a round's captioner, filter and pre-trained model into the MLflow registry, promoted by alias."""

from __future__ import annotations

import argparse
from pathlib import Path

from blip.layout import ROUNDS, WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Register the round's models and print each promotion decision."""
    from blip.registry import register_round

    params = load_params(args.params)
    decisions = register_round(params, args.round or max(1, params.rounds), Path(args.rounds_dir), args.only,
                               args.metrics)
    for d in decisions:
        print(f"register: {d['name']} v{d['version']} -> @{d['alias']} ({d['reason']})")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("register", help="stage: register captioner, filter and retrained model; promote by alias")
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("register")))
    p.add_argument("--rounds-dir", default=str(ROUNDS), help="the rounds stage's folder (params `rounds` > 1)")
    p.add_argument("--round", type=int, default=None, help="the round whose models to register (default: the last)")
    p.add_argument("--only", nargs="+", choices=["captioner", "filter", "pretrained"], default=None,
                   help="register only these (e.g. a round's captioner and filter before its retraining)")
    p.set_defaults(func=run)
