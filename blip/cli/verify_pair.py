"""`blip verify-pair`: is each statement true of the image pair? (an NLVR2 model)"""

from __future__ import annotations

import argparse

from blip.cli.common import DEVICE_HELP
from blip.cli.model_inputs import add_heads, open_image


def run(args: argparse.Namespace) -> int:
    """Print `statement<TAB>true|false<TAB>probability` per statement."""
    from blip.inference import load
    from blip.tasks.nlvr.verify import verify_pair

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    first, second = open_image(args.first), open_image(args.second)
    n = len(args.statements)
    for statement, (verdict, p) in zip(args.statements, verify_pair(blip, [first] * n, [second] * n, args.statements)):
        print(f"{statement}\t{'true' if verdict else 'false'}\t{p:.4f}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("verify-pair", help="is each statement true of the image pair? (an NLVR2 model)")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("statements", nargs="+")
    p.add_argument("--model", required=True, help="an NLVR model folder or the release's model_base_nlvr.pth")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_heads(p)
    p.set_defaults(func=run)
