"""The contracts, as great-expectations suites built in code from params.yaml's `contracts` section.

Three kinds of dataset, three suites over the same three tables (rows, summary, images):
- human:         the human-annotated set (COCO's role; tables.py, every row scanned);
- web:           the registered web set (web.py: the manifest against storage, and a sample of shards);
- bootstrapped:  select's output (selection.py: every row checked in aggregate from the selection tables, a
                 sample row by row): adds provenance, scores, kept-at-threshold, leaks and the share bounds
                 that catch a filter that keeps or removes everything.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from data_contracts.config import ContractsConfig

SOURCES = {"human": ["human"], "web": ["web"], "bootstrapped": ["human", "web", "synthetic"]}


def rows_suite(kind: str, cfg: ContractsConfig, threshold: float | None) -> gx.ExpectationSuite:
    """Every-row invariants: fields, captions, keys, provenance, scores, no evaluation image."""
    ex = [
        gxe.ExpectColumnValuesToNotBeNull(column="key"),
        gxe.ExpectColumnValuesToNotBeNull(column="caption"),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
        gxe.ExpectColumnValuesToBeInSet(column="has_image", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="utf8", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="words", min_value=cfg.min_words, max_value=cfg.max_words),
        gxe.ExpectColumnValuesToBeUnique(column="key"),
        gxe.ExpectColumnValuesToBeInSet(column="key_safe", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="longest_word", max_value=cfg.max_word_chars),
        gxe.ExpectColumnValuesToBeInSet(column="source", value_set=SOURCES[kind]),
        gxe.ExpectColumnValuesToBeInSet(column="in_eval", value_set=[False]),
    ]
    if kind == "bootstrapped":
        # nulls (human pairs carry no score) are not checked by GX's between-expectations
        ex.append(gxe.ExpectColumnValuesToBeBetween(column="itm", min_value=0.0, max_value=1.0))
        ex.append(gxe.ExpectColumnValuesToBeInSet(column="score_missing", value_set=[False]))
        if threshold is not None:
            ex.append(gxe.ExpectColumnValuesToBeBetween(column="score", min_value=threshold,
                                                        meta={"check": "kept_at_threshold"}))
    return gx.ExpectationSuite(name=f"{kind}_rows", expectations=ex)


# the bootstrapped set's checks over every row (selection.py): each a count of offending rows, 0 to pass
ZERO_COLUMNS = ("unsafe_keys", "duplicate_keys", "words_out_of_range", "long_words", "bad_sources", "itm_out_of_range",
                "score_missing", "below_threshold", "eval_leaks")


def summary_suite(kind: str, cfg: ContractsConfig, max_skip_fraction: float) -> gx.ExpectationSuite:
    """Dataset-level facts: counts and checksums agree with the manifest; CapFilt's shares in bounds; for the web
    set, the sampled shards' unusable share; for the bootstrapped set, every row's checks in aggregate."""
    ex = [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("rows_match_manifest", "checksums_ok", "shard_counts_match", "by_source_matches")]
    if kind == "web":
        ex.append(gxe.ExpectColumnValuesToBeBetween(column="sample_unusable_share", min_value=0.0,
                                                    max_value=max_skip_fraction))
    if kind == "bootstrapped":
        ex += [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
               for c in ("counts_match_rows", "counts_consistent", "threshold_valid")]
        ex += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in ZERO_COLUMNS]
        ex += [*[gxe.ExpectColumnValuesToNotBeNull(column=c)
                 for c in ("synthetic_share", "web_removed_share", "noise_ratio")],
               _within("synthetic_share", cfg.synthetic_share),
               _within("web_removed_share", cfg.web_removed_share),
               _within("noise_ratio", cfg.noise_ratio)]
    return gx.ExpectationSuite(name=f"{kind}_summary", expectations=ex)


def images_suite(kind: str, min_side: int, max_side: int, max_skip_fraction: float) -> gx.ExpectationSuite:
    """A sample of images decodes and has sides within the ingestion bounds. Web images are the user's, as they
    are: some may not decode (the share ingestion tolerates), and none was resized (no upper bound)."""
    web = kind in ("web", "bootstrapped")
    mostly = 1.0 - max_skip_fraction if kind == "web" else 1.0
    return gx.ExpectationSuite(name=f"{kind}_images", expectations=[
        gxe.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True], mostly=mostly),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=min_side, max_value=None if web else max_side),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=min_side, max_value=None if web else max_side),
    ])


def _within(column: str, bounds: tuple[float, float]) -> gxe.ExpectColumnValuesToBeBetween:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=bounds[0], max_value=bounds[1])
