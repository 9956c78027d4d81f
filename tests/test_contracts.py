"""Data contracts: each suite passes good data and names the expectation that each break violates."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from blip.data.shards import DatasetWriter, iter_samples

THRESHOLD = 0.5


def _bootstrapped(out: Path, prepared: Path, *, web_itm: float | None = 0.9, caption: str | None = None,
                  duplicate_key: bool = False, leak_test_image: bytes | None = None, keep_all: bool = False,
                  key: str | None = None, threshold: object = THRESHOLD) -> Path:
    """A bootstrapped dataset as `blip materialize` writes it, over the small world: human pairs, kept web
    and synthetic texts."""
    human = list(iter_samples(prepared / "human/train"))
    web = list(iter_samples(prepared / "web"))[:40]
    writer = DatasetWriter(out, shard_size=25)
    for s in human:
        writer.write(s["__key__"], s["jpg"], s["txt"], {**s["json"], "source": "human"})
    kept = {"human": len(human), "web": 0, "synthetic": 0}
    for i, s in enumerate(web):
        if keep_all or i % 4:  # 3 in 4 web texts kept
            itm = web_itm if i == 1 else 0.9
            name = key if (key and i == 1) else f"{s['__key__']}_web"
            writer.write(name, s["jpg"], caption if (caption and i == 1) else s["txt"],
                         {"source": "web", "score": itm, "itm": itm, "itc": 0.3, "round": 1})
            kept["web"] += 1
        if keep_all or i % 5:  # 4 in 5 synthetic captions kept
            key = web[1]["__key__"] + "_web" if (duplicate_key and i == 2) else f"{s['__key__']}_syn0"
            writer.write(key, s["jpg"], "a red circle on a white background",
                         {"source": "synthetic", "score": 0.8, "itm": 0.8, "itc": 0.3, "round": 1})
            kept["synthetic"] += 1
    if leak_test_image:
        test = next(iter_samples(prepared / "human/test"))
        writer.write("leaked_test_image", leak_test_image(test["jpg"]), test["txt"],
                     {"source": "synthetic", "score": 0.9, "itm": 0.9})
        kept["synthetic"] += 1
    n = len(web)
    counts = {"human_total": len(human), "human_kept": kept["human"], "web_total": n, "web_kept": kept["web"],
              "web_removed": n - kept["web"], "synthetic_total": n, "synthetic_kept": kept["synthetic"],
              "synthetic_removed": n - kept["synthetic"] if not leak_test_image else n - kept["synthetic"] + 1}
    writer.finish({"by_source": kept, "selection": {"counts": counts, "threshold": threshold}})
    return out


def _as_png(jpg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpg)).save(out, format="PNG")
    return out.getvalue()


def _failed(report: dict) -> set[tuple[str, str]]:
    return {(f["expectation"], f["column"]) for r in report["reports"] for f in r["failures"]}


def _run(kind: str, dataset: Path, prepared: Path, tmp_path: Path, docs: bool = False) -> tuple[int, dict]:
    from data_contracts.__main__ import main

    results = tmp_path / f"{dataset.name}.json"
    args = [kind, str(dataset), "--eval", str(prepared / "human/val"), str(prepared / "human/test"),
            "--results", str(results)] + (["--docs", str(tmp_path / "docs")] if docs else [])
    code = main(args)
    return code, json.loads(results.read_text())


def test_good_datasets_pass_and_data_docs_are_written(tmp_path, prepared):
    for kind, dataset in (("human", prepared / "human/train"), ("web", prepared / "web")):
        code, report = _run(kind, dataset, prepared, tmp_path)
        assert code == 0 and report["success"], report
    code, report = _run("bootstrapped", _bootstrapped(tmp_path / "good", prepared), prepared, tmp_path, docs=True)
    assert code == 0 and report["success"], _failed(report)
    assert report["reports"][0]["tables"]["rows"]["evaluated"] >= 11
    assert (tmp_path / "docs" / "good" / "index.html").is_file()


@pytest.mark.parametrize("name, build, expected", [
    ("keeps_everything", dict(keep_all=True),
     {("expect_column_values_to_be_between", "web_removed_share"),
      ("expect_column_values_to_be_between", "noise_ratio")}),
    ("leaked", dict(leak_test_image=lambda jpg: jpg), {("expect_column_values_to_be_in_set", "in_eval")}),
    # the same picture in another file: a JPEG comment added, or the decoded pixels saved as PNG
    ("leaked_with_comment", dict(leak_test_image=lambda jpg: jpg[:2] + b"\xff\xfe\x00\x07copy" + jpg[2:]),
     {("expect_column_values_to_be_in_set", "in_eval")}),
    ("leaked_as_png", dict(leak_test_image=_as_png), {("expect_column_values_to_be_in_set", "in_eval")}),
    ("long_caption", dict(caption=" ".join(["word"] * 500)), {("expect_column_values_to_be_between", "words")}),
    ("duplicate_key", dict(duplicate_key=True), {("expect_column_values_to_be_unique", "key")}),
    ("under_threshold", dict(web_itm=0.3), {("expect_column_values_to_be_between", "score")}),
    ("null_itm", dict(web_itm=None), {("expect_column_values_to_be_in_set", "score_missing")}),
    ("nan_itm", dict(web_itm=float("nan")), {("expect_column_values_to_be_in_set", "score_missing")}),
    ("unsafe_key", dict(key="../../escape"), {("expect_column_values_to_be_in_set", "key_safe")}),
    ("one_enormous_word", dict(caption="x" * 3000), {("expect_column_values_to_be_between", "longest_word")}),
    ("threshold_zero", dict(threshold=0), {("expect_column_values_to_be_in_set", "threshold_valid")}),
    ("threshold_nan", dict(threshold=float("nan")), {("expect_column_values_to_be_in_set", "threshold_valid")}),
    ("threshold_null", dict(threshold=None), {("expect_column_values_to_be_in_set", "threshold_valid")}),
])
def test_each_break_fails_the_right_expectation(tmp_path, prepared, name, build, expected):
    code, report = _run("bootstrapped", _bootstrapped(tmp_path / name, prepared, **build), prepared, tmp_path)
    assert code == 1 and not report["success"]
    assert expected <= _failed(report), _failed(report)
    if name in ("duplicate_key", "under_threshold") or name.startswith("leaked"):  # the offending sample is named
        examples = [e for r in report["reports"] for f in r["failures"] for e in f["examples"]]
        assert any("_web" in e or "leaked" in e for e in examples), examples


def test_a_failed_share_reads_with_its_value_bounds_param_and_cause(tmp_path, prepared, capsys):
    from data_contracts.messages import markdown

    code, report = _run("bootstrapped", _bootstrapped(tmp_path / "keeps_all", prepared, keep_all=True), prepared, tmp_path)
    assert code == 1
    message = capsys.readouterr().err
    # the value itself (not a row index), its bounds, the param that sets them and what probably went wrong
    line = next(x for x in message.splitlines() if "web_removed_share:" in x)
    assert "web_removed_share: 0, allowed [0.02, 0.95] (set by contracts.web_removed_share)" in line, message
    assert "likely cause: the filter kept nearly every web text" in message
    table = markdown(report)
    assert "| summary | web_removed_share | 0 | allowed [0.02, 0.95] | contracts.web_removed_share |" in table


def test_manifest_count_off_by_one_fails(tmp_path, prepared):
    dataset = _bootstrapped(tmp_path / "off_by_one", prepared)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["samples"] += 1
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    code, report = _run("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1 and ("expect_column_values_to_be_in_set", "rows_match_manifest") in _failed(report)


@pytest.mark.parametrize("edit, column", [
    (lambda m: m["shards"][0].update(samples=m["shards"][0]["samples"] + 1)
     or m["shards"][1].update(samples=m["shards"][1]["samples"] - 1), "shard_counts_match"),
    (lambda m: m["by_source"].update(web=m["by_source"]["web"] + 1, synthetic=m["by_source"]["synthetic"] - 1),
     "by_source_matches"),
])
def test_counts_wrong_per_shard_or_source_while_the_total_is_right_fail(tmp_path, prepared, edit, column):
    dataset = _bootstrapped(tmp_path / column, prepared)
    manifest = json.loads((dataset / "manifest.json").read_text())
    edit(manifest)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    code, report = _run("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1 and ("expect_column_values_to_be_in_set", column) in _failed(report)
    assert ("expect_column_values_to_be_in_set", "rows_match_manifest") not in _failed(report)


def test_a_filter_that_removes_everything_fails(tmp_path, prepared):
    human = list(iter_samples(prepared / "human/train"))
    writer = DatasetWriter(tmp_path / "empty", shard_size=50)
    for s in human:
        writer.write(s["__key__"], s["jpg"], s["txt"], {**s["json"], "source": "human"})
    counts = {"human_total": len(human), "human_kept": len(human), "web_total": 40, "web_removed": 40,
              "synthetic_total": 40, "synthetic_removed": 40}
    writer.finish({"by_source": {"human": len(human)}, "selection": {"counts": counts, "threshold": THRESHOLD}})
    code, report = _run("bootstrapped", tmp_path / "empty", prepared, tmp_path)
    assert code == 1
    assert {("expect_column_values_to_be_between", "synthetic_share"),
            ("expect_column_values_to_be_between", "web_removed_share"),
            ("expect_column_values_to_be_between", "noise_ratio")} <= _failed(report)
