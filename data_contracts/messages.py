"""A failed expectation in words a person can act on: the observed value, the bounds, the param that
sets them and the likely cause. Plain Python (no great-expectations import), so the Prefect flow can
render the same summary from a results JSON."""

from __future__ import annotations

# column -> (the param that sets its bounds, the cause when the value is below them, when above them).
# A column checked against a fixed set (True/False) has one cause, in the "below" slot.
HINTS: dict[str, tuple[str | None, str, str]] = {
    "web_removed_share": (
        "contracts.web_removed_share",
        "the filter kept nearly every web text: a threshold too low (select.threshold, or calibration with "
        "select.target_precision too low) or a filter that accepts anything (see metrics/gate_filter.json)",
        "the filter removed nearly every web text: a threshold too high, or a filter that cannot tell a matching "
        "text from another image's (see metrics/gate_filter.json: its ITM AUC and recall)"),
    "synthetic_share": (
        "contracts.synthetic_share",
        "few synthetic captions survived: the filter rejects the captioner's captions (a weak captioner, see "
        "metrics/gate_captioner.json, or a threshold too high)",
        "synthetic captions crowd out the rest: the web and human texts were mostly removed, or "
        "capfilt.captions_per_image is high"),
    "noise_ratio": (
        "contracts.noise_ratio",
        "the filter removed almost no synthetic caption: a threshold too low, or a filter that accepts anything",
        "the filter removed almost every synthetic caption: a weak captioner (metrics/gate_captioner.json) or a "
        "threshold too high"),
    "words": ("contracts.min_words, contracts.max_words",
              "captions shorter than the bound (empty after clean-up)",
              "captions longer than the bound: ingest.max_words cuts them at ingestion, so the bound is below it"),
    "longest_word": ("contracts.max_word_chars", "",
                     "a 'word' longer than the bound: run-on text, base64 or a blob pasted as a caption"),
    "width": ("ingest.min_side, ingest.max_side", "images smaller than ingestion allows",
              "images larger than ingestion writes: the dataset was not written by this ingestion"),
    "height": ("ingest.min_side, ingest.max_side", "images smaller than ingestion allows",
               "images larger than ingestion writes: the dataset was not written by this ingestion"),
    "in_eval": (None, "an evaluation image (val/test split) is in this training set, byte for byte or pixel for "
                      "pixel: remove those samples from the source data, or the evaluation is not held out", ""),
    "key_safe": (None, "a key that is a path (slashes, '..'): rename the samples in the source shards", ""),
    "utf8": (None, "a caption that is not valid UTF-8: re-ingest the source (ingestion skips these)", ""),
    "has_image": (None, "a sample without an image: the shard lost a member; re-ingest it", ""),
    "decodable": (None, "an image that does not decode: a corrupt file in a shard; re-ingest the source", ""),
    "source": (None, "a sample of a source this dataset should not hold", ""),
    "score_missing": (None, "a web or synthetic text without a finite ITM score: re-run capfilt, then select", ""),
    "score": (None, "a kept text scores below the threshold: the selection tables are corrupt; re-run select", ""),
    "itm": (None, "an ITM probability outside [0, 1]: the score tables are corrupt; re-run capfilt", ""),
    "threshold_valid": (None, "the manifest's threshold is not a finite positive number: re-run select", ""),
}
# the bootstrapped set's checks over every row, in aggregate: each observed value is a count of offending rows
HINTS.update({
    "unsafe_keys": (None, "", "keys that are paths (slashes, '..') or hold control characters: rename the samples "
                              "in the source shards"),
    "duplicate_keys": (None, "", "one input key in two web shards (two img2dataset runs into one set?): each key "
                                 "names one image; rename or drop the duplicates in the source shards"),
    "words_out_of_range": ("contracts.min_words, contracts.max_words", "",
                           "kept texts shorter or longer than the bounds: empty after clean-up, or ingest.max_words "
                           "above contracts.max_words"),
    "long_words": ("contracts.max_word_chars", "",
                   "a 'word' longer than the bound: run-on text, base64 or a blob pasted as a caption"),
    "bad_sources": (None, "", "a kept text that is neither web nor synthetic: the selection tables are corrupt; "
                              "re-run select"),
    "itm_out_of_range": (None, "", "an ITM probability outside [0, 1] or missing: the score tables are corrupt; "
                                   "re-run capfilt"),
    "score_missing": (None, "", "a kept text without a finite score: re-run capfilt, then select"),
    "below_threshold": (None, "", "a kept text scores below the threshold: the selection tables are corrupt; "
                                  "re-run select"),
    "eval_leaks": (None, "", "an evaluation image (val/test split) is among the kept web images, byte for byte or "
                             "pixel for pixel: remove it from the source data, or the evaluation is not held out"),
    "sample_unusable_share": ("ingest.max_skip_fraction", "",
                              "most sampled web samples are unusable (no image, no caption, broken shards): the "
                              "shards are not img2dataset's layout, or the download failed"),
    "counts_consistent": (None, "the selection's counts do not add up (a source's total is not its kept plus its "
                                "removed texts): the manifest was edited or cut; re-run select", ""),
})
CHANGED_AFTER_WRITING = ("the dataset's files do not match its manifest: it changed after it was written, or a "
                         "write was cut short; re-run the stage that wrote it")
for _column in ("rows_match_manifest", "checksums_ok", "shard_counts_match", "by_source_matches", "counts_match_rows"):
    HINTS[_column] = (None, CHANGED_AFTER_WRITING, "")
for _column in ("key", "caption"):
    HINTS[_column] = (None, f"samples without a {_column}, or with a duplicate {_column}: fix the source shards", "")


def _bounds(failure: dict) -> str:
    low, high, allowed = failure.get("min_value"), failure.get("max_value"), failure.get("value_set")
    if allowed is not None:
        return "allowed: " + " or ".join(str(v) for v in allowed)
    if low is not None and high is not None:
        return f"allowed [{low:g}, {high:g}]"
    if low is not None:
        return f"allowed >= {low:g}"
    return f"allowed <= {high:g}" if high is not None else "allowed: not null"


def describe(failure: dict) -> dict:
    """The failure with `bounds`, `param` and `cause` filled in (observed stays as measured)."""
    param, low_cause, high_cause = HINTS.get(failure.get("column") or "", (None, "", ""))
    observed = failure.get("observed")
    cause = low_cause
    if isinstance(observed, (int, float)) and not isinstance(observed, bool) and failure.get("max_value") is not None \
            and observed > failure["max_value"]:
        cause = high_cause
    elif failure.get("min_value") is None and failure.get("max_value") is not None:
        cause = high_cause or low_cause
    elif observed is None and low_cause and high_cause:  # rows on either side: both causes
        cause = f"below: {low_cause}; above: {high_cause}"
    return {**failure, "bounds": _bounds(failure), "param": param, "cause": cause or None}


def _observed(f: dict) -> str:
    if f.get("observed") is not None:
        value = f["observed"]
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    count = f.get("unexpected_count")
    return f"{count} of {f['rows']} rows" if count and f.get("rows") else "-"


def explain(report: dict) -> str:
    """A failed contract for a person: each failed check with its value, bounds, param and likely cause."""
    lines = [f"contract '{report['kind']}' FAILED for {report['dataset']}:"]
    for f in map(describe, report["failures"]):
        check = f"{f['column'] or f['expectation']}" + (f" [{f['check']}]" if f.get("check") else "")
        param = f" (set by {f['param']})" if f["param"] else ""
        examples = f"; e.g. {', '.join(f['examples'])}" if f.get("examples") else ""
        lines.append(f"  {f['table']}: {check}: {_observed(f)}, {f['bounds']}{param}{examples}")
        if f["cause"]:
            lines.append(f"    likely cause: {f['cause']}")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """A contract's results JSON (every dataset it checked) as a markdown summary."""
    lines = []
    for report in results["reports"]:
        verdict = "passed" if report["success"] else "FAILED"
        lines += [f"### Contract `{report['kind']}` {verdict}: `{report['dataset']}` ({report['rows']} rows)", ""]
        if report["failures"]:
            lines += ["| table | check | observed | bounds | param | likely cause |", "|---|---|---|---|---|---|"]
            for f in map(describe, report["failures"]):
                lines.append(f"| {f['table']} | {f['column'] or f['expectation']} | {_observed(f)} | {f['bounds']} "
                             f"| {f['param'] or ''} | {f['cause'] or ''} |")
        else:
            shown = {k: v for k, v in report.get("summary", {}).items() if isinstance(v, float)}
            lines += [", ".join(f"{k} {v:.3f}" for k, v in shown.items()) or "every check passed"]
        lines.append("")
    return "\n".join(lines)
