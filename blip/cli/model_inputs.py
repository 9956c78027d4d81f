"""What the commands that run a model on a user's files share: opening the images, and head counts for release
weights."""

from __future__ import annotations

import argparse


def open_image(path: str):
    """An RGB image, upright by its EXIF; ValueError naming the file when it is not a usable image."""
    from blip.inference import decode_image

    try:
        return decode_image(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def open_images(paths: list[str]) -> tuple[list[str], list, list[str]]:
    """The usable images (their paths and pictures) and one line per file skipped, with its reason."""
    good, images, skipped = [], [], []
    for path in paths:
        try:
            images.append(open_image(path))
            good.append(path)
        except ValueError as e:
            skipped.append(str(e))
    return good, images, skipped


def add_heads(p: argparse.ArgumentParser) -> None:
    """Head counts for release weights of a width no released model has (checkpoints do not record them)."""
    p.add_argument("--vision-heads", type=int, default=None, help="ViT heads of a release .pth (default: by width)")
    p.add_argument("--text-heads", type=int, default=None, help="text heads of a release .pth (default: by width)")
