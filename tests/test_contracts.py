"""Data contracts: each suite passes good data and names the expectation that each break violates."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from blip.data.finished import iter_samples
from blip.data.images import pixel_digest
from blip.data.parquet import write_table
from blip.data.selected import SELECTION_FORMAT, TABLE_PATTERN
from blip.data.shards import atomic_write_json, read_manifest
from blip.data.web import web_shards

SCHEMA = pa.schema([("key", pa.string()), ("candidate", pa.int16()), ("source", pa.string()), ("text", pa.string()),
                    ("score", pa.float32()), ("itm", pa.float32()), ("itc", pa.float32()), ("captioner", pa.string()),
                    ("filters", pa.string()), ("round", pa.int16()), ("image_sha256", pa.string()),
                    ("pixels_sha256", pa.string())])

THRESHOLD = 0.5


def _bootstrapped(out: Path, prepared: Path, small, *, web_itm: float | None = 0.9, caption: str | None = None,
                  duplicate_key: bool = False, leak_test_image=None, keep_all: bool = False,
                  key: str | None = None, threshold: object = THRESHOLD) -> Path:
    """A bootstrapped dataset as `blip select` writes it over the small world: selection tables over the registered
    web shards (3 in 4 web texts and 4 in 5 synthetic captions kept) and the human shards, taken whole; `web_itm`,
    `caption` and `key` break the second web row, the others what they say."""
    out.mkdir()
    shards = web_shards(prepared / "web")
    samples = [(i, s) for i, shard in enumerate(shards) for s in _shard_samples(shard.url, small)]
    kept = {"human": 0, "web": 0, "synthetic": 0}
    tables: dict[int, list[dict]] = {i: [] for i in range(len(shards))}
    for n, (part, s) in enumerate(samples):
        digest = hashlib.sha256(s.image).hexdigest()
        pixels = pixel_digest(Image.open(io.BytesIO(s.image)).convert("RGB"))
        row = dict(key=s.key, captioner="", filters="filter@x", round=1, image_sha256=digest, pixels_sha256=pixels,
                   itc=0.3)
        if keep_all or n % 4:
            itm = web_itm if n == 1 else 0.9
            tables[part].append({**row, "key": key if (key and n == 1) else s.key, "candidate": 0, "source": "web",
                                 "text": caption if (caption and n == 1) else s.text, "score": itm, "itm": itm})
            kept["web"] += 1
        if keep_all or n % 5:
            duplicate = duplicate_key and n == 2
            tables[part].append({**row, "key": samples[1][1].key if duplicate else s.key,
                                 "candidate": 0 if duplicate else 1, "source": "synthetic",
                                 "text": "a red circle on a white background", "score": 0.8, "itm": 0.8,
                                 "captioner": "captioner@x"})
            kept["synthetic"] += 1
    if leak_test_image is not None:  # a kept text of a web image that is a test split's image
        test = next(iter_samples(prepared / "human/test"))
        leaked = leak_test_image(test["jpg"])
        tables[0].append({"key": "leaked_test_image", "candidate": 1, "source": "synthetic", "text": test["txt"],
                          "score": 0.9, "itm": 0.9, "itc": 0.3, "captioner": "captioner@x", "filters": "filter@x",
                          "round": 1, "image_sha256": hashlib.sha256(leaked).hexdigest(),
                          "pixels_sha256": pixel_digest(Image.open(io.BytesIO(leaked)).convert("RGB"))})
        kept["synthetic"] += 1
    parts = []
    for i, shard in enumerate(shards):
        if tables[i]:
            entry = write_table(out / TABLE_PATTERN.format(i), pa.Table.from_pylist(tables[i], schema=SCHEMA))
            parts.append({"kind": "web", "url": shard.url, "samples": entry["rows"], **shard.check, "selection": entry})
    for e in read_manifest(prepared / "human/train")["shards"]:
        parts.append({"kind": "human", "url": str(prepared / "human/train" / e["name"]), "sha256": e["sha256"],
                      "samples": e["samples"]})
        kept["human"] += e["samples"]
    n = len(samples)
    counts = {"human_total": kept["human"], "human_kept": kept["human"], "web_total": n, "web_kept": kept["web"],
              "web_removed": n - kept["web"], "synthetic_total": n + (leak_test_image is not None),
              "synthetic_kept": kept["synthetic"],
              "synthetic_removed": n + (leak_test_image is not None) - kept["synthetic"]}
    atomic_write_json(out / "manifest.json", {
        "format": SELECTION_FORMAT, "samples": sum(p["samples"] for p in parts), "parts": parts, "by_source": kept,
        "selection": {"counts": counts, "threshold": threshold, "round": 1, "rule": {"filter_combine": "mean"}}})
    return out


def _shard_samples(url: str, small) -> list:
    from blip.data.ingest import Tally
    from blip.data.web import parse_web_sample, read_web_shard

    return [parse_web_sample(k, m, small.ingest) for k, m in read_web_shard(url, Tally(), 1 << 26)]


def _as_png(jpg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpg)).save(out, format="PNG")
    return out.getvalue()


def _failed(report: dict) -> set[tuple[str, str]]:
    return {(f["expectation"], f["column"]) for r in report["reports"] for f in r["failures"]}


def run_checked(kind: str, dataset: Path, prepared: Path, tmp_path: Path, docs: bool = False) -> tuple[int, dict]:
    from data_contracts.__main__ import main

    results = tmp_path / f"{dataset.name}.json"
    args = [kind, str(dataset), "--eval", str(prepared / "human/val"), str(prepared / "human/test"),
            "--results", str(results)] + (["--docs", str(tmp_path / "docs")] if docs else [])
    code = main(args)
    return code, json.loads(results.read_text())


def test_good_datasets_pass_and_data_docs_are_written(tmp_path, prepared, small):
    for kind, dataset in (("human", prepared / "human/train"), ("web", prepared / "web")):
        code, report = run_checked(kind, dataset, prepared, tmp_path)
        assert code == 0 and report["success"], report
    web = report["reports"][0]
    assert web["summary"]["sampled_shards"] == 4 and web["summary"]["sample_unusable_share"] == 0.0
    good = _bootstrapped(tmp_path / "good", prepared, small)
    code, report = run_checked("bootstrapped", good, prepared, tmp_path, docs=True)
    assert code == 0 and report["success"], _failed(report)
    checked = report["reports"][0]
    assert checked["tables"]["rows"]["evaluated"] >= 11 and checked["tables"]["summary"]["evaluated"] >= 20
    assert checked["rows"] == read_manifest(good, (SELECTION_FORMAT,))["samples"]  # every row, in aggregate
    assert checked["tables"]["images"]["rows"] > 0  # a sample of the kept images, decoded from their input shards
    assert (tmp_path / "docs" / "good" / "index.html").is_file()


def test_a_contract_of_the_wrong_kind_is_refused_with_a_message(tmp_path, prepared, capsys):
    from data_contracts.__main__ import main

    code = main(["bootstrapped", str(prepared / "human/train"), "--eval", str(prepared / "human/val"),
                 "--results", str(tmp_path / "r.json")])
    assert code == 2 and "is a blip-shards/1 dataset" in capsys.readouterr().err


@pytest.mark.parametrize("name, build, expected", [
    ("keeps_everything", dict(keep_all=True),
     {("expect_column_values_to_be_between", "web_removed_share"),
      ("expect_column_values_to_be_between", "noise_ratio")}),
    ("leaked", dict(leak_test_image=lambda jpg: jpg), {("expect_column_values_to_be_between", "eval_leaks")}),
    # the same picture in another file: a JPEG comment added, or the decoded pixels saved as PNG
    ("leaked_with_comment", dict(leak_test_image=lambda jpg: jpg[:2] + b"\xff\xfe\x00\x07copy" + jpg[2:]),
     {("expect_column_values_to_be_between", "eval_leaks")}),
    ("leaked_as_png", dict(leak_test_image=_as_png), {("expect_column_values_to_be_between", "eval_leaks")}),
    ("long_caption", dict(caption=" ".join(["word"] * 500)),
     {("expect_column_values_to_be_between", "words_out_of_range")}),
    ("duplicate_key", dict(duplicate_key=True), {("expect_column_values_to_be_between", "duplicate_keys")}),
    ("under_threshold", dict(web_itm=0.3), {("expect_column_values_to_be_between", "below_threshold")}),
    ("null_itm", dict(web_itm=None), {("expect_column_values_to_be_between", "score_missing"),
                                      ("expect_column_values_to_be_between", "itm_out_of_range")}),
    ("nan_itm", dict(web_itm=float("nan")), {("expect_column_values_to_be_between", "score_missing")}),
    ("unsafe_key", dict(key="../../escape"), {("expect_column_values_to_be_between", "unsafe_keys")}),
    ("one_enormous_word", dict(caption="x" * 3000), {("expect_column_values_to_be_between", "long_words")}),
    ("threshold_zero", dict(threshold=0), {("expect_column_values_to_be_in_set", "threshold_valid")}),
    ("threshold_nan", dict(threshold=float("nan")), {("expect_column_values_to_be_in_set", "threshold_valid")}),
    ("threshold_null", dict(threshold=None), {("expect_column_values_to_be_in_set", "threshold_valid")}),
])
def test_each_break_fails_the_right_expectation(tmp_path, prepared, small, name, build, expected):
    code, report = run_checked("bootstrapped", _bootstrapped(tmp_path / name, prepared, small, **build), prepared, tmp_path)
    assert code == 1 and not report["success"]
    assert expected <= _failed(report), _failed(report)
    if name in ("duplicate_key", "under_threshold", "unsafe_key") or name.startswith("leaked"):
        # the offending sample is named, though no row-by-row table held it: the aggregate's own examples
        examples = [e for r in report["reports"] for f in r["failures"] for e in f["examples"]]
        assert any("_web" in e or "leaked" in e or "_syn" in e for e in examples), examples


def test_a_failed_share_reads_with_its_value_bounds_param_and_cause(tmp_path, prepared, small, capsys):
    from data_contracts.messages import markdown

    dataset = _bootstrapped(tmp_path / "keeps_all", prepared, small, keep_all=True)
    code, report = run_checked("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1
    message = capsys.readouterr().err
    # the value itself (not a row index), its bounds, the param that sets them and what probably went wrong
    line = next(x for x in message.splitlines() if "web_removed_share:" in x)
    assert "web_removed_share: 0, allowed [0.02, 0.95] (set by contracts.web_removed_share)" in line, message
    assert "likely cause: the filter kept nearly every web text" in message
    table = markdown(report)
    assert "| summary | web_removed_share | 0 | allowed [0.02, 0.95] | contracts.web_removed_share |" in table


def _edited(dataset: Path, edit) -> Path:
    manifest = json.loads((dataset / "manifest.json").read_text())
    edit(manifest)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    return dataset


def test_manifest_count_off_by_one_fails(tmp_path, prepared, small):
    dataset = _edited(_bootstrapped(tmp_path / "off_by_one", prepared, small),
                      lambda m: m.update(samples=m["samples"] + 1))
    code, report = run_checked("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1 and ("expect_column_values_to_be_in_set", "rows_match_manifest") in _failed(report)


@pytest.mark.parametrize("edit, column", [
    (lambda m: m["parts"][0].update(samples=m["parts"][0]["samples"] + 1)
     or m["parts"][1].update(samples=m["parts"][1]["samples"] - 1), "shard_counts_match"),
    (lambda m: m["by_source"].update(web=m["by_source"]["web"] + 1, synthetic=m["by_source"]["synthetic"] - 1),
     "by_source_matches"),
    # a total that is not its kept and removed texts: the shares would be computed from the wrong total
    (lambda m: m["selection"]["counts"].update(web_total=m["selection"]["counts"]["web_total"] + 50),
     "counts_consistent"),
])
def test_counts_wrong_per_shard_or_source_while_the_total_is_right_fail(tmp_path, prepared, small, edit, column):
    dataset = _edited(_bootstrapped(tmp_path / column, prepared, small), edit)
    code, report = run_checked("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1 and ("expect_column_values_to_be_in_set", column) in _failed(report)
    assert ("expect_column_values_to_be_in_set", "rows_match_manifest") not in _failed(report)


def test_a_changed_input_shard_or_selection_table_fails_the_checksums(tmp_path, prepared, small):
    dataset = _bootstrapped(tmp_path / "changed", prepared, small)
    table = next(dataset.glob("selection-*.parquet"))
    table.write_bytes(table.read_bytes() + b"x")
    code, report = run_checked("bootstrapped", dataset, prepared, tmp_path)
    assert code == 1 and ("expect_column_values_to_be_in_set", "checksums_ok") in _failed(report)


def test_a_missing_web_shard_fails_the_web_contract_naming_it(tmp_path, prepared, small):
    import shutil

    shutil.copytree(prepared, tmp_path / "data")
    (tmp_path / "data/world/web/00001.tar").unlink()
    results = tmp_path / "web.json"
    from data_contracts.__main__ import main

    assert main(["web", str(tmp_path / "data/web"), "--eval", str(prepared / "human/val"),
                 "--results", str(results)]) == 1
    failures = json.loads(results.read_text())["reports"][0]["failures"]
    checksums = next(f for f in failures if f["column"] == "checksums_ok")
    assert any("00001.tar: missing" in e for e in checksums["examples"])


def test_a_passing_contract_marks_which_data_passed_and_a_failing_one_leaves_no_mark(tmp_path, prepared):
    import hashlib
    import shutil

    from data_contracts.__main__ import main

    shutil.copytree(prepared, tmp_path / "data")
    web, marker = tmp_path / "data/web", tmp_path / "web.passed"
    args = ["web", str(web), "--eval", str(prepared / "human/val"), "--results", str(tmp_path / "web.json"),
            "--passed", str(marker)]
    assert main(args) == 0
    # the data and its manifest's hash, nothing else: the training stages depend on it (dvc.yaml), so the same data
    # passing again (under other bounds) leaves the same bytes and re-runs nothing
    digest = hashlib.sha256((web / "manifest.json").read_bytes()).hexdigest()
    assert marker.read_text() == f"web {web} {digest}\n"
    assert main(args) == 0 and marker.read_text() == f"web {web} {digest}\n"
    (tmp_path / "data/world/web/00001.tar").unlink()
    assert main(args) == 1 and not marker.exists()


def test_a_filter_that_removes_everything_fails(tmp_path, prepared):
    parts, human = [], 0
    for e in read_manifest(prepared / "human/train")["shards"]:
        parts.append({"kind": "human", "url": str(prepared / "human/train" / e["name"]), "sha256": e["sha256"],
                      "samples": e["samples"]})
        human += e["samples"]
    counts = {"human_total": human, "human_kept": human, "web_total": 40, "web_removed": 40,
              "synthetic_total": 40, "synthetic_removed": 40}
    (tmp_path / "empty").mkdir()
    atomic_write_json(tmp_path / "empty/manifest.json", {
        "format": SELECTION_FORMAT, "samples": human, "parts": parts, "by_source": {"human": human},
        "selection": {"counts": counts, "threshold": THRESHOLD, "round": 1, "rule": {}}})
    code, report = run_checked("bootstrapped", tmp_path / "empty", prepared, tmp_path)
    assert code == 1
    assert {("expect_column_values_to_be_between", "synthetic_share"),
            ("expect_column_values_to_be_between", "web_removed_share"),
            ("expect_column_values_to_be_between", "noise_ratio")} <= _failed(report)


def test_a_web_set_of_mostly_unusable_samples_fails_its_contract_with_the_share_and_the_param(tmp_path, prepared,
                                                                                              capsys):
    from blip.data.web import register_web
    from data_contracts.__main__ import main
    from tests.support import jpeg, make_tar

    members = [("000000000.jpg", jpeg()), ("000000000.txt", b"fine")]
    for i in range(1, 5):
        members += [(f"{i:09d}.jpg", b"garbage"), (f"{i:09d}.txt", b"")]  # no caption left after clean-up
    make_tar(tmp_path / "00000.tar", members)
    register_web(str(tmp_path / "00000.tar"), tmp_path / "web")
    code = main(["web", str(tmp_path / "web"), "--eval", str(prepared / "human/val"), "--results",
                 str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1 and "sample_unusable_share: 0.8, allowed [0, 0.2] (set by ingest.max_skip_fraction)" in err, err
