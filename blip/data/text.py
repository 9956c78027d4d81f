"""Caption clean-up, as the BLIP release does it before tokenising."""

from __future__ import annotations

import re
import unicodedata

# the release turns these into spaces; commas, apostrophes, hyphens and '?' survive
_PUNCTUATION = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s+")


class CaptionError(ValueError):
    """A caption that cannot be used; `reason` is the manifest's skip reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def _visible(caption: str) -> str:
    """Control characters (NUL included) read as a break between words; the other characters that show
    nothing (zero-width and direction marks, the BOM, soft hyphens, unassigned and private code points)
    would split or glue tokens unseen, and BERT's tokenizer drops them anyway: dropped here."""
    if caption.isprintable():  # the common case, checked in C
        return caption
    return "".join(" " if (cat := unicodedata.category(c)) == "Cc" else "" if cat[0] == "C" else c
                   for c in caption)


def _normalise(caption: str) -> str:
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", _visible(caption).lower())).strip()


def clean_caption(caption: str, max_words: int) -> str:
    """Lower-case, punctuation to spaces, collapse whitespace, keep at most `max_words` words."""
    return " ".join(_normalise(caption).split(" ")[:max_words])


def decode_caption(raw: bytes | str, max_chars: int) -> str:
    """Raw caption bytes to text, refusing non-UTF-8, empty and absurdly long captions."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CaptionError("caption_not_utf8", str(e)) from None
    if len(raw) > max_chars:
        raise CaptionError("caption_too_long", f"{len(raw)} characters > {max_chars}")
    return raw


def prepare_caption(raw: bytes | str, max_words: int, max_chars: int) -> tuple[str, bool]:
    """Decode and clean a raw caption; returns (caption, whether it was cut to max_words)."""
    words = _normalise(decode_caption(raw, max_chars)).split()
    if not words:
        raise CaptionError("caption_empty", "nothing left after clean-up")
    return " ".join(words[:max_words]), len(words) > max_words
