"""`blip <command>`: the pipeline's stages and the user commands, each a thin module over the library.

Each command's module adds its arguments (`add`) and runs one library function. Their library imports
happen inside the command that needs them, so `blip --help` stays fast and a stage's code dependencies
are the import closure of its own module (tests/test_structure.py checks dvc.yaml against it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> its module in this package (a module may hold a family: the three training stages)
COMMANDS = {
    "prepare": "prepare", "world": "world", "ingest": "ingest",
    "pretrain": "train", "finetune_captioner": "train", "finetune_filter": "train",
    "evaluate": "evaluate", "capfilt": "capfilt", "select": "select", "audit": "audit",
    "materialize": "materialize",
    "compare": "compare", "rounds": "rounds", "gate": "gate", "register": "register",
    "caption": "caption", "score": "score", "downstream-data": "downstream_data", "downstream": "downstream",
    "video-data": "video_data", "video": "video", "ask": "ask", "verify-pair": "verify_pair", "verify": "verify",
}


def build_parser() -> argparse.ArgumentParser:
    """The `blip` parser with every command's arguments."""
    parser = argparse.ArgumentParser(prog="blip", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(COMMANDS.values()):  # each module once, in the table's order
        importlib.import_module(f"{__name__}.{module}").add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `blip` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"blip {args.command}: error: {e}", file=sys.stderr)
        return 2
