"""The contracts, as great-expectations suites built in code from params.yaml's `contracts` section.

Three kinds of dataset, three suites over the same tables (see tables.py):
- human:         the human-annotated set (COCO's role);
- web:           raw web pairs after ingestion;
- bootstrapped:  select's output: adds provenance, scores, kept-at-threshold and the share bounds
                 that catch a filter that keeps or removes everything.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from blip.config import ContractsConfig

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


def summary_suite(kind: str, cfg: ContractsConfig) -> gx.ExpectationSuite:
    """Dataset-level facts: counts and checksums agree with the manifest; CapFilt's shares in bounds."""
    ex = [gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("rows_match_manifest", "checksums_ok", "shard_counts_match", "by_source_matches")]
    if kind == "bootstrapped":
        ex += [gxe.ExpectColumnValuesToBeInSet(column="counts_match_rows", value_set=[True]),
               gxe.ExpectColumnValuesToBeInSet(column="threshold_valid", value_set=[True]),
               *[gxe.ExpectColumnValuesToNotBeNull(column=c)
                 for c in ("synthetic_share", "web_removed_share", "noise_ratio")],
               _within("synthetic_share", cfg.synthetic_share),
               _within("web_removed_share", cfg.web_removed_share),
               _within("noise_ratio", cfg.noise_ratio)]
    return gx.ExpectationSuite(name=f"{kind}_summary", expectations=ex)


def images_suite(kind: str, min_side: int, max_side: int) -> gx.ExpectationSuite:
    """A sample of images decodes and has sides within the ingestion bounds."""
    return gx.ExpectationSuite(name=f"{kind}_images", expectations=[
        gxe.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=min_side, max_value=max_side),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=min_side, max_value=max_side),
    ])


def _within(column: str, bounds: tuple[float, float]) -> gxe.ExpectColumnValuesToBeBetween:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=bounds[0], max_value=bounds[1])
