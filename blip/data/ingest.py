"""What every ingestion shares: the tally of seen, normalised and skipped samples, caption lists, names.

The human-annotated set (COCO / Flickr30k Karpathy JSON with an image root, karpathy.py) and the transfer
tasks' sets are ingested into the internal form (webdataset shards + manifest.json). The web set is not
copied at all: web.py registers its shards where they are. Bad samples never crash a run: each is
normalised (counted under `normalised`) or skipped (counted under `skipped`, with examples), and the
run fails, naming the worst files, only when the skipped share passes `max_skip_fraction`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import PurePosixPath

from blip.config import IngestConfig
from blip.data.text import CaptionError, prepare_caption

_MAX_EXAMPLES = 20


class IngestError(RuntimeError):
    """The input cannot make a usable dataset (too many samples skipped, or none usable): it is probably
    not what the user thinks it is."""


class Tally:
    """Counts of what was seen, normalised and skipped, with the files that caused skips."""

    def __init__(self) -> None:
        self.seen = 0
        self.skipped: Counter = Counter()
        self.normalised: Counter = Counter()
        self.captions_dropped: Counter = Counter()
        self.by_file: dict[str, list[str]] = defaultdict(list)

    def skip(self, origin: str, reason: str, detail: str = "", samples: int = 1) -> None:
        self.skipped[reason] += samples
        self.by_file[origin].append(f"{reason}{': ' + detail if detail else ''}"
                                    f"{f' ({samples} samples)' if samples > 1 else ''}")

    def count_fixes(self, fixes: tuple[str, ...]) -> None:
        self.normalised.update(fixes)

    def absorb(self, other: "Tally") -> None:
        """Add another tally's counts (its `seen` included) to this one."""
        self.seen += other.seen
        self.skipped.update(other.skipped)
        self.normalised.update(other.normalised)
        self.captions_dropped.update(other.captions_dropped)
        for f, problems in other.by_file.items():
            self.by_file[f].extend(problems)

    def examples(self) -> list[dict]:
        return [{"file": f, "problems": p[:3]} for f, p in self.worst()[:_MAX_EXAMPLES]]

    def worst(self) -> list[tuple[str, list[str]]]:
        return sorted(self.by_file.items(), key=lambda kv: (-len(kv[1]), kv[0]))

    def fields(self) -> dict:
        return {"inputs_seen": self.seen, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()), "normalised": dict(sorted(self.normalised.items())),
                "captions_dropped": dict(sorted(self.captions_dropped.items())), "skip_examples": self.examples()}

    def check(self, cfg: IngestConfig, what: str) -> None:
        """Raise IngestError, naming the worst files, if the skipped share passes the threshold."""
        total = sum(self.skipped.values())
        if self.seen and total / self.seen > cfg.max_skip_fraction:
            lines = [f"  {f}: {', '.join(p[:3])}{' ...' if len(p) > 3 else ''}" for f, p in self.worst()[:10]]
            raise IngestError(
                f"{what}: skipped {total} of {self.seen} samples ({total / self.seen:.1%}), more than "
                f"ingest.max_skip_fraction={cfg.max_skip_fraction}. Reasons: {dict(self.skipped)}.\n"
                "Worst files:\n" + "\n".join(lines) + "\nFix or remove these inputs, or raise the threshold.")


def caption_list(raw: list, cfg: IngestConfig, tally: Tally) -> list[str]:
    """The usable captions of a list, cleaned; the others counted by reason in `captions_dropped`."""
    kept = []
    for c in raw:
        if not isinstance(c, str):  # a number, list, object or null is not a caption: never str() it
            tally.captions_dropped["caption_not_text"] += 1
            continue
        try:
            text, cut = prepare_caption(c, cfg.max_words, cfg.max_caption_chars)
        except CaptionError as e:
            tally.captions_dropped[e.reason] += 1
            continue
        if cut:
            tally.normalised["caption_truncated"] += 1
        kept.append(text)
    return kept


def image_fields(img) -> dict:
    """A cleaned image's size, fixes and sha1, for a sample's metadata."""
    return {"width": img.width, "height": img.height, "fixes": list(img.fixes),
            "image_sha1": hashlib.sha1(img.jpeg).hexdigest()}


def unsafe_name(name: str) -> bool:
    """A member or file name that is absolute, climbs out of its folder or holds a backslash."""
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or "\\" in name
