"""Run a dataset's contract: build its tables, validate each against its suite, write the results
JSON and the Data Docs HTML, and say in a few lines what failed and on which samples."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network here; set before the import

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from blip.config import Params  # noqa: E402
from blip.data.selected import SELECTION_FORMAT  # noqa: E402
from blip.data.shards import FORMAT, read_manifest  # noqa: E402
from blip.data.web import WEB_FORMAT  # noqa: E402
from data_contracts.selection import selection_tables  # noqa: E402
from data_contracts.suites import images_suite, rows_suite, summary_suite  # noqa: E402
from data_contracts.tables import EvalImages, build_tables  # noqa: E402
from data_contracts.web import web_tables  # noqa: E402

KINDS = ("human", "web", "bootstrapped")
FORMAT_OF = {"human": FORMAT, "web": WEB_FORMAT, "bootstrapped": SELECTION_FORMAT}
KIND_OF = {v: k for k, v in FORMAT_OF.items()}


def _context(docs_dir: Path | None):
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site("contracts", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    return context


def _failures(result, df: pd.DataFrame, examples_by_column: dict) -> list[dict]:
    """Each failed expectation with its bounds, its unexpected rows (by key) and, for a one-row table (the
    dataset's summary), the value itself with the example keys its aggregate found: great-expectations'
    per-row report names only a row index there."""
    has_key = "key" in df.columns
    out = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        res = r.result or {}
        column = cfg.kwargs.get("column")
        examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
        if has_key:
            examples = [e.get("key", e) if isinstance(e, dict) else e for e in examples]
        observed = res.get("observed_value")
        if observed is None and len(df) == 1 and column in df.columns:
            value = df[column].iloc[0]
            observed = value.item() if hasattr(value, "item") else value
            examples = list(examples_by_column.get(column, []))
        value_set = cfg.kwargs.get("value_set")
        out.append({"expectation": cfg.type, "column": column, "check": (cfg.meta or {}).get("check"),
                    "unexpected_count": res.get("unexpected_count"), "rows": len(df), "observed": observed,
                    "min_value": cfg.kwargs.get("min_value"), "max_value": cfg.kwargs.get("max_value"),
                    "value_set": list(value_set) if value_set is not None else None,
                    "examples": [str(e) for e in examples[:5]]})
    return out


def dataset_tables(kind: str, dataset: str, eval_images: EvalImages, params: Params) -> dict:
    """The tables a dataset's contract validates, by what the dataset is: our own shards (every row), a
    registered web set (manifest, listings, a sample) or a selection (its tables, in aggregate)."""
    manifest = read_manifest(dataset, (FORMAT, SELECTION_FORMAT, WEB_FORMAT))
    if manifest["format"] != FORMAT_OF[kind]:
        raise ValueError(f"{dataset} is a {manifest['format']} dataset; the {kind} contract checks {FORMAT_OF[kind]} "
                         f"ones ({KIND_OF[manifest['format']]} is its contract; a materialized selection is checked "
                         "with `blip verify`)")
    if manifest["format"] == WEB_FORMAT:
        return web_tables(dataset, manifest, eval_images, params)
    if manifest["format"] == SELECTION_FORMAT:
        return selection_tables(dataset, manifest, eval_images, params)
    return build_tables(dataset, eval_images, params.contracts.image_sample, params.seed)


def validate(kind: str, dataset: str, params: Params, eval_dirs: list[str], docs_dir: Path | None = None) -> dict:
    """Validate one dataset with its contract; returns the report (success, failures, statistics)."""
    if kind not in KINDS:
        raise ValueError(f"contract kind must be one of {KINDS}, got {kind!r}")
    start = time.time()
    cfg = params.contracts
    tables = dataset_tables(kind, dataset, EvalImages(eval_dirs), params)
    selection = tables["manifest"].get("selection", {})
    # every kept text's score reaches the threshold, unless the filters voted (then their own scores did); a
    # threshold that is not a number is reported by the summary suite (threshold_valid), not compared with
    threshold = tables["summary"].get("threshold", pd.Series([None])).iloc[0]
    if threshold is None or pd.isna(threshold) or selection.get("rule", {}).get("filter_combine") == "vote":
        threshold = None
    skip = params.ingest.max_skip_fraction
    suites = {"rows": rows_suite(kind, cfg, threshold), "summary": summary_suite(kind, cfg, skip),
              "images": images_suite(kind, params.ingest.min_side, params.ingest.max_side, skip)}
    context = _context(docs_dir)
    source = context.data_sources.add_pandas(f"{kind}_dataset")
    report: dict = {"kind": kind, "dataset": dataset, "tables": {}, "failures": []}
    definitions = []
    for name, suite in suites.items():
        df = tables[name]
        has_key = "key" in df.columns
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        vd = context.validation_definitions.add(gx.ValidationDefinition(
            name=f"{kind}_{name}", data=batch, suite=context.suites.add(suite)))
        fmt = {"result_format": "SUMMARY", "partial_unexpected_count": 5,
               **({"unexpected_index_column_names": ["key"]} if has_key else {})}
        result = vd.run(batch_parameters={"dataframe": df}, result_format=fmt)
        definitions.append((vd, df, fmt))
        report["tables"][name] = {"rows": len(df), "success": bool(result.success),
                                  "evaluated": result.statistics["evaluated_expectations"],
                                  "failed": result.statistics["unsuccessful_expectations"]}
        report["failures"] += [{"table": name, **f} for f in _failures(result, df, tables.get("examples", {}))]
    if docs_dir is not None:
        for vd, df, fmt in definitions:  # Data Docs are rendered from checkpoint runs
            checkpoint = context.checkpoints.add(gx.Checkpoint(
                name=f"{vd.name}_docs", validation_definitions=[vd], result_format=fmt,
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["contracts"])]))
            checkpoint.run(batch_parameters={"dataframe": df})
    rows = tables.get("total_rows", len(tables["rows"]))  # every row checked, though only a sample is shown
    seconds = time.time() - start
    report.update(success=not report["failures"], rows=rows, seconds=round(seconds, 2),
                  rows_per_s=round(rows / max(seconds, 1e-9), 1), summary=_plain(tables["summary"]))
    return report


def _plain(df) -> dict:
    row = df.iloc[0].to_dict() if len(df) else {}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
