"""A bootstrapped dataset as the tables its contract checks, from its selection tables, never every image.

`select` already wrote, per web shard, a Parquet table of the kept texts: key, candidate, source, text,
score, ITM, ITC, the image's sha256 and its pixels' sha256. DuckDB reads those tables (local or through
fsspec, e.g. s3://) and computes every check over every row in bounded memory (it spills to disk past
`contracts.memory_mb`): counts, shares, key uniqueness, thresholds, per-shard totals, and evaluation leaks
as a join on the image digests. What comes back is a handful of numbers and, for each failed check, a
few example keys. Beside them:

- rows:   a seeded sample of `contracts.row_sample` rows, checked row by row (the Data Docs show them);
- images: a seeded sample of the kept images, decoded, read from at most `contracts.sample_shards` input
          shards (the input shards are the user's, in place: never all of them).
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import duckdb
import pandas as pd

from blip.config import Params
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.selected import suffix
from blip.data.shards import content_check
from blip.data.web import IMAGE_EXTS, read_web_shard
from data_contracts.tables import IMAGE_COLUMNS, EvalImages, image_row, safe_key

# each aggregate check: a count of offending rows (0 passes) and the SQL condition that finds them, over the
# view `kept` (one row per kept text); {min_words} ... are filled in from params
CHECKS = {
    "unsafe_keys": "key IS NULL OR key IN ('', '.', '..') OR contains(key, '/') OR contains(key, '\\') "
                   "OR regexp_matches(key, '[[:cntrl:]]')",
    "words_out_of_range": "words < {min_words} OR words > {max_words}",
    "long_words": "longest_word > {max_word_chars}",
    "bad_sources": "source IS NULL OR source NOT IN ('web', 'synthetic')",
    "itm_out_of_range": "itm IS NULL OR isnan(itm) OR itm < 0 OR itm > 1",
    "score_missing": "score IS NULL OR isnan(score) OR isinf(score)",
    "below_threshold": "score < {threshold}",
    "eval_leaks": "image_sha256 IN (SELECT digest FROM eval_files) "
                  "OR pixels_sha256 IN (SELECT digest FROM eval_pixels)",
}
EXAMPLES = 5


def _connect(params: Params, spill: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{params.contracts.memory_mb}MB'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")  # lets aggregates stream and spill
    return con


def _register_storage(con: duckdb.DuckDBPyConnection, urls: list[str]) -> None:
    """Object-store URLs are read through the same fsspec filesystems as every other reader (no DuckDB extension
    to download)."""
    import fsspec

    for protocol in sorted({u.split("://", 1)[0] for u in urls if storage.is_remote(u)}):
        con.register_filesystem(fsspec.filesystem(protocol))


def _kept_view(con: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    """`kept`: every kept text of every selection table, with its word counts; `filename` names its table."""
    files = "[" + ", ".join("'" + t.replace("'", "''") + "'" for t in tables) + "]"
    con.execute(f"""CREATE VIEW kept AS SELECT key, candidate, source, text, score, itm, image_sha256, pixels_sha256,
        filename,
        CASE WHEN trim(text) = '' THEN 0 ELSE len(string_split(trim(text), ' ')) END AS words,
        coalesce(list_max(list_transform(string_split(text, ' '), lambda w: length(w))), 0) AS longest_word
        FROM read_parquet({files}, filename = true)""")


def _examples(con, condition: str) -> list[str]:
    rows = con.execute(f"SELECT key, candidate FROM kept WHERE {condition} LIMIT {EXAMPLES}").fetchall()
    return [f"{k}_{suffix(c)}" if k is not None else "(no key)" for k, c in rows]


def _inputs_present(parts: list[dict]) -> tuple[bool, list[str]]:
    """Whether every input shard is where its manifest says, with the content tag an object store lists for it;
    one listing per folder, so 100k shards cost a few listing calls, not 100k reads."""
    missing, by_folder = [], defaultdict(list)
    for p in parts:
        folder, _, name = p["url"].rpartition("/")
        by_folder[folder].append((name, p))
    for folder, wanted in by_folder.items():
        listed = {Path(e["url"]).name: e for e in storage.listing(folder, "*")}
        for name, part in wanted:
            found = listed.get(name)
            if found is None or ("etag" in part and found.get("etag") not in (None, part["etag"])):
                missing.append(part["url"])
    return not missing, missing[:EXAMPLES]


def _image_sample(parts: list[dict], keys_by_part: dict[int, set[str]], params: Params) -> list[dict]:
    """Decode the sampled kept images: each chosen input shard read once."""
    rows = []
    for i, wanted in keys_by_part.items():
        part = parts[i]
        for key, members in read_web_shard(part["url"], Tally(), params.ingest.max_member_bytes, None):
            if key in wanted:
                image = next((members[e] for e in IMAGE_EXTS if e in members), None)
                rows.append(image_row(key, image, params.ingest))
    return rows


def selection_tables(dataset_dir: str, manifest: dict, eval_images: EvalImages, params: Params) -> dict:
    """The summary (every row, in aggregate), rows (a sample) and images (a sample) tables of a selection."""
    cfg = params.contracts
    selection = manifest["selection"]
    web_parts = [p for p in manifest["parts"] if p["kind"] == "web"]
    human_parts = [p for p in manifest["parts"] if p["kind"] == "human"]
    tables = [storage.join(dataset_dir, p["selection"]["name"]) for p in web_parts]
    threshold = selection.get("threshold")
    threshold_ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    vote = selection.get("rule", {}).get("filter_combine") == "vote"
    stats = selection.get("counts", {})
    # the files: selection tables and human shards by their sha256 (small); input shards by listing
    files_ok = all(storage.exists(t) and storage.matches(t, content_check(p["selection"]))
                   for t, p in zip(tables, web_parts))
    files_ok &= all(storage.exists(p["url"]) and storage.matches(p["url"], content_check(p)) for p in human_parts)
    inputs_ok, missing = _inputs_present(web_parts)
    summary: dict = {"checksums_ok": files_ok and inputs_ok, "files": len(tables) + len(manifest["parts"])}
    examples: dict[str, list[str]] = {"checksums_ok": missing}
    with tempfile.TemporaryDirectory(prefix="contract-spill-") as spill:
        con = _connect(params, spill)
        _register_storage(con, tables)
        eval_files, eval_pixels = eval_images.digests()
        con.execute("CREATE TABLE eval_files (digest VARCHAR)")
        con.execute("CREATE TABLE eval_pixels (digest VARCHAR)")
        con.executemany("INSERT INTO eval_files VALUES (?)", [(d,) for d in eval_files])
        con.executemany("INSERT INTO eval_pixels VALUES (?)", [(d,) for d in eval_pixels])
        if tables and files_ok:
            _kept_view(con, tables)
            by_source = dict(con.execute("SELECT source, count(*) FROM kept GROUP BY source").fetchall())
            per_file = dict(con.execute("SELECT filename, count(*) FROM kept GROUP BY filename").fetchall())
            bounds = {"min_words": cfg.min_words, "max_words": cfg.max_words, "max_word_chars": cfg.max_word_chars,
                      "threshold": threshold if threshold_ok and not vote else "-'inf'::DOUBLE"}
            for column, condition in CHECKS.items():
                condition = condition.format(**bounds)
                summary[column] = con.execute(f"SELECT count(*) FROM kept WHERE {condition}").fetchone()[0]
                if summary[column]:
                    examples[column] = _examples(con, condition)
            # a sample key is <input key>_<web|synN>: two input shards holding one key would collide
            summary["duplicate_keys"] = con.execute(
                "SELECT count(*) FROM (SELECT key, candidate FROM kept GROUP BY key, candidate HAVING count(*) > 1)"
            ).fetchone()[0]
            if summary["duplicate_keys"]:
                examples["duplicate_keys"] = [f"{k}_{suffix(c)}" for k, c in con.execute(
                    "SELECT key, candidate FROM kept GROUP BY key, candidate HAVING count(*) > 1 "
                    f"LIMIT {EXAMPLES}").fetchall()]
            rows = con.execute(f"SELECT key, candidate, source, text, words, longest_word, score, itm, image_sha256, "
                               f"pixels_sha256, filename FROM kept USING SAMPLE reservoir({cfg.row_sample} ROWS) "
                               f"REPEATABLE ({params.seed})").df()
        else:
            by_source, per_file, rows = {}, {}, pd.DataFrame()
            for column in (*CHECKS, "duplicate_keys"):
                summary[column] = 0 if not tables else None
        con.close()
    human = sum(p["samples"] for p in human_parts)
    web, synthetic = by_source.get("web", 0), by_source.get("synthetic", 0)
    total = human + web + synthetic
    declared = manifest.get("by_source") or {}
    web_total, syn_total = stats.get("web_total", 0), stats.get("synthetic_total", 0)
    summary.update(
        rows_match_manifest=total == manifest["samples"],
        shard_counts_match=files_ok and all(per_file.get(t, 0) == p["samples"] == p["selection"]["rows"]
                                            for t, p in zip(tables, web_parts)),
        by_source_matches={k: v for k, v in declared.items() if v} == {
            k: v for k, v in {"human": human, "web": web, "synthetic": synthetic}.items() if v},
        counts_match_rows=all(stats.get(f"{s}_kept", 0) == n for s, n in
                              (("human", human), ("web", web), ("synthetic", synthetic))),
        # the selection's own counts agree: each source's total is its kept plus its removed texts
        counts_consistent=all(stats.get(f"{s}_total", 0) == stats.get(f"{s}_kept", 0) + stats.get(f"{s}_removed", 0)
                              for s in ("web", "synthetic")),
        threshold=threshold if threshold_ok else None,
        # a threshold of 0, NaN or none keeps everything: not a selection
        threshold_valid=threshold_ok and threshold > 0,
        web_removed_share=stats.get("web_removed", 0) / web_total if web_total else None,
        noise_ratio=stats.get("synthetic_removed", 0) / syn_total if syn_total else None,
        synthetic_share=synthetic / max(1, total))
    rows_table = _rows_table(rows, eval_images)
    images = _sampled_images(web_parts, tables, rows, params)
    return {"rows": rows_table, "summary": pd.DataFrame([summary]),
            "images": pd.DataFrame(images, columns=IMAGE_COLUMNS),
            "manifest": manifest, "examples": examples, "total_rows": total}


def _rows_table(rows: pd.DataFrame, eval_images: EvalImages) -> pd.DataFrame:
    """The sampled rows, as the row-by-row suite reads them."""
    if rows.empty:
        return pd.DataFrame(columns=["key", "key_safe", "caption", "utf8", "words", "longest_word", "source", "score",
                                     "itm", "score_missing", "has_image", "in_eval"])
    files, pixels = eval_images.digests()
    return pd.DataFrame({
        "key": [f"{k}_{suffix(c)}" for k, c in zip(rows["key"], rows["candidate"])],
        "key_safe": [safe_key(k) for k in rows["key"]], "caption": rows["text"], "utf8": True,
        "words": rows["words"], "longest_word": rows["longest_word"], "source": rows["source"],
        "score": rows["score"], "itm": rows["itm"],
        "score_missing": [not (isinstance(s, float) and math.isfinite(s)) for s in rows["score"]],
        "has_image": True,
        "in_eval": [a in files or b in pixels for a, b in zip(rows["image_sha256"], rows["pixels_sha256"])]})


def _sampled_images(web_parts: list[dict], tables: list[str], rows: pd.DataFrame, params: Params) -> list[dict]:
    """Decode up to `image_sample` kept images from at most `sample_shards` input shards (chosen by the seed)."""
    cfg = params.contracts
    if rows.empty or not cfg.image_sample:
        return []
    by_table = {t: i for i, t in enumerate(tables)}
    chosen = sorted({by_table[f] for f in rows["filename"]})
    chosen = sorted(random.Random(params.seed).sample(chosen, min(cfg.sample_shards, len(chosen))))
    per_part = max(1, cfg.image_sample // len(chosen))
    keys_by_part = {i: set(rows[rows["filename"] == tables[i]]["key"].head(per_part)) for i in chosen}
    return _image_sample(web_parts, keys_by_part, params)
