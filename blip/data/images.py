"""Turn arbitrary image bytes into a clean RGB JPEG, or say exactly why not.

Every fix is named (it lands in the manifest's `normalised` counts) and every refusal carries a
skip reason (the manifest's `skipped` counts). Bytes of an already clean RGB JPEG within the size
bounds are kept verbatim: re-encoding would only lose quality and time.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from blip.config import IngestConfig

_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An image that cannot be used; `reason` is the manifest's skip reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class CleanImage:
    jpeg: bytes
    width: int
    height: int
    fixes: tuple[str, ...]  # what was normalised, e.g. ("converted_cmyk", "resized")


def _to_rgb(img: Image.Image, fixes: list[str]) -> Image.Image:
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        # composite on white: dropping alpha would expose whatever colour the transparent pixels hold
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        fixes.append("alpha_composited")
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    fixes.append({"L": "converted_grayscale", "1": "converted_grayscale", "I": "converted_grayscale",
                  "I;16": "converted_grayscale", "F": "converted_grayscale", "CMYK": "converted_cmyk",
                  "P": "converted_palette", "YCbCr": "converted_ycbcr"}.get(img.mode, "converted_mode"))
    return img.convert("RGB")


@dataclass(frozen=True)
class OpenedImage:
    image: Image.Image          # upright RGB, within the size bounds (not resized)
    fixes: tuple[str, ...]      # what was normalised so far, e.g. ("exif_rotated", "converted_cmyk")
    source_format: str | None   # the file's format (JPEG, PNG, ...)


def open_image(data: bytes, cfg: IngestConfig) -> OpenedImage:
    """Decode, orient and convert to RGB, checking the size bounds; raise ImageError (with the skip reason) if
    unusable. The one reading of an image file: ingestion, CapFilt, the training loader and the contracts."""
    if not data:
        raise ImageError("empty_file", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > cfg.max_pixels:  # read from the header: nothing decoded yet
                raise ImageError("too_many_pixels", f"{img.width}x{img.height} > {cfg.max_pixels} pixels")
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = "not_an_image" if isinstance(e, UnidentifiedImageError) else "too_many_pixels"
        raise ImageError(reason, str(e)) from None
    except OSError as e:
        reason = "truncated_image" if "truncated" in str(e) else "corrupt_image"
        raise ImageError(reason, str(e)) from None
    except (SyntaxError, ValueError, EOFError) as e:
        raise ImageError("corrupt_image", str(e)) from None

    fixes: list[str] = []
    source_format = img.format
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
        fixes.append("exif_rotated")
    img = _to_rgb(img, fixes)
    short, long_ = sorted(img.size)
    if short < cfg.min_side:
        raise ImageError("too_small", f"{img.width}x{img.height}, min side {cfg.min_side}")
    if long_ / short > cfg.max_aspect:
        raise ImageError("extreme_aspect", f"{img.width}x{img.height}, max aspect {cfg.max_aspect}")
    return OpenedImage(img, tuple(fixes), source_format)


def pixel_digest(image: Image.Image) -> str:
    """sha256 of an RGB image's size and decoded pixels: the same picture whatever its file (metadata stripped
    or added, a lossless rewrite, PNG instead of JPEG)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


def clean_image(data: bytes, cfg: IngestConfig) -> CleanImage:
    """Decode, orient, convert to RGB, bound the size and encode as JPEG; raise ImageError if unusable."""
    opened = open_image(data, cfg)
    img, fixes = opened.image, list(opened.fixes)
    long_ = max(img.size)
    if long_ > cfg.max_side:
        scale = cfg.max_side / long_
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
        fixes.append("resized")

    if not fixes and opened.source_format == "JPEG":
        return CleanImage(data, img.width, img.height, ())
    if opened.source_format != "JPEG":
        fixes.append(f"reencoded_{(opened.source_format or 'unknown').lower()}")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=cfg.jpeg_quality)
    return CleanImage(out.getvalue(), img.width, img.height, tuple(fixes))
