"""CapFilt: caption web images and score every text into tables, resumably, on any number of processes;
then select the bootstrapped dataset from the tables."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from blip.capfilt.job import SCORES_FORMAT
from blip.capfilt.report import statistics
from blip.data.shards import DatasetWriter, iter_samples, read_manifest
from blip.selection.dataset import SELECTION_FORMAT
from tests.conftest import ROOT, raw_params


def _params_file(tmp_path: Path, select: dict | None = None, **capfilt) -> Path:
    raw = copy.deepcopy(raw_params())
    raw["capfilt"].update({"batch_size": 8, "max_length": 12, **capfilt})
    raw["select"].update({"examples": 6, "calibrate": False, **(select or {})})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """A random tiny captioner and filter saved in the project's model format."""
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.test_models import tiny

    root = tmp_path_factory.mktemp("capfilt_models")
    save_pretrained(tiny("captioner"), root / "captioner", build_tokenizer())
    save_pretrained(tiny("filter"), root / "filter", build_tokenizer())
    return str(root / "captioner"), str(root / "filter")


def _args(models, prepared: Path, out: Path, params: Path, *extra: str) -> list[str]:
    return ["--params", str(params), "capfilt", "--captioner", models[0], "--filter", models[1],
            "--input", str(prepared / "web"), "--calibrate-on", str(prepared / "human/val"), "--output", str(out),
            "--metrics", str(out.parent / f"{out.name}.json"), *extra]


def _select(prepared: Path, scores: Path, out: Path, params: Path, *extra: str) -> None:
    from blip.cli import main

    assert main(["--params", str(params), "select", "--scores", str(scores), "--human", str(prepared / "human/train"),
                 "--output", str(out), "--metrics", str(out.parent / f"{out.name}.json"),
                 "--report", str(out.parent / f"{out.name}_report"), *extra]) == 0


def _table_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, models, prepared) -> Path:
    """One process, start to finish: the reference score tables.

    With one thread, as every rank of the multi-process runs below: on some CPUs (measured on an AMD
    EPYC) the matrix kernels split reductions by thread count, so a score's last float digit depends on
    it. Same bytes is promised for the same threads per process, whatever the number of processes.
    """
    from blip.cli import main

    tmp = tmp_path_factory.mktemp("capfilt_ref")
    out = tmp / "scores"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # capfilt sets its threads from it, as a launched rank does
        try:
            assert main(_args(models, prepared, out, _params_file(tmp))) == 0
        finally:
            torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def selected(tmp_path_factory, prepared, uninterrupted) -> Path:
    """The bootstrapped dataset selected from the reference tables at the fixed threshold 0.5."""
    tmp = tmp_path_factory.mktemp("select_ref")
    _select(prepared, uninterrupted, tmp / "boot", _params_file(tmp))
    return tmp / "boot"


def test_score_tables_hold_every_candidate_with_its_provenance(uninterrupted, prepared):
    manifest = read_manifest(uninterrupted, (SCORES_FORMAT,))
    web = {s["__key__"]: s for s in iter_samples(prepared / "web")}
    assert manifest["counts"]["images"] == len(web) == manifest["counts"]["web_total"]
    assert manifest["rows"] == 2 * len(web)  # the web text and one synthetic caption per image, none dropped
    for entry in manifest["tables"]:
        rows = pq.read_table(uninterrupted / entry["name"]).to_pylist()
        assert len(rows) == entry["rows"] and entry["input"]["url"].startswith(str(prepared / "web"))
        for row in rows:
            sample = web[row["key"]]
            assert row["source"] == ("web" if row["candidate"] == 0 else "synthetic")
            if row["source"] == "web":
                assert row["text"] == sample["txt"] and row["captioner"] == ""
            else:
                assert row["captioner"].startswith("captioner@")
            assert row["image_sha256"] == hashlib.sha256(sample["jpg"]).hexdigest()
            assert row["shard"] == entry["input"]["url"] and row["round"] == 1
            assert row["filters"].startswith("filter@") and row["words"] == len(row["text"].split())
            assert 0 <= row["itm"][0] <= 1 and -1 <= row["itc"][0] <= 1
            assert row["truth"] in ("clean", "mismatched", "partial", "uninformative", "true", "false")
    calibration = pq.read_table(uninterrupted / manifest["calibration"]["name"])
    assert set(calibration["label"].to_pylist()) == {0, 1} and calibration.num_rows == manifest["calibration"]["rows"]


def test_metrics_judge_the_filter_and_the_captioner_against_the_world(uninterrupted, prepared):
    from blip.data.world import describes, scene_from_json

    world = json.loads((uninterrupted.parent / "scores.json").read_text())["world"]
    rows = [r for e in read_manifest(uninterrupted, (SCORES_FORMAT,))["tables"]
            for r in pq.read_table(uninterrupted / e["name"]).to_pylist()]
    web = [r for r in rows if r["source"] == "web"]
    noisy = [r["itm"][0] < 0.5 for r in web if r["truth"] != "clean"]
    flagged = sum(noisy) + sum(r["itm"][0] < 0.5 for r in web if r["truth"] == "clean")
    assert world["filter"]["web_texts"] == len(web) and 0 <= world["filter"]["itm_auc_clean_vs_noisy"] <= 1
    assert world["filter"]["noisy_recall_at_0.5"] == round(sum(noisy) / len(noisy), 4)
    assert world["filter"]["noisy_precision_at_0.5"] == (round(sum(noisy) / flagged, 4) if flagged else None)
    captioner = world["captioner"]
    scenes = {s["__key__"]: scene_from_json(s["json"]["truth"]["scene"]) for s in iter_samples(prepared / "web")}
    synthetic = [r for r in rows if r["source"] == "synthetic"]
    assert captioner["captions"] == len(synthetic)
    assert captioner["strict_wording"] == round(sum(describes(scenes[r["key"]], r["text"]) for r in synthetic)
                                                / len(synthetic), 4)
    assert captioner["correct"] >= captioner["strict_wording"]  # every exact wording is correct claim by claim
    assert set(captioner["claims"]) == {"shape", "colour", "size", "position", "relation", "background", "count"}
    # each targeted figure against its target: the filter as a detector of noisy web texts, the captioner's truth
    targets = world["targets"]
    assert targets["filter.noisy_recall_at_0.5"]["value"] == world["filter"]["noisy_recall_at_0.5"]
    assert targets["captioner.correct"] == {"value": captioner["correct"], "target": 0.5,
                                            "met": captioner["correct"] >= 0.5}
    assert targets["filter.noisy_precision_at_0.5"]["target"] == targets["filter.noisy_recall_at_0.5"]["target"] == 0.9


def test_bootstrapped_dataset_records_provenance(selected, uninterrupted, prepared):
    manifest = read_manifest(selected, (SELECTION_FORMAT,))
    counts = manifest["selection"]["counts"]
    web_in = read_manifest(prepared / "web")["samples"]
    assert counts["web_total"] == web_in and counts["synthetic_total"] == web_in  # one caption per image
    assert counts["human_total"] == read_manifest(prepared / "human/train")["samples"]
    assert manifest["selection"]["threshold"] == 0.5
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
            assert meta["shard"].startswith(str(prepared / "web"))  # the input's own shard and key
            assert meta["origin"]["orig_key"] and meta["origin"]["orig_shard"].endswith(".tar")  # before ingestion
            assert meta["image_sha256"] == hashlib.sha256(sample["jpg"]).hexdigest()
    assert by_source == manifest["by_source"]
    assert sum(by_source.values()) == manifest["samples"]
    assert not list(selected.glob("*.tar"))  # no image copied
    from blip.cli import main

    assert main(["verify", str(selected)]) == 0  # input shards and selection tables match their sha256


def test_materialized_shards_hold_the_same_samples(selected, tmp_path):
    from blip.cli import main

    assert main(["materialize", str(selected), str(tmp_path / "standalone"), "--shard-size", "50"]) == 0
    standalone = read_manifest(tmp_path / "standalone")
    assert standalone["selection"] == read_manifest(selected, (SELECTION_FORMAT,))["selection"]
    assert [(s["__key__"], s["txt"], s["jpg"]) for s in iter_samples(tmp_path / "standalone")] == \
        [(s["__key__"], s["txt"], s["jpg"]) for s in iter_samples(selected)]


def test_training_loader_joins_the_selection_with_the_web_shards(selected, small):
    from blip.data.loader import build_loader
    from blip.data.transforms import build_transform
    from blip.selection.dataset import training_data

    data = training_data([str(selected)])
    loader, _ = build_loader(data.shards, build_transform("eval", 32, small.loader), 8, train=False, seed=0,
                             num_workers=2, max_words=small.ingest.max_words, joiner=data.joiner)
    seen = {(k, m["source"], c) for batch in loader for k, m, c in zip(batch.keys, batch.meta, batch.captions)}
    expected = {(s["__key__"], s["json"]["source"], s["txt"]) for s in iter_samples(selected)}
    assert len(seen) == data.samples == len(expected) and {(k, src) for k, src, _ in seen} == \
        {(k, src) for k, src, _ in expected}


def test_report_figures_and_examples_sheet(selected):
    metrics = json.loads((selected.parent / "boot.json").read_text())
    for source in ("web", "synthetic", "human"):
        s = metrics[source]
        assert s["kept"] + s["removed"] == s["total"]
    assert metrics["noise_ratio"] == round(metrics["synthetic"]["removed"] / metrics["synthetic"]["total"], 4)
    truth = metrics["truth"]  # the built-in world records what every web text really is
    assert set(truth["web"]["removed_share_by_kind"]) == {"clean", "mismatched", "partial", "uninformative"}
    assert "precision" in truth["web"]["noisy_texts"] and "recall" in truth["synthetic"]["false_captions"]
    report = selected.parent / "boot_report"
    with Image.open(report / "examples.png") as png:
        assert png.width >= 600 and png.height >= 6 * 100
    page = (report / "examples.html").read_text(encoding="utf-8")
    root = ET.fromstring(page.split("\n", 1)[1])  # well-formed markup after the doctype line
    assert root.tag == "html" and len(root.findall(".//tr")) == 1 + 6
    assert page.count('class="kept"') + page.count('class="removed"') == 12  # web + synthetic per image


def test_killed_two_process_run_resumes_to_the_same_bytes(tmp_path, models, prepared, uninterrupted):
    out = tmp_path / "scores"
    cmd = [sys.executable, "-m", "blip.cli", *_args(models, prepared, out, _params_file(tmp_path), "--procs", "2")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    parts, total = out / "parts", len(read_manifest(uninterrupted, (SCORES_FORMAT,))["tables"])
    deadline = time.time() + 300
    while not list(parts.glob("scores-*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
    proc.wait()
    finished = len(list(parts.glob("scores-*.json")))
    assert 0 < finished < total, f"the kill should land mid-run ({finished} of {total} shards finished)"
    assert not (out / "manifest.json").exists()  # an unfinished output stays unreadable
    assert subprocess.run(cmd, cwd=ROOT, env=env).returncode == 0
    assert _table_digests(out) == _table_digests(uninterrupted)
    scores = lambda d: read_manifest(d, (SCORES_FORMAT,))  # noqa: E731
    assert scores(out)["tables"] == scores(uninterrupted)["tables"]


def test_corrupt_web_samples_and_shards_are_skipped_and_counted(tmp_path, models, prepared):
    """A broken image, an empty text, a pixel bomb, an oversized member, a key that is a path and a truncated
    shard: each lost sample is one counted skip, and the run finishes with the rest."""
    import io

    from blip.cli import main

    good = list(iter_samples(prepared / "web"))[:12]
    bomb = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(bomb, format="PNG")  # 4M pixels in a few kB
    web = DatasetWriter(tmp_path / "web", shard_size=10)
    for s in good[:6]:
        web.write(s["__key__"], s["jpg"], s["txt"], s["json"])
    web.write("broken_jpeg", b"\xff\xd8 not really a jpeg", "a red circle", {"source": "web"})
    web.write("empty_text", good[0]["jpg"], "  ...  ", {"source": "web"})
    web.write("pixel_bomb", bomb.getvalue(), "a black square", {"source": "web"})
    web.write("oversized", os.urandom(30_000), "a noisy picture", {"source": "web"})
    web.write("../escape", good[0]["jpg"], "a red circle", {"source": "web"})  # the second shard, cut below
    for s in good[6:]:
        web.write(s["__key__"], s["jpg"], s["txt"], s["json"])
    manifest = web.finish({"dataset": "test"})
    second = tmp_path / "web" / manifest["shards"][1]["name"]
    with tarfile.open(second) as tar:
        cut = tar.getmembers()[6]  # the first file of the third sample: cut inside its data
    second.write_bytes(second.read_bytes()[:cut.offset_data + cut.size // 2])
    params = _params_file(tmp_path)
    raw = yaml.safe_load(params.read_text())
    raw["ingest"].update(max_pixels=1_000_000, max_member_bytes=20_000)
    params.write_text(yaml.safe_dump(raw))
    out = tmp_path / "scores"
    args = _args(models, prepared, out, params)
    args[args.index("--input") + 1] = str(tmp_path / "web")
    assert main(args) == 0
    counts = read_manifest(out, (SCORES_FORMAT,))["counts"]
    assert counts["web_total"] == counts["images"] == 6 + 1  # the broken shard's second sample
    assert {k: v for k, v in counts.items() if k.startswith("skipped_")} == {
        "skipped_bad_image_or_metadata": 1, "skipped_caption_empty": 1, "skipped_too_many_pixels": 1,
        "skipped_oversized_member": 1, "skipped_unsafe_key": 1, "skipped_broken_shard": 5}
    keys = pq.read_table(out / "scores-000001.parquet").column("key").to_pylist()
    assert keys and "../escape" not in keys and all("/" not in k for k in keys)


def _settings(**overrides):
    from blip.capfilt.scoring import RunSettings
    from blip.config import load_params

    params = load_params(ROOT / "params.yaml")
    cfg = params.capfilt
    fields = dict(seed=0, round=1, ingest=params.ingest, precision="fp32", loader_workers=0)
    cfg_fields = {k: overrides.pop(k) for k in list(overrides) if hasattr(cfg, k)}
    return RunSettings(cfg=dataclasses.replace(cfg, **cfg_fields), **{**fields, **overrides})


def test_bf16_autocast_scores_close_to_fp32(models, prepared):
    from blip.capfilt.scoring import load_member, score_web_shard

    shard = str(prepared / "web" / read_manifest(prepared / "web")["shards"][0]["name"])
    captioners, filters = [load_member(models[0])], [load_member(models[1])]
    runs = {}
    for precision in ("fp32", "bf16"):
        run = _settings(precision=precision, method="beam", batch_size=4, max_length=12)
        table, _ = score_web_shard(shard, captioners, filters, run, limit=8)
        runs[precision] = table.to_pylist()
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert [t["source"] for t in fp32] == [t["source"] for t in bf16] and len(fp32) >= 16
    web = [(a, b) for a, b in zip(fp32, bf16) if a["source"] == "web"]  # same texts (captions may differ)
    assert len(web) == 8 and max(abs(a["itm"][0] - b["itm"][0]) for a, b in web) < 0.05
    with pytest.raises(ValueError, match="precision"):
        score_web_shard(shard, captioners, filters, _settings(precision="fp16"), limit=2)


def test_loader_workers_change_no_byte_and_batch_size_no_caption(models, prepared):
    from blip.capfilt.scoring import load_member, score_web_shard

    shard = str(prepared / "web" / read_manifest(prepared / "web")["shards"][0]["name"])
    captioners, filters = [load_member(models[0])], [load_member(models[1])]

    def run(batch: int, workers: int) -> tuple[list[dict], dict]:
        table, stats = score_web_shard(shard, captioners, filters,
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
              "synthetic_removed": 2, "human_total": 5, "human_kept": 5,
              # 6 clean web texts (1 wrongly removed), 4 noisy (3 removed: precision 3/4, recall 3/4)
              "truth_web_clean_kept": 5, "truth_web_clean_removed": 1, "truth_web_mismatched_removed": 2,
              "truth_web_partial_kept": 1, "truth_web_uninformative_removed": 1,
              "truth_synthetic_true_kept": 7, "truth_synthetic_false_removed": 2, "truth_synthetic_false_kept": 1}
    s = statistics(counts)
    assert s["web_removed_share"] == 0.4 and s["noise_ratio"] == 0.2
    assert s["truth"]["web"]["noisy_texts"] == {"precision": 0.75, "recall": 0.75, "removed": 4, "bad": 4}
    assert s["truth"]["web"]["removed_share_by_kind"] == {"clean": 0.1667, "mismatched": 1.0, "partial": 0.0,
                                                          "uninformative": 1.0}
    assert s["truth"]["synthetic"]["false_captions"]["recall"] == 0.6667
    assert s["truth"]["kept_data_clean_share"]["web_after"] == round(5 / 6, 4)


def _rank_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in sessions of their own)."""
    import psutil

    parent = psutil.Process(pid)
    for proc in [*parent.children(recursive=True), parent]:
        proc.kill()


def _same_dataset(out: Path, reference: Path) -> None:
    assert _table_digests(out) == _table_digests(reference)
    scores = lambda d: read_manifest(d, (SCORES_FORMAT,))  # noqa: E731
    assert scores(out) == scores(reference)  # fingerprint, counts, tables: all of it
    assert not (out / "parts" / "claims").exists()  # the finished job leaves no lease behind


@pytest.mark.slow
def test_two_torchrun_nodes_one_killed_the_other_finishes_the_same_bytes(tmp_path, models, prepared, uninterrupted):
    from blip.train.engine import free_port

    out, port = tmp_path / "scores", free_port()
    params = _params_file(tmp_path, lease_seconds=4, poll_seconds=0.2, batch_size=8)
    logs, nodes = [], []
    for node in (0, 1):  # two "machines" on 127.0.0.1, one process each, one shared output folder
        logs.append(tmp_path / f"node{node}.log")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "blip.cli", *_args(models, prepared, out, params)]
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=_rank_env(), start_new_session=True,
                                      stdout=open(logs[-1], "w"), stderr=subprocess.STDOUT))

    def node1_holds_an_unfinished_shard() -> bool:
        # (not "after finishing one": a shard takes a fraction of a second here, and node 0, which
        # loads the same models, can take every other shard before node 1 finishes its first)
        leases = []
        for path in (out / "parts" / "claims").glob("scores-*.lease.0"):
            try:
                leases.append((path.name.split(".lease")[0], json.loads(path.read_text())))
            except (FileNotFoundError, json.JSONDecodeError):  # being created or replaced this instant
                continue
        return any("rank1" in lease["owner"] and lease["expires"] > 0 and not (out / "parts" / f"{shard}.json").exists()
                   for shard, lease in leases)

    _wait_for(node1_holds_an_unfinished_shard, "node 1 to hold a shard")
    _kill_tree(nodes[1].pid)  # the machine dies mid-shard: its lease is never renewed again
    nodes[1].wait()
    # node 0's rank finishes the job; its torchrun agent then waits in its exit barrier for the dead node's
    # agent (up to 300 s, torch's default) before it exits 0: the launcher's business, not the job's
    import psutil

    agent = psutil.Process(nodes[0].pid)
    _wait_for(lambda: (out / "manifest.json").exists() and not agent.children(), "node 0's rank to finish")
    _kill_tree(nodes[0].pid)
    node0 = logs[0].read_text()
    rows = read_manifest(uninterrupted, (SCORES_FORMAT,))["rows"]
    assert "Traceback" not in node0 and f"capfilt: {rows} candidate texts" in node0, node0[-3000:]
    assert "took over scores-" in node0 and "rank 0: scores-" in node0
    _same_dataset(out, uninterrupted)


@pytest.mark.slow
def test_a_rank_started_late_claims_shards_and_the_job_finishes_once(tmp_path, models, prepared, uninterrupted):
    out = tmp_path / "scores"
    params = _params_file(tmp_path, lease_seconds=120, poll_seconds=0.2, batch_size=8)
    cmd = [sys.executable, "-m", "blip.cli", *_args(models, prepared, out, params)]
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    parts = lambda: len(list((out / "parts").glob("scores-*.json")))  # noqa: E731
    # a Slurm array whose second task waited in the queue
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=open(logs[0], "w"), stderr=subprocess.STDOUT,
                             env=_rank_env(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2"))
    _wait_for(lambda: parts() > 0, "the first rank's first shard")
    first.send_signal(signal.SIGSTOP)  # held still, so the late rank surely finds work left on a busy machine
    done_by_first = parts()
    late = subprocess.Popen(cmd, cwd=ROOT, stdout=open(logs[1], "w"), stderr=subprocess.STDOUT,
                            env=_rank_env(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2"))
    _wait_for(lambda: parts() > done_by_first, "the late rank's first shard")
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0 and late.wait(timeout=300) == 0, logs[1].read_text()[-3000:]
    texts = [log.read_text() for log in logs]
    assert "rank 1: scores-" in texts[1]  # the late rank did part of the work
    assert sum(t.count("candidate texts of") for t in texts) == 1  # the finishing step ran once
    _same_dataset(out, uninterrupted)
