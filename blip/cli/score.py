"""`blip score`: the ITM probability and ITC similarity of texts with an image."""

from __future__ import annotations

import argparse

from blip.cli.common import DEVICE_HELP
from blip.cli.model_inputs import add_heads, open_image


def run(args: argparse.Namespace) -> int:
    """Print `itm, itc, text` per text."""
    from blip.inference import load

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    for row in blip.score(open_image(args.image), args.texts, itm_token=args.itm_token):
        print(f"itm={row['itm']:.4f}\titc={row['itc']:.4f}\t{row['text']}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("score", help="ITM probability and ITC similarity of texts with an image")
    p.add_argument("image")
    p.add_argument("texts", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--itm-token", choices=["enc", "cls"], default="enc",
                   help="ITM's first token: enc as the release's retrieval training, cls as its BLIP_ITM demo")
    add_heads(p)
    p.set_defaults(func=run)
