"""Datasets in object storage: the chain reads and writes s3:// URLs on a real S3-API server (moto's).

The user's img2dataset shards are registered where they are, in the bucket (a manifest, no copy); the
human set is ingested from the bucket into it; the contracts, CapFilt's scoring (its tables and manifest
written straight to the bucket by the Ray workers), select, materialize and training all read from it and
write to it. A URL scheme that cannot work is refused with a message, never turned into a local folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from blip.capfilt.formats import SCORES_FORMAT
from blip.data.selected import SELECTION_FORMAT
from blip.data.shards import read_manifest
from tests.support import in_process, small_training_params

BUCKET = "blip-data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> dict:
    """A moto S3 server on 127.0.0.1 and the environment that points boto at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            assert time.time() < deadline and server.poll() is None, "the S3 server did not start"
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir(BUCKET)
    yield env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.terminate()
    server.wait()


def _blip(params: Path, *args: str, cwd: Path) -> str:
    from blip.cli import main

    return in_process(main, ["--params", str(params), *args], cwd)


def _contract(params: Path, kind: str, dataset: str, tmp_path: Path) -> dict:
    from data_contracts.__main__ import main

    data = dataset.rsplit("/", 1)[0]
    in_process(main, ["--params", str(params), kind, dataset, "--eval", f"{data}/human/val", f"{data}/human/test",
                      "--results", str(tmp_path / "c.json")], tmp_path)
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["success"], report
    return report


@pytest.mark.slow
def test_the_chain_reads_and_writes_its_data_in_object_storage(s3, tmp_path):
    import s3fs

    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    params = small_training_params(tmp_path)
    raw = yaml.safe_load(params.read_text())
    raw["world"].update(image_size=64, human={"train": 16, "val": 8, "test": 8},
                        web={**raw["world"]["web"], "images": 40, "shard_size": 20})
    raw["ingest"]["shard_size"] = 10
    raw["capfilt"].update(batch_size=8, max_length=10)
    raw["select"].update(calibrate=False, threshold=0.4)
    raw["tracking"]["uri"] = "off"
    # random models score near chance: the share bounds are test_contracts' business
    raw["contracts"].update(synthetic_share=[0.0, 1.0], web_removed_share=[0.0, 1.0], noise_ratio=[0.0, 1.0])
    params.write_text(yaml.safe_dump(raw))
    # the user's raw data, uploaded: a Karpathy JSON with its images, and img2dataset shards
    _blip(params, "world", "--out", str(tmp_path / "raw"), cwd=tmp_path)
    fs = s3fs.S3FileSystem()
    fs.put(str(tmp_path / "raw") + "/", f"{BUCKET}/raw/", recursive=True)
    data = f"s3://{BUCKET}/data"
    _blip(params, "ingest", "karpathy", "--json", f"s3://{BUCKET}/raw/human/karpathy.json",
          "--images", f"s3://{BUCKET}/raw/human", "--out", f"{data}/human", cwd=tmp_path)
    _blip(params, "ingest", "web", "--shards", f"s3://{BUCKET}/raw/web", "--out", f"{data}/web", cwd=tmp_path)
    web = read_manifest(f"{data}/web", ("blip-web/1",))
    assert web["samples"] == 40 and [s["url"] for s in web["shards"]] == [f"s3://{BUCKET}/raw/web/00000.tar",
                                                                           f"s3://{BUCKET}/raw/web/00001.tar"]
    assert all(s["etag"] and s["counted_by"] == "stats" for s in web["shards"])  # from the listing and _stats.json
    assert fs.ls(f"{BUCKET}/data/web") == [f"{BUCKET}/data/web/manifest.json"]  # registered in place: no copy

    assert _contract(params, "web", f"{data}/web", tmp_path)["rows"] == 40

    for task in ("captioner", "filter"):
        save_pretrained(tiny(task), tmp_path / task, build_tokenizer())
    capfilt = ["capfilt", "--captioner", str(tmp_path / "captioner"), "--filter", str(tmp_path / "filter"),
               "--input", f"{data}/web", "--calibrate-on", f"{data}/human/val", "--output", f"{data}/scores",
               "--metrics", str(tmp_path / "capfilt.json")]
    _blip(params, *capfilt, cwd=tmp_path)
    scores = read_manifest(f"{data}/scores", (SCORES_FORMAT,))
    folder = f"s3://{BUCKET}/data/scores/tables/{scores['fingerprint']}/"
    assert all(t["url"].startswith(folder) for t in scores["tables"])
    assert len(fs.glob(f"{BUCKET}/data/scores/tables/*/scores-*.parquet")) == 2  # one object per input shard
    assert not Path(tmp_path / "s3:").exists()  # never a local folder named like the URL
    assert json.loads((tmp_path / "capfilt.json").read_text())["shards_resumed"] == 0
    # run again: every table is there, so nothing is scored
    again = _blip(params, *capfilt, cwd=tmp_path)
    assert "2 already scored" in again and json.loads((tmp_path / "capfilt.json").read_text())["shards_resumed"] == 2

    _blip(params, "select", "--scores", f"{data}/scores", "--human", f"{data}/human/train",
          "--output", f"{data}/bootstrapped", "--metrics", str(tmp_path / "select.json"), "--report", "", cwd=tmp_path)
    boot = read_manifest(f"{data}/bootstrapped", (SELECTION_FORMAT,))
    assert {p["url"].rsplit("/", 1)[0] for p in boot["parts"]} == {f"s3://{BUCKET}/raw/web", f"{data}/human/train"}
    assert not fs.glob(f"{BUCKET}/data/bootstrapped/*.tar")  # a manifest and selection tables: no image copied
    assert _contract(params, "bootstrapped", f"{data}/bootstrapped", tmp_path)["rows"] == boot["samples"]

    _blip(params, "materialize", f"{data}/bootstrapped", f"{data}/standalone", cwd=tmp_path)
    assert read_manifest(f"{data}/standalone")["samples"] == boot["samples"]

    log = _blip(params, "pretrain", "--procs", "1", "--data", f"{data}/bootstrapped", "--out", str(tmp_path / "model"),
          "--ckpt-dir", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "pretrain.json"),
          "--plot", str(tmp_path / "loss.csv"), "--max-steps", "2", cwd=tmp_path)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert f"pretrain, {boot['samples']} samples" in log  # the joined selection, read from the bucket
    shutil.rmtree(tmp_path / "raw")


def test_a_url_scheme_that_cannot_work_is_refused_with_a_message(tmp_path, capsys):
    from blip.cli import main

    for args in (["capfilt", "--output", "s4://bucket/scores"], ["select", "--scores", "s4://bucket/scores"],
                 ["materialize", str(tmp_path), "s4://bucket/x"], ["ingest", "web", "--shards", "s4://b/web",
                                                                    "--out", str(tmp_path / "web")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "s4:// is not a storage scheme fsspec knows" in err and "Traceback" not in err, err
    assert not Path("s4:").exists() and not (tmp_path / "s4:").exists()
