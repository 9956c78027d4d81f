"""`blip ask`: answer questions about an image with a VQA model."""

from __future__ import annotations

import argparse

from blip.cli.common import DEVICE_HELP
from blip.cli.model_inputs import add_heads, open_image


def run(args: argparse.Namespace) -> int:
    """Print `question<TAB>answer` per question."""
    from blip.inference import load
    from blip.tasks.vqa.answer import ask

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    image = open_image(args.image)
    replies = ask(blip, [image] * len(args.questions), args.questions, args.method)
    for question, reply in zip(args.questions, replies):
        print(f"{question}\t{reply}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("ask", help="answer questions about an image with a VQA model")
    p.add_argument("image")
    p.add_argument("questions", nargs="+")
    p.add_argument("--model", required=True, help="a VQA model folder (its answer_list.json ranks) or release .pth")
    p.add_argument("--method", choices=["rank", "generate"], default=None,
                   help="rank the model's answer list (default when it has one) or generate freely")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_heads(p)
    p.set_defaults(func=run)
