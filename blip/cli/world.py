"""`blip world`: write the built-in world's raw human set and web shards, with its truth beside them (a data
source, as a user's own data is)."""

from __future__ import annotations

import argparse
import json

from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Generate the world under --out and print its statistics."""
    from blip.world.generate import generate_world

    params = load_params(args.params)
    stats = generate_world(params.world, params.seed if args.seed is None else args.seed, args.out)
    print(json.dumps(stats, indent=1))
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("world", help="write the built-in world's raw human set and web shards")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)
