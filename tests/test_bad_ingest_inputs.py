"""Bad Karpathy-style JSON and bad captions: a message naming the file, or rows skipped and counted by
reason; a run with nothing usable fails instead of writing an empty dataset."""

import json
from pathlib import Path

import pytest

from blip.cli import main
from blip.data.ingest import IngestError
from blip.data.karpathy import ingest_karpathy
from tests.support import jpeg


@pytest.fixture()
def images(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "imgs" / name).write_bytes(jpeg())
    return tmp_path / "imgs"


def _ingest(tmp_path, images, data, params, **cfg):
    import dataclasses

    path = tmp_path / "k.json"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    ingest_cfg = dataclasses.replace(params.ingest, **{"max_skip_fraction": 0.9, **cfg})
    return ingest_karpathy(path, images, tmp_path / "out", ingest_cfg, dataset="t", default_split="train")


def test_malformed_rows_are_skipped_and_counted_by_file_and_row(tmp_path, images, params):
    rows = [{"image": "a.jpg", "caption": "a red box"},
            "not an object", 7, None,
            {"caption": "no image named"},
            {"image": 12, "caption": "a number for a file name"},
            {"image": "b.jpg", "caption": ["a blue box", 5, None, ["nested"], {"raw": "x"}]},
            {"image": "c.jpg"}]
    m = _ingest(tmp_path, images, rows, params)["train"]
    assert m["samples"] == 2
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["skipped"] == {"malformed_row": 6}
    assert {e["file"] for e in report["skip_examples"]} >= {f"{tmp_path / 'k.json'}#{i}" for i in (1, 2, 3, 4, 5, 7)}
    assert report["captions_dropped"] == {"caption_not_text": 4}  # 5, null, a list, an object: never str()'d


def test_karpathy_rows_without_filename_or_raw(tmp_path, images, params):
    data = {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a red box"}, {"tokens": []}]},
                       {"split": "train", "sentences": [{"raw": "no file name"}]},
                       {"filename": "b.jpg", "split": "train", "sentences": "not a list"}]}
    m = _ingest(tmp_path, images, data, params)["train"]
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert m["samples"] == 1 and report["skipped"] == {"malformed_row": 2}
    assert report["captions_dropped"] == {"sentence_without_raw": 1}


@pytest.mark.parametrize("data, message", [
    (b"{\"images\": [", "k.json: not valid JSON"),
    ("[{\"image\": \"a.jpg\", \"caption\": \"caf\u00e9\"}]".encode("latin-1"), "k.json: not UTF-8 text"),
    (b"{\"annotations\": []}", "k.json: neither Karpathy's"),
])
def test_unreadable_json_is_named(tmp_path, images, params, data, message):
    with pytest.raises(ValueError, match=message):
        _ingest(tmp_path, images, data, params)


def test_nothing_usable_fails_and_writes_nothing(tmp_path, images, params):
    with pytest.raises(IngestError, match="no usable image-caption pair among 0 entries"):
        _ingest(tmp_path, images, [], params)
    with pytest.raises(IngestError, match="no usable image-caption pair"):
        _ingest(tmp_path, images, [{"image": "missing.jpg", "caption": "x"}], params, max_skip_fraction=1.0)
    assert not (tmp_path / "out").exists()


def test_the_command_prints_one_message(tmp_path, images, capsys):
    (tmp_path / "k.json").write_bytes(b"\xff\xfe not json")
    code = main(["ingest", "karpathy", "--json", str(tmp_path / "k.json"), "--images", str(images), "--out",
                 str(tmp_path / "out"), "--name", "t"])
    err = capsys.readouterr().err
    assert code == 2 and "k.json: not UTF-8 text" in err and "Traceback" not in err


def test_web_shards_skip_oversized_members_and_duplicate_keys(tmp_path, params):
    import dataclasses

    from blip.data.web import register_web
    from tests.support import make_tar, read_by_web_rules

    members = [("000.jpg", jpeg()), ("000.txt", b"a red box"),
               ("001.jpg", jpeg()), ("001.txt", b"x" * 5000),  # over the cap: skipped unread
               ("002.jpg", jpeg()), ("002.txt", b"first"), ("002.txt", b"second"),  # one file twice
               ("003.jpg", jpeg()), ("003.txt", b"a blue box"),
               ("000.jpg", jpeg()), ("000.txt", b"the key again, after its sample ended")]
    make_tar(tmp_path / "00000.tar", members)
    register_web(str(tmp_path / "00000.tar"), tmp_path / "out")
    cfg = dataclasses.replace(params.ingest, max_member_bytes=4096)
    skipped, _, texts = read_by_web_rules(tmp_path / "out", cfg)
    assert skipped == {"oversized_member": 1, "duplicate_key": 2}
    assert list(texts.values()) == ["a red box", "a blue box"]
    from blip.data.ingest import Tally
    from blip.data.web import parse_web_sample, read_web_shard

    oversized = [parse_web_sample(k, m, cfg) for k, m in read_web_shard(str(tmp_path / "00000.tar"), Tally(), 4096)]
    assert any(s.skip == "oversized_member" and "001.txt: 5000 bytes > ingest.max_member_bytes" in s.detail
               for s in oversized)


def test_nul_and_invisible_characters_leave_captions():
    from blip.data.text import prepare_caption

    text, _ = prepare_caption("a\x00red\u200b box\ufeff with\u00ad a\u200d\tcat\x07", 30, 4000)
    assert text == "a red box with a cat"


def test_an_image_in_two_splits_is_reported_and_kept_in_its_first(tmp_path, images, params):
    rows = [{"image": "a.jpg", "caption": "a red box", "split": "test"},
            {"image": "b.jpg", "caption": "a blue box", "split": "train"},
            {"image": "a.jpg", "caption": "a red box again", "split": "train"}]
    manifests = _ingest(tmp_path, images, rows, params)
    assert (manifests["train"]["samples"], manifests["test"]["samples"]) == (1, 1)
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["skipped"] == {"image_in_two_splits": 1}
    assert report["skip_examples"][0]["file"].endswith("k.json#2")
    assert "a.jpg is in split 'test' already" in report["skip_examples"][0]["problems"][0]


@pytest.mark.parametrize("cut", [0.5, 0.43])  # between members (reads as a complete tar) / inside one
def test_a_broken_shard_counts_the_samples_it_lost(tmp_path, params, cut):
    from blip.data.web import register_web
    from tests.support import make_tar, read_by_web_rules

    members = [(f"{i:03d}.{ext}", jpeg() if ext == "jpg" else f"caption {i}".encode())
               for i in range(10) for ext in ("jpg", "txt")]
    full = make_tar(tmp_path / "full.tar", members).read_bytes()
    (tmp_path / "00000.tar").write_bytes(full[:int(len(full) * cut)])
    (tmp_path / "00000_stats.json").write_text(json.dumps({"successes": 10}))  # as img2dataset writes
    (tmp_path / "full.tar").unlink()
    m = register_web(str(tmp_path / "00000.tar"), tmp_path / "out")
    assert m["samples"] == 10 and m["counted_by"]["stats"] == 1  # the count img2dataset recorded
    skipped, _, texts = read_by_web_rules(tmp_path / "out", params.ingest)
    assert skipped["broken_shard"] == 10 - len(texts) and len(texts) >= 3, (skipped, texts)


def test_a_caption_row_anywhere_in_the_file_joins_its_image(tmp_path, images, params):
    rows = [{"image": "a.jpg", "caption": "a red box"}, {"image": "b.jpg", "caption": "a blue box"},
            {"image": "a.jpg", "caption": "the red box again"}]  # BLIP's form: one row per caption
    assert _ingest(tmp_path, images, rows, params)["train"]["samples"] == 2
    gt = json.loads((tmp_path / "out" / "train" / "karpathy.json").read_text())
    assert [e["caption"] for e in gt] == [["a red box", "the red box again"], ["a blue box"]]


def test_a_failed_reingest_puts_the_old_version_back(tmp_path, images, params):
    from blip.data.finished import verify_dataset
    from blip.data.shards import read_manifest

    _ingest(tmp_path, images, [{"image": "a.jpg", "caption": "a red box", "split": "train"},
                               {"image": "b.jpg", "caption": "a blue box", "split": "test"}], params)
    before = {s: read_manifest(tmp_path / "out" / s) for s in ("train", "val", "test")}
    rows = [{"image": "c.jpg", "caption": "a new box", "split": "train"},
            *({"image": f"gone{i}.jpg", "caption": "x", "split": "test"} for i in range(5))]
    with pytest.raises(IngestError, match="skipped 5 of 6"):
        _ingest(tmp_path, images, rows, params, max_skip_fraction=0.2)
    assert {s: read_manifest(tmp_path / "out" / s) for s in before} == before
    assert all(verify_dataset(tmp_path / "out" / s) == [] for s in before)


def test_a_killed_reingest_leaves_no_mix_of_old_and_new_splits(tmp_path, params):
    """Kill `ingest karpathy` over an existing dataset: no split of the old version stays readable beside
    the new one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from blip.data.shards import IncompleteDataset, read_manifest
    from tests.support import ROOT, raw_params

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(600):  # enough that the run is still writing when the kill lands
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(jpeg((i % 256, 40, 90)))
        rows.append({"image": f"{i}.jpg", "caption": f"box number {i}", "split": ("train", "val", "test")[i % 3]})
    _ingest(tmp_path, tmp_path / "imgs", rows, params)
    old = {p.name for p in (tmp_path / "out").rglob("shard-*.tar")}
    raw = raw_params()
    raw["ingest"].update(shard_size=5, max_words=1)  # new content, in many small commits
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "blip.cli", "--params", str(tmp_path / "params.yaml"), "ingest", "karpathy",
           "--json", str(tmp_path / "k.json"), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"),
           "--name", "t"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not {p.name for p in (tmp_path / "out").rglob("shard-*.tar")} - old:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for split in ("train", "val", "test"):
        with pytest.raises(IncompleteDataset):
            read_manifest(tmp_path / "out" / split)


def test_web_shards_with_nothing_in_them_fail(tmp_path, params):
    from blip.data.web import register_web
    from tests.support import make_tar

    make_tar(tmp_path / "00000.tar", [])
    with pytest.raises(IngestError, match="no sample in any of them"):
        register_web(str(tmp_path / "00000.tar"), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_web_shards_that_are_not_there_or_of_an_unknown_scheme_are_refused_with_a_message(tmp_path, capsys):
    from blip.cli import main

    assert main(["ingest", "web", "--shards", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "out")]) == 2
    assert "no .tar shards found" in capsys.readouterr().err
    assert main(["ingest", "web", "--shards", "s4://bucket/web", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "s4:// is not a storage scheme" in err and "Traceback" not in err
    assert not (tmp_path / "s4:").exists() and not Path("s4:").exists()  # never a local folder named like a URL
