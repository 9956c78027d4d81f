"""The selection rule: from score-table columns to kept texts, exactly, in memory bounded per table.

A candidate's score is the ensemble mean of each filter's `itm_weight x ITM + itc_weight x ITC`,
rounded to float32 (the tables' precision): every comparison below is on that one number. The cuts,
in order:

1. threshold: the score reaches it (mean), or most filters' own scores do (vote);
2. top_percent: the best ceil(p% x all candidates) by score;
3. max_texts_per_image: an image's best texts;
4. max_web / max_synthetic / web_share: each source's best texts, to its cap and to the mix.

"Best" orders by score, high first, and breaks ties by position in the tables (table order, then row
order), so every cut keeps exactly as many texts as it says. A global cut (2 and 4) needs the score of
the k-th best among billions of rows: `KthBest` finds it in two passes over the tables with two
65,536-bin histograms of the scores' bits, never holding the scores themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from blip.selection.config import SelectConfig

# the largest uint32 is a NaN's key, and NaN scores are refused: no row has it, and none is above it
NO_KEY = 0xFFFFFFFF


def filter_matrix(column: pa.ChunkedArray | pa.Array, filters: int) -> np.ndarray:
    """A fixed-size-list score column as an (n, filters) float64 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, filters)


def scores(itm: np.ndarray, itc: np.ndarray, cfg: SelectConfig) -> tuple[np.ndarray, np.ndarray]:
    """(each filter's score (n, F), the ensemble's score (n,) in float32)."""
    per_filter = cfg.itm_weight * itm + cfg.itc_weight * itc
    return per_filter, per_filter.mean(axis=1).astype(np.float32)


def passes_threshold(per_filter: np.ndarray, score: np.ndarray, threshold: float, how: str) -> np.ndarray:
    """Cut 1: the mean score reaches the threshold, or (vote) a majority of filters' scores do."""
    if how == "vote":
        return (per_filter >= threshold).sum(axis=1) * 2 > per_filter.shape[1]
    return score >= threshold


def sort_keys(score: np.ndarray) -> np.ndarray:
    """uint32 keys that order like the float32 scores (the IEEE bits, flipped so that unsigned order holds)."""
    if np.isnan(score).any():
        raise ValueError("a score is NaN: the score table is corrupt; re-run `blip capfilt`")
    bits = score.astype(np.float32).view(np.uint32)
    return np.where(bits & 0x80000000, ~bits, bits | 0x80000000).astype(np.uint32)


@dataclass(frozen=True)
class Cutoff:
    """Keep rows with key > `key`, and the first `ties` rows (in table order) whose key equals it."""

    key: int
    ties: int


class KthBest:
    """The cutoff keeping exactly the best k of a stream of keys (high first, ties by stream order).

    Pass 1 histograms the keys' high 16 bits, pass 2 the low 16 bits inside the bin where the k-th
    falls: memory is two arrays of 65,536 counts, whatever the number of rows.
    """

    def __init__(self, k: int):
        self.k, self.seen = k, 0
        self.high = np.zeros(1 << 16, np.int64)
        self.low = np.zeros(1 << 16, np.int64)
        self.bin: int | None = None
        self.above = 0  # rows in higher bins than `bin`

    def add_pass1(self, keys: np.ndarray) -> None:
        """Count keys by their high 16 bits."""
        self.add_high(high_histogram(keys))

    def add_high(self, histogram: np.ndarray) -> None:
        """Add one table's `high_histogram` (pass 1 run where the table is)."""
        self.seen += int(histogram.sum())
        self.high += histogram

    def needs_pass2(self) -> bool:
        """Whether the k-th key lies in a bin to refine (False when k keeps none or all)."""
        if 0 < self.k < self.seen:
            from_top = np.cumsum(self.high[::-1])
            position = int(np.searchsorted(from_top, self.k))  # first count from the top reaching k
            self.bin = (1 << 16) - 1 - position
            self.above = int(from_top[position - 1]) if position else 0
            return True
        return False

    def add_pass2(self, keys: np.ndarray) -> None:
        """Count the keys of the k-th key's bin by their low 16 bits."""
        self.add_low(low_histogram(keys, self.bin))

    def add_low(self, histogram: np.ndarray) -> None:
        """Add one table's `low_histogram` of the k-th key's bin (pass 2 run where the table is)."""
        self.low += histogram

    def cutoff(self) -> Cutoff | None:
        """The cutoff (None: keep every row)."""
        if self.k >= self.seen:
            return None
        if self.k <= 0:
            return Cutoff(key=NO_KEY, ties=0)  # keeps nothing
        need = self.k - self.above
        from_top = np.cumsum(self.low[::-1])
        position = int(np.searchsorted(from_top, need))
        key = (self.bin << 16) | ((1 << 16) - 1 - position)
        higher = int(from_top[position - 1]) if position else 0
        return Cutoff(key=key, ties=need - higher)


def high_histogram(keys: np.ndarray) -> np.ndarray:
    """Pass 1 of KthBest on one table: its keys counted by their high 16 bits (histograms of tables add up)."""
    return np.bincount(keys >> 16, minlength=1 << 16).astype(np.int64)


def low_histogram(keys: np.ndarray, bin_: int) -> np.ndarray:
    """Pass 2 of KthBest on one table: the keys of bin `bin_` counted by their low 16 bits."""
    inside = keys[(keys >> 16) == bin_]
    return np.bincount(inside & 0xFFFF, minlength=1 << 16).astype(np.int64)


def ties_at(cutoff: Cutoff | None, keys: np.ndarray, among: np.ndarray) -> int:
    """How many rows of `among` sit exactly at the cutoff: a table's share of the tie budget, so each table's
    filter starts where the tables before it left off (their counts' prefix sum)."""
    return 0 if cutoff is None else int((among & (keys == cutoff.key)).sum())


class CutoffFilter:
    """Applies a cutoff to consecutive tables, counting ties across them (in table order). A table filtered on
    its own starts at `ties_seen`: the tied rows that all the tables before it hold."""

    def __init__(self, cutoff: Cutoff | None, ties_seen: int = 0):
        self.cutoff, self.ties_seen = cutoff, ties_seen

    def keep(self, keys: np.ndarray, among: np.ndarray) -> np.ndarray:
        """Which of the rows in `among` the cutoff keeps (rows outside `among` are not counted)."""
        if self.cutoff is None:
            return among.copy()
        kept = among & (keys > self.cutoff.key)
        tied = np.flatnonzero(among & (keys == self.cutoff.key))
        take = tied[:max(0, self.cutoff.ties - self.ties_seen)]
        self.ties_seen += len(tied)
        kept[take] = True
        return kept


def cap_per_image(image: np.ndarray, candidate: np.ndarray, keys: np.ndarray, among: np.ndarray,
                  cap: int | None) -> np.ndarray:
    """Cut 3: the best `cap` rows of each image among `among` (ties: the lower candidate index)."""
    if cap is None:
        return among.copy()
    rows = np.flatnonzero(among)
    order = rows[np.lexsort((candidate[rows], -keys[rows].astype(np.int64), image[rows]))]
    groups = image[order]
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    kept = np.zeros_like(among)
    kept[order[rank < cap]] = True
    return kept


def source_targets(web: int, synthetic: int, cfg: SelectConfig) -> tuple[int, int]:
    """Cut 4's sizes: each source's kept count after its cap and the web/synthetic mix."""
    w = web if cfg.max_web is None else min(web, cfg.max_web)
    s = synthetic if cfg.max_synthetic is None else min(synthetic, cfg.max_synthetic)
    r = cfg.web_share
    if r is not None and w + s:
        if r == 0 or r == 1:
            return (0, s) if r == 0 else (w, 0)
        if w / (w + s) > r:  # too many web texts: keep the best of them
            w = math.floor(r / (1 - r) * s)
        else:
            s = math.floor((1 - r) / r * w)
    return w, s


def calibrate(score: np.ndarray, label: np.ndarray, target_precision: float) -> dict | None:
    """The lowest score t such that the pairs scoring >= t have precision >= target (None if none)."""
    order = np.argsort(-score, kind="stable")
    s, positives = score[order], label[order].astype(np.int64)
    tp, n = np.cumsum(positives), np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(last_of_tie & (tp / n >= target_precision))
    if not len(ok):
        return None
    i = ok[-1]
    return {"threshold": float(s[i]), "precision": round(float(tp[i] / n[i]), 4),
            "recall": round(float(tp[i] / max(1, positives.sum())), 4)}
