"""`blip caption`: caption images with a model (ours, a release .pth or a Hugging Face BLIP folder)."""

from __future__ import annotations

import argparse
import sys

from blip.cli.common import DEVICE_HELP
from blip.cli.model_inputs import add_heads, open_images


def run(args: argparse.Namespace) -> int:
    """Print `path<TAB>caption` lines; files that are not usable images are skipped and said (exit 1)."""
    from blip.inference import load
    from blip.models.generate import GenerationSettings

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    settings = GenerationSettings(args.method, num_beams=args.beams, max_length=args.max_length,
                                  min_length=args.min_length, top_p=args.top_p, num_captions=args.num)
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    paths, images, skipped = open_images(args.images)
    for line in skipped:
        print(f"blip caption: skipped {line}", file=sys.stderr)
    if not images:
        raise ValueError(f"none of the {len(args.images)} files is a usable image")
    for path, captions in zip(paths, blip.caption(images, settings)):
        for caption in captions:
            print(f"{path}\t{caption}")
    if skipped:
        print(f"blip caption: captioned {len(images)} of {len(args.images)} files, skipped {len(skipped)}",
              file=sys.stderr)
    return 1 if skipped else 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("caption", help="caption images with a model (ours, release .pth, HF Blip folder)")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--method", choices=["beam", "nucleus", "greedy"], default="beam")
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--num", type=int, default=1, help="captions per image")
    p.add_argument("--max-length", type=int, default=20)
    p.add_argument("--min-length", type=int, default=5)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=None, help="seed for nucleus sampling")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_heads(p)
    p.set_defaults(func=run)
