"""`blip materialize`: a selection dataset written as standalone shards (images copied), one Ray task per part."""

from __future__ import annotations

import argparse

from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Materialize the dataset into --out."""
    from blip.selection.materialize import materialize

    manifest = materialize(args.dataset, args.out, args.shard_size or load_params(args.params).ingest.shard_size)
    print(f"materialize: {manifest['samples']} samples in {len(manifest['shards'])} shards -> {args.out}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("materialize", help="write a selected (bootstrapped) dataset as standalone shards")
    p.add_argument("dataset")
    p.add_argument("out")
    p.add_argument("--shard-size", type=int, default=None, help="samples per shard (default: ingest.shard_size)")
    p.set_defaults(func=run)
