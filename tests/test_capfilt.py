"""CapFilt: caption web images and score every text into tables, as Ray tasks on an actor pool, resumably;
then select the bootstrapped dataset from the tables."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from blip.capfilt.formats import SCORES_FORMAT
from blip.capfilt.report import statistics
from blip.data.finished import iter_samples
from blip.data.selected import SELECTION_FORMAT
from blip.data.shards import read_manifest, write_shard
from blip.data.web import web_samples, web_shards
from tests.support import ROOT, raw_params


def _params_file(tmp_path: Path, select: dict | None = None, **capfilt) -> Path:
    raw = copy.deepcopy(raw_params())
    # one CPU thread per worker, as in every run compared byte for byte below: on some CPUs (measured on an
    # AMD EPYC) the matrix kernels split reductions by thread count, so a score's last float digit depends on it
    raw["capfilt"].update({"batch_size": 8, "max_length": 12, "workers": 1, "cpus_per_worker": 1, **capfilt})
    raw["select"].update({"examples": 6, "calibrate": False, **(select or {})})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """A random tiny captioner and filter saved in the project's model format."""
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    root = tmp_path_factory.mktemp("capfilt_models")
    save_pretrained(tiny("captioner"), root / "captioner", build_tokenizer())
    save_pretrained(tiny("filter"), root / "filter", build_tokenizer())
    return str(root / "captioner"), str(root / "filter")


def _args(models, prepared: Path, out: Path, params: Path, *extra: str) -> list[str]:
    """`blip capfilt` over the small world's web set, its tables in a folder of this test's own (a shared one
    would hold the reference's finished shards, and nothing would be scored)."""
    return ["--params", str(params), "capfilt", "--captioner", models[0], "--filter", models[1],
            "--input", str(prepared / "web"), "--calibrate-on", str(prepared / "human/val"), "--output", str(out),
            "--tables", str(out.parent / f"{out.name}_tables"), "--metrics", str(out.parent / f"{out.name}.json"),
            *extra]


def _select(prepared: Path, scores: Path, out: Path, params: Path, *extra: str) -> None:
    from blip.cli import main

    assert main(["--params", str(params), "select", "--scores", str(scores), "--human", str(prepared / "human/train"),
                 "--output", str(out), "--metrics", str(out.parent / f"{out.name}.json"),
                 "--report", str(out.parent / f"{out.name}_report"), *extra]) == 0


def _tables(out: Path) -> dict[str, str]:
    """The job's tables, by name, as their sha256."""
    return {Path(t["url"]).name: t["sha256"] for t in read_manifest(out, (SCORES_FORMAT,))["tables"]}


def _table_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def _rows(out: Path) -> list[dict]:
    return [r for t in read_manifest(out, (SCORES_FORMAT,))["tables"] for r in pq.read_table(t["url"]).to_pylist()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, models, prepared) -> Path:
    """One Ray worker, start to finish: the reference score tables."""
    from blip.cli import main

    tmp = tmp_path_factory.mktemp("capfilt_ref")
    out = tmp / "scores"
    assert main(_args(models, prepared, out, _params_file(tmp))) == 0
    return out


@pytest.fixture(scope="module")
def selected(tmp_path_factory, prepared, uninterrupted) -> Path:
    """The bootstrapped dataset selected from the reference tables at the fixed threshold 0.5."""
    tmp = tmp_path_factory.mktemp("select_ref")
    _select(prepared, uninterrupted, tmp / "boot", _params_file(tmp))
    return tmp / "boot"


def _web(prepared: Path, small) -> dict:
    """The small world's web samples by key, read as CapFilt reads them."""
    return {s.key: s for _, s in web_samples(prepared / "web", small.ingest)}


def test_score_tables_hold_every_candidate_with_its_provenance(uninterrupted, prepared, small):
    manifest = read_manifest(uninterrupted, (SCORES_FORMAT,))
    web = _web(prepared, small)
    assert manifest["counts"]["images"] == len(web) == manifest["counts"]["web_total"]
    assert manifest["rows"] == 2 * len(web)  # the web text and one synthetic caption per image, none dropped
    shards = [s.url for s in web_shards(prepared / "web")]
    for entry, shard in zip(manifest["tables"], shards):
        rows = pq.read_table(entry["url"]).to_pylist()
        assert len(rows) == entry["rows"] and entry["input"]["url"] == shard
        assert entry["url"].startswith(manifest["folder"]) and manifest["fingerprint"] in entry["url"]
        for row in rows:
            sample = web[row["key"]]
            assert row["source"] == ("web" if row["candidate"] == 0 else "synthetic")
            if row["source"] == "web":
                assert row["text"] == sample.text and row["captioner"] == ""
            else:
                assert row["captioner"].startswith("captioner@")
            assert row["image_sha256"] == hashlib.sha256(sample.image).hexdigest()
            assert len(row["pixels_sha256"]) == 64
            assert row["shard"] == shard and row["round"] == 1
            assert row["filters"].startswith("filter@") and row["words"] == len(row["text"].split())
            assert 0 <= row["itm"][0] <= 1 and -1 <= row["itc"][0] <= 1
            assert "truth" not in row  # the world's truth stays beside its data: `blip audit` joins it
    calibration = pq.read_table(manifest["calibration"]["url"])
    assert set(calibration["label"].to_pylist()) == {0, 1} and calibration.num_rows == manifest["calibration"]["rows"]


def test_a_table_records_its_job_and_shard_in_its_own_footer(uninterrupted):
    from blip.data.parquet import table_meta

    manifest = read_manifest(uninterrupted, (SCORES_FORMAT,))
    for i, entry in enumerate(manifest["tables"]):
        record, rows = table_meta(entry["url"])
        assert record["fingerprint"] == manifest["fingerprint"] and record["index"] == i and rows == entry["rows"]
        assert record["input"] == entry["input"] and record["counts"] == entry["counts"]


def test_the_audit_joins_the_worlds_truth_to_the_scores_and_the_selection_by_key(uninterrupted, selected, prepared,
                                                                              tmp_path):
    from blip.cli import main
    from blip.world.generate import TRUTH
    from blip.world.scene import describes, scene_from_json

    assert main(["audit", "--world", str(prepared / "world"), "--scores", str(uninterrupted),
                 "--selection", str(selected), "--metrics", str(tmp_path / "audit.json")]) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    truth = {r["key"]: r for r in pq.read_table(prepared / "world" / TRUTH).to_pylist()}
    rows = _rows(uninterrupted)
    web = [r for r in rows if r["source"] == "web"]
    noisy = [r["itm"][0] < 0.5 for r in web if truth[r["key"]]["kind"] != "clean"]
    flagged = sum(noisy) + sum(r["itm"][0] < 0.5 for r in web if truth[r["key"]]["kind"] == "clean")
    assert audit["world"] is True
    assert audit["filter"]["web_texts"] == len(web) and 0 <= audit["filter"]["itm_auc_clean_vs_noisy"] <= 1
    assert audit["filter"]["noisy_recall_at_0.5"] == round(sum(noisy) / len(noisy), 4)
    assert audit["filter"]["noisy_precision_at_0.5"] == (round(sum(noisy) / flagged, 4) if flagged else None)
    captioner = audit["captioner"]
    synthetic = [r for r in rows if r["source"] == "synthetic"]
    strict = [describes(scene_from_json(json.loads(truth[r["key"]]["scene"])), r["text"]) for r in synthetic]
    assert captioner["captions"] == len(synthetic) and captioner["strict_wording"] == round(sum(strict) / len(strict), 4)
    assert captioner["correct"] >= captioner["strict_wording"]  # every exact wording is correct claim by claim
    assert set(captioner["claims"]) == {"shape", "colour", "size", "position", "relation", "background", "count"}
    # each targeted figure against its target: the filter as a detector of noisy web texts, the captioner's truth
    targets = audit["targets"]
    assert targets["filter.noisy_recall_at_0.5"]["value"] == audit["filter"]["noisy_recall_at_0.5"]
    assert targets["captioner.correct"] == {"value": captioner["correct"], "target": 0.5,
                                            "met": captioner["correct"] >= 0.5}
    assert targets["filter.noisy_precision_at_0.5"]["target"] == targets["filter.noisy_recall_at_0.5"]["target"] == 0.9
    # what select kept of each kind: the selection tables name the kept (key, candidate) pairs
    select = json.loads((selected.parent / "boot.json").read_text())
    by_kind = audit["selection"]["web"]["removed_share_by_kind"]
    assert set(by_kind) == {"clean", "mismatched", "partial", "uninformative"}
    detected = audit["selection"]["web"]["noisy_texts"]
    assert detected["removed"] == select["web"]["removed"] and detected["bad"] == len(noisy)
    assert audit["selection"]["kept_data_clean_share"]["web_before"] == round(
        sum(truth[r["key"]]["kind"] == "clean" for r in web) / len(web), 4)


def test_the_audit_of_a_users_data_says_there_is_nothing_to_judge(uninterrupted, selected, prepared, tmp_path):
    from blip.world.audit import audit
    from blip.world.generate import RECORD, TRUTH

    result = audit(tmp_path, uninterrupted, selected)  # no truth table: not the built-in world's data
    assert result["world"] is False and TRUTH in result["why"]
    # the world written for the human set only: the user's web shards may reuse its keys, and are never judged
    shutil.copy(prepared / "world" / TRUTH, tmp_path / TRUTH)
    (tmp_path / RECORD).write_text(json.dumps({"used_for": ["human"]}))
    assert audit(tmp_path, uninterrupted, selected)["world"] is False


def test_bootstrapped_dataset_records_provenance(selected, uninterrupted, prepared):
    manifest = read_manifest(selected, (SELECTION_FORMAT,))
    counts = manifest["selection"]["counts"]
    web_in = read_manifest(prepared / "web", ("blip-web/1",))["samples"]
    assert counts["web_total"] == web_in and counts["synthetic_total"] == web_in  # one caption per image
    assert counts["human_total"] == read_manifest(prepared / "human/train")["samples"]
    assert manifest["selection"]["threshold"] == 0.5
    shards = {s.url for s in web_shards(prepared / "web")}
    by_source = {"human": 0, "web": 0, "synthetic": 0}
    for sample in iter_samples(selected):  # joined: each selected text with its input shard's image
        meta = sample["json"]
        by_source[meta["source"]] += 1
        assert sample["txt"].strip()
        if meta["source"] != "human":
            assert meta["score"] >= 0.5 and meta["score"] == meta["itm"]  # ITM alone, one filter
            assert -1.0 <= meta["itc"] <= 1.0 and meta["round"] == 1
            assert meta["filters"].startswith("filter@") and meta["image_key"] in sample["__key__"]
            assert meta["captioner"].startswith("captioner@") == (meta["source"] == "synthetic")
            assert meta["shard"] in shards  # the input's own shard and key: the user's, in place
            assert meta["origin"]["key"] == meta["image_key"] and meta["origin"]["url"].startswith("world://web/")
            assert meta["image_sha256"] == hashlib.sha256(sample["jpg"]).hexdigest()
    assert by_source == manifest["by_source"]
    assert sum(by_source.values()) == manifest["samples"]
    assert not list(selected.glob("*.tar"))  # no image copied
    from blip.cli import main

    assert main(["verify", str(selected)]) == 0  # input shards and selection tables match their records


def test_materialized_shards_hold_the_same_samples(selected, tmp_path):
    from blip.cli import main

    assert main(["materialize", str(selected), str(tmp_path / "standalone"), "--shard-size", "50"]) == 0
    standalone = read_manifest(tmp_path / "standalone")
    assert standalone["selection"] == read_manifest(selected, (SELECTION_FORMAT,))["selection"]
    assert [(s["__key__"], s["txt"], s["jpg"]) for s in iter_samples(tmp_path / "standalone")] == \
        [(s["__key__"], s["txt"], s["jpg"]) for s in iter_samples(selected)]
    assert main(["verify", str(tmp_path / "standalone")]) == 0


def test_training_loader_joins_the_selection_with_the_web_shards(selected, small):
    from blip.data.loader import build_loader
    from blip.data.selected import training_data
    from blip.data.transforms import build_transform

    data = training_data([str(selected)], small.ingest)
    loader, _ = build_loader(data.shards, build_transform("eval", 32, small.loader), 8, train=False, seed=0,
                             num_workers=2, max_words=small.ingest.max_words, joiner=data.joiner)
    seen = {(k, m["source"], c) for batch in loader for k, m, c in zip(batch.keys, batch.meta, batch.captions)}
    expected = {(s["__key__"], s["json"]["source"], s["txt"]) for s in iter_samples(selected)}
    assert len(seen) == data.samples == len(expected) and {(k, src) for k, src, _ in seen} == \
        {(k, src) for k, src, _ in expected}


def test_training_loader_reads_a_registered_web_set_by_the_web_rules(prepared, small):
    from blip.data.loader import build_loader
    from blip.data.selected import training_data
    from blip.data.transforms import build_transform

    data = training_data([str(prepared / "web")], small.ingest)
    loader, _ = build_loader(data.shards, build_transform("eval", 32, small.loader), 8, train=False, seed=0,
                             num_workers=0, max_words=small.ingest.max_words, joiner=data.joiner)
    seen = {(k, m["source"], c) for batch in loader for k, m, c in zip(batch.keys, batch.meta, batch.captions)}
    assert seen == {(k, "web", s.text) for k, s in _web(prepared, small).items()} and len(seen) == data.samples


def test_report_figures_and_examples_sheet(selected):
    metrics = json.loads((selected.parent / "boot.json").read_text())
    for source in ("web", "synthetic", "human"):
        s = metrics[source]
        assert s["kept"] + s["removed"] == s["total"]
    assert metrics["noise_ratio"] == round(metrics["synthetic"]["removed"] / metrics["synthetic"]["total"], 4)
    assert "truth" not in metrics  # how right the selection was is the audit's, on the world alone
    report = selected.parent / "boot_report"
    with Image.open(report / "examples.png") as png:
        assert png.width >= 600 and png.height >= 6 * 100
    page = (report / "examples.html").read_text(encoding="utf-8")
    root = ET.fromstring(page.split("\n", 1)[1])  # well-formed markup after the doctype line
    assert root.tag == "html" and len(root.findall(".//tr")) == 1 + 6
    assert page.count('class="kept"') + page.count('class="removed"') == 12  # web + synthetic per image


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_as_one(tmp_path, models, prepared, uninterrupted):
    from blip.cli import main

    out = tmp_path / "scores"
    assert main(_args(models, prepared, out, _params_file(tmp_path, workers=2))) == 0
    assert _table_digests(tmp_path / "scores_tables") == _table_digests(uninterrupted.parent / "scores_tables")
    assert _tables(out) == _tables(uninterrupted)
    scores = lambda d: {k: v for k, v in read_manifest(d, (SCORES_FORMAT,)).items()  # noqa: E731
                        if k not in ("tables", "folder", "calibration")}
    assert scores(out) == scores(uninterrupted)  # fingerprint, counts, models: all but where the tables are
    assert json.loads((tmp_path / "scores.json").read_text())["workers"] == 2


@pytest.mark.slow
def test_a_resumed_run_scores_only_the_missing_shards(tmp_path, models, prepared, uninterrupted):
    from blip.cli import main

    reference = uninterrupted.parent / "scores_tables"
    shutil.copytree(reference, tmp_path / "scores_tables")
    (folder,) = (tmp_path / "scores_tables").iterdir()  # the job's folder, named by its fingerprint
    (folder / "scores-000001.parquet").unlink()  # a shard the earlier run never finished
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    out = tmp_path / "scores"
    assert main(_args(models, prepared, out, _params_file(tmp_path))) == 0
    metrics = json.loads((tmp_path / "scores.json").read_text())
    assert metrics["shards_resumed"] == 5 and metrics["shards"] == 6
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert {k for k in after if before.get(k) != after[k]} == {"scores-000001.parquet"}  # only it was written
    assert _table_digests(tmp_path / "scores_tables") == _table_digests(reference)
    assert _tables(out) == _tables(uninterrupted)


def _scorer_busy() -> list:
    """The Ray actor processes scoring a shard right now (Ray names a process after the method it runs)."""
    import psutil

    busy = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any("ShardScorer.score" in part for part in proc.info["cmdline"] or []):
                busy.append(proc)
    return busy


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_restarted_and_the_job_ends_with_the_same_bytes(tmp_path, models, prepared,
                                                                                    uninterrupted):
    """The laptop's default: no RAY_ADDRESS, so the command starts a Ray of its own; one of its two workers is
    killed while it scores a shard. Ray restarts the actor and runs the shard again."""
    out = tmp_path / "scores"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    cmd = [sys.executable, "-m", "blip.cli", *_args(models, prepared, out, _params_file(tmp_path, workers=2))]
    log = tmp_path / "capfilt.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    tables = tmp_path / "scores_tables"
    deadline, victim = time.time() + 300, None
    while victim is None:
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        busy = _scorer_busy()
        if busy:  # a shard is being scored: kill its worker
            victim = busy[0]
        time.sleep(0.02)
    done_before = len(list(tables.rglob("scores-*.parquet")))
    victim.kill()
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert done_before < 6 and "Traceback" not in text.split("capfilt: 1/6")[-1]
    assert _table_digests(tables) == _table_digests(uninterrupted.parent / "scores_tables")
    assert _tables(out) == _tables(uninterrupted)


@pytest.mark.slow
def test_corrupt_web_samples_and_shards_are_skipped_and_counted(tmp_path, models, prepared, small):
    """A broken image, an empty text, a pixel bomb, an oversized member, a key that is a path and a truncated
    shard, in the user's own img2dataset shards: each lost sample is one counted skip, by its reason, and the
    run finishes with the rest."""
    import io

    from blip.cli import main

    good = [s for _, s in web_samples(prepared / "web", small.ingest)][:12]
    bomb = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(bomb, format="PNG")  # 4M pixels in a few kB

    def sample(key: str, image: bytes, text: str) -> dict:
        return {"__key__": key, "jpg": image, "txt": text.encode(), "json": json.dumps({"url": f"http://x/{key}"}).encode()}

    raw = tmp_path / "raw"
    raw.mkdir()
    first = [sample(s.key, s.image, s.text) for s in good[:6]]
    first += [sample("broken_jpeg", b"\xff\xd8 not really a jpeg", "a red circle"),
              sample("empty_text", good[0].image, "  ...  "), sample("pixel_bomb", bomb.getvalue(), "a black square"),
              sample("oversized", os.urandom(30_000), "a noisy picture")]
    second = [sample("../escape", good[0].image, "a red circle")] + [sample(s.key, s.image, s.text) for s in good[6:]]
    for name, samples in (("00000", first), ("00001", second)):
        write_shard(raw / f"{name}.tar", samples)
        (raw / f"{name}_stats.json").write_text(json.dumps({"successes": len(samples)}))
    with tarfile.open(raw / "00001.tar") as tar:
        cut = tar.getmembers()[6]  # the first file of the third sample: cut inside its data
    (raw / "00001.tar").write_bytes((raw / "00001.tar").read_bytes()[:cut.offset_data + cut.size // 2])
    params = _params_file(tmp_path)
    assert main(["--params", str(params), "ingest", "web", "--shards", str(raw), "--out", str(tmp_path / "web")]) == 0
    assert not list((tmp_path / "web").glob("*.tar"))  # registered where they are, nothing copied
    edited = yaml.safe_load(params.read_text())
    edited["ingest"].update(max_pixels=1_000_000, max_member_bytes=20_000)
    params.write_text(yaml.safe_dump(edited))
    out = tmp_path / "scores"
    args = _args(models, prepared, out, params)
    args[args.index("--input") + 1] = str(tmp_path / "web")
    assert main(args) == 0
    counts = read_manifest(out, (SCORES_FORMAT,))["counts"]
    assert counts["web_total"] == counts["images"] == 6 + 1  # the broken shard's second sample
    assert {k: v for k, v in counts.items() if k.startswith("skipped_")} == {
        "skipped_not_an_image": 1, "skipped_caption_empty": 1, "skipped_too_many_pixels": 1,
        "skipped_oversized_member": 1, "skipped_unsafe_key": 1, "skipped_broken_shard": 5}
    metrics = json.loads((tmp_path / "scores.json").read_text())
    assert metrics["skipped"]["broken_shard"] == 5
    keys = pq.read_table(read_manifest(out, (SCORES_FORMAT,))["tables"][1]["url"]).column("key").to_pylist()
    assert keys and "../escape" not in keys and all("/" not in k for k in keys)


def _settings(**overrides):
    from blip.capfilt.scoring import RunSettings
    from blip.params import load_params

    params = load_params(ROOT / "params.yaml")
    cfg = params.capfilt
    fields = dict(seed=0, round=1, ingest=params.ingest, precision="fp32", loader_workers=0)
    cfg_fields = {k: overrides.pop(k) for k in list(overrides) if hasattr(cfg, k)}
    return RunSettings(cfg=dataclasses.replace(cfg, **cfg_fields), **{**fields, **overrides})


def test_bf16_autocast_scores_close_to_fp32(models, prepared):
    from blip.capfilt.scoring import load_member, score_web_shard

    shard = web_shards(prepared / "web")[0]
    captioners, filters = [load_member(models[0])], [load_member(models[1])]
    runs = {}
    for precision in ("fp32", "bf16"):
        run = _settings(precision=precision, method="beam", batch_size=4, max_length=12)
        table, _ = score_web_shard(shard.url, captioners, filters, run, limit=8, expected=shard.samples)
        runs[precision] = table.to_pylist()
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert [t["source"] for t in fp32] == [t["source"] for t in bf16] and len(fp32) >= 16
    web = [(a, b) for a, b in zip(fp32, bf16) if a["source"] == "web"]  # same texts (captions may differ)
    assert len(web) == 8 and max(abs(a["itm"][0] - b["itm"][0]) for a, b in web) < 0.05
    with pytest.raises(ValueError, match="precision"):
        score_web_shard(shard.url, captioners, filters, _settings(precision="fp16"), limit=2)


@pytest.mark.slow
def test_loader_workers_change_no_byte_and_batch_size_no_caption(models, prepared):
    from blip.capfilt.scoring import load_member, score_web_shard

    shard = web_shards(prepared / "web")[0]
    captioners, filters = [load_member(models[0])], [load_member(models[1])]

    def run(batch: int, workers: int) -> tuple[list[dict], dict]:
        table, stats = score_web_shard(shard.url, captioners, filters,
                                       _settings(batch_size=batch, loader_workers=workers, max_length=12), limit=20)
        return table.to_pylist(), stats.to_dict()

    reference = run(8, 0)
    assert reference[1]["counts"]["synthetic_total"] == 20  # one nucleus caption for each of the 20 images
    assert run(8, 2) == reference and run(8, 3) == reference  # decoded in worker processes: the same rows
    # another batch size: sampling is keyed per image, so the same captions; the scores agree up to float
    # rounding (a CPU's matrix kernels round differently for other batch shapes)
    rows, stats = run(3, 1)
    assert stats["counts"] == reference[1]["counts"]
    assert [(r["key"], r["text"]) for r in rows] == [(r["key"], r["text"]) for r in reference[0]]
    for a, b in zip(rows, reference[0]):
        assert abs(a["itm"][0] - b["itm"][0]) < 1e-4 and abs(a["itc"][0] - b["itc"][0]) < 1e-4


def test_a_shard_is_read_once_whatever_the_number_of_decoding_workers(models, prepared, monkeypatch):
    """The object store's bytes are the cost at a billion pairs: with 3 decoding processes the shard is still
    streamed once, by the scoring process (each worker used to read the whole shard)."""
    from blip.capfilt.scoring import load_member, score_web_shard
    from blip.data import storage

    shard = web_shards(prepared / "web")[0]
    read = []
    real_open = storage.open_read

    def counting_open(url):
        stream = real_open(url)
        read.append(0)
        original = stream.read

        def counted(*args):
            data = original(*args)
            read[-1] += len(data)
            return data
        stream.read = counted
        return stream

    monkeypatch.setattr(storage, "open_read", counting_open)
    members = [load_member(models[0]), load_member(models[1])]
    score_web_shard(shard.url, members[:1], members[1:], _settings(loader_workers=3, max_length=12),
                    expected=shard.samples)
    tar_reads = [n for n in read if n > 10_000]  # the shard itself (its small _stats.json aside)
    # once, whole: up to the archive's end marker (the zero padding after it, at most a 10 KiB record, is not read)
    assert len(tar_reads) == 1 and shard.bytes - 10240 <= tar_reads[0] <= shard.bytes


def test_calibrated_threshold_is_used_and_recorded(tmp_path, prepared, uninterrupted):
    out = tmp_path / "boot"
    _select(prepared, uninterrupted, out, _params_file(tmp_path, select={"calibrate": True, "target_precision": 0.5}))
    metrics = json.loads((tmp_path / "boot.json").read_text())
    calibration = metrics["calibration"]
    assert calibration["precision"] >= 0.5 and calibration["pairs"] > 0
    selection = read_manifest(out, (SELECTION_FORMAT,))["selection"]
    assert selection["threshold"] == metrics["threshold"] == calibration["threshold"]
    kept = [s["json"] for s in iter_samples(out) if s["json"]["source"] != "human"]
    assert kept and all(k["score"] >= metrics["threshold"] for k in kept)


def test_statistics_from_counts():
    counts = {"web_total": 10, "web_kept": 6, "web_removed": 4, "synthetic_total": 10, "synthetic_kept": 8,
              "synthetic_removed": 2, "human_total": 5, "human_kept": 5}
    s = statistics(counts)
    assert s["web_removed_share"] == 0.4 and s["noise_ratio"] == 0.2 and s["human"]["kept_ratio"] == 1.0


def test_the_selections_truth_from_counts_by_kind():
    from blip.world.audit import selection_truth

    counts = {"web_kept": 6, "web_removed": 4, "synthetic_kept": 8, "synthetic_removed": 2,
              # 6 clean web texts (1 wrongly removed), 4 noisy (3 removed: precision 3/4, recall 3/4)
              "web_clean_kept": 5, "web_clean_removed": 1, "web_mismatched_removed": 2,
              "web_partial_kept": 1, "web_uninformative_removed": 1,
              "synthetic_true_kept": 7, "synthetic_false_removed": 2, "synthetic_false_kept": 1}
    s = selection_truth(Counter(counts))
    assert s["web"]["noisy_texts"] == {"precision": 0.75, "recall": 0.75, "removed": 4, "bad": 4}
    assert s["web"]["removed_share_by_kind"] == {"clean": 0.1667, "mismatched": 1.0, "partial": 0.0,
                                                 "uninformative": 1.0}
    assert s["synthetic"]["false_captions"]["recall"] == 0.6667
    assert s["kept_data_clean_share"]["web_after"] == round(5 / 6, 4)
    assert s["kept_data_clean_share"]["web_before"] == 0.6


def test_the_same_job_in_another_workspace_folder_has_the_same_fingerprint(tmp_path, models, prepared, small,
                                                                          monkeypatch):
    """A retried flow run re-runs its experiment in a fresh folder: the job must be the same job there, so that it
    finds the tables it already wrote (and its manifests must not name the folder it happened to run in)."""
    from blip.capfilt.job import CapfiltJob

    jobs = []
    for folder in ("first", "second"):
        workspace = tmp_path / folder
        shutil.copytree(prepared, workspace / "data")
        shutil.copytree(Path(models[0]), workspace / "models/captioner")
        shutil.copytree(Path(models[1]), workspace / "models/filter")
        monkeypatch.chdir(workspace)
        jobs.append(CapfiltJob(small, ["models/captioner"], ["models/filter"], ["data/web"], "data/scores"))
        assert jobs[-1].work[0].url == str(workspace / "data/world/web/00000.tar")  # what a Ray worker reads
        assert jobs[-1].work[0].recorded == "data/world/web/00000.tar"  # what the tables and manifests record
    assert jobs[0].fingerprint("fp32") == jobs[1].fingerprint("fp32")
