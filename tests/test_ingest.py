import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from blip.config import params_from_dict
from blip.data.ingest import IngestError, ingest_webdataset
from blip.data.karpathy import ingest_karpathy
from blip.data.shards import IncompleteDataset, iter_samples, read_manifest, shard_paths, verify_dataset
from tests.conftest import ROOT, raw_params


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def jpeg(colour=(200, 30, 30), size=(48, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


def test_real_captions_ingest_with_expected_counts(tmp_path, params, real_captions):
    manifests = ingest_karpathy(real_captions / "karpathy_style.json", real_captions, tmp_path, params.ingest,
                                dataset="real-captions")
    assert {s: m["samples"] for s, m in manifests.items()} == {"train": 587, "val": 126, "test": 126}
    assert sum(m["texts"] for m in manifests.values()) == 4195
    assert all(m["skipped_total"] == 0 for m in manifests.values())
    for split in ("train", "val", "test"):
        assert verify_dataset(tmp_path / split) == []
    sample = next(iter_samples(tmp_path / "test"))
    meta = sample["json"]
    assert meta["source"] == "human" and len(meta["captions"]) == 5
    assert sample["txt"] == meta["captions"][0] == meta["captions"][0].lower().strip()
    gt = json.loads((tmp_path / "test" / "karpathy.json").read_text())
    assert len(gt) == 126 and all(len(e["caption"]) == 5 for e in gt)


def test_original_karpathy_form_and_restval(tmp_path, params):
    (tmp_path / "imgs/val2014").mkdir(parents=True)
    (tmp_path / "imgs/val2014/a.jpg").write_bytes(jpeg())
    (tmp_path / "imgs/val2014/b.jpg").write_bytes(jpeg((0, 0, 200)))
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "cocoid": 1,
         "sentences": [{"raw": "A red box."}, {"raw": "Red."}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "test", "cocoid": 2, "sentences": [{"raw": "Blue!"}]}]}
    (tmp_path / "k.json").write_text(json.dumps(data))
    m = ingest_karpathy(tmp_path / "k.json", tmp_path / "imgs", tmp_path / "out", params.ingest, dataset="coco")
    assert (m["train"]["samples"], m["test"]["samples"], m["val"]["samples"]) == (1, 1, 0)
    assert next(iter_samples(tmp_path / "out/train"))["json"]["captions"] == ["a red box", "red"]


def test_awkward_files_are_normalised_or_skipped_by_reason(tmp_path, params, real_captions):
    """The real set with the ten awkward files and a path that climbs out of the root mixed in."""
    rows = json.loads((real_captions / "karpathy_style.json").read_text())
    awkward = sorted((real_captions / "images_awkward").iterdir())
    rows += [{"image": f"images_awkward/{p.name}", "caption": [f"photo {i}"], "split": "train", "image_id": -i}
             for i, p in enumerate(awkward)]
    rows.append({"image": "../../../etc/passwd", "caption": ["escape"], "split": "train", "image_id": -99})
    (tmp_path / "k.json").write_text(json.dumps(rows))
    m = ingest_karpathy(tmp_path / "k.json", real_captions, tmp_path / "out", params.ingest, dataset="awkward")["train"]
    assert m["skipped"] == {"empty_file": 1, "not_an_image": 1, "path_escapes_root": 1, "truncated_image": 1}
    assert m["normalised"] == {"alpha_composited": 1, "converted_cmyk": 1,
                               "converted_grayscale": 1, "exif_rotated": 1, "reencoded_png": 1}
    assert m["samples"] == 587 + 7  # the real train split, and awkward 01-06 and 10
    by_image = {s["json"]["image"]: s for s in iter_samples(tmp_path / "out/train")}
    rotated = Image.open(io.BytesIO(by_image["images_awkward/05_exif_orientation6.jpg"]["jpg"]))
    assert rotated.size == (384, 233)  # upright
    for s in by_image.values():
        assert Image.open(io.BytesIO(s["jpg"])).mode == "RGB"
    named = {e["file"] for e in m["skip_examples"]}
    assert "images_awkward/07_truncated_half.jpg" in named and "../../../etc/passwd" in named


def test_web_shards_with_bad_samples(tmp_path, params):
    good = [(f"{i:09d}.jpg", jpeg()) for i in range(6)]
    members = []
    for i, (name, data) in enumerate(good):
        members += [(name, data), (f"{i:09d}.txt", f"Good caption {i}.".encode()),
                    (f"{i:09d}.json", json.dumps({"url": f"http://x/{i}", "caption": "ignored"}).encode())]
    members += [
        ("000000100.jpg", b""), ("000000100.txt", b"zero byte image"),
        ("000000101.jpg", b"hello, I am text"), ("000000101.txt", b"not an image"),
        ("000000102.jpg", jpeg()), ("000000102.txt", b""),
        ("000000103.jpg", jpeg()), ("000000103.txt", ("word " * 2000).encode()),
        ("000000104.jpg", jpeg()), ("000000104.txt", b"caf\xe9 latin-1"),
        ("../../evil.jpg", jpeg()), ("../../evil.txt", b"escape"),
        ("000000105.jpg", jpeg()), ("000000105.json", json.dumps({"caption": "Caption from JSON"}).encode()),
        ("000000106.txt", b"no image at all"),
        ("000000107.png", _png_rgba()), ("000000107.txt", b"a png with alpha"),
        ("000000108.jpg", jpeg()), ("000000108.txt", ("long " * 40).encode()),
    ]
    make_tar(tmp_path / "00000.tar", members)
    truncated = tmp_path / "00001.tar"
    full = make_tar(tmp_path / "full.tar", good + [(f"{i:09d}.txt", b"x") for i in range(6)])
    truncated.write_bytes(full.read_bytes()[:1500])
    full.unlink()
    cfg = params_from_dict({**raw_params(), "ingest": {**raw_params()["ingest"], "max_skip_fraction": 0.9}}).ingest
    m = ingest_webdataset(str(tmp_path / "*.tar"), tmp_path / "out", cfg)
    assert m["skipped"] == {"broken_shard": 1, "caption_empty": 1, "caption_not_utf8": 1, "caption_too_long": 1,
                            "empty_file": 1, "missing_image": 1, "not_an_image": 1, "unsafe_key": 1}
    assert m["normalised"] == {"alpha_composited": 1, "caption_truncated": 1, "reencoded_png": 1}
    texts = {s["json"]["orig_key"]: s["txt"] for s in iter_samples(tmp_path / "out")}
    assert texts["000000105"] == "caption from json"
    assert len(texts["000000108"].split()) == params.ingest.max_words
    assert all(not k.startswith("..") for k in texts)
    assert verify_dataset(tmp_path / "out") == []


def _png_rgba() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(out, format="PNG")
    return out.getvalue()


def test_too_many_skips_fail_naming_the_worst_files_and_leave_nothing_readable(tmp_path, params):
    members = [("000000000.jpg", jpeg()), ("000000000.txt", b"fine")]
    for i in range(1, 5):
        members += [(f"{i:09d}.jpg", b"garbage"), (f"{i:09d}.txt", b"broken")]
    make_tar(tmp_path / "00000.tar", members)
    with pytest.raises(IngestError) as e:
        ingest_webdataset(str(tmp_path / "00000.tar"), tmp_path / "out", params.ingest)
    msg = str(e.value)
    assert "skipped 4 of 5" in msg and "000000001" in msg and "not_an_image" in msg and "max_skip_fraction" in msg
    with pytest.raises(IncompleteDataset):
        read_manifest(tmp_path / "out")
    assert not list((tmp_path / "out").glob("shard-*.tar"))


def test_killed_ingestion_leaves_no_readable_half_dataset(tmp_path, prepared):
    """Kill an ingestion mid-run: no manifest, no half-written shard under a shard name."""
    raw = raw_params()
    raw["ingest"]["shard_size"] = 10  # many small commits, so the kill lands between and inside them
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    src = str(prepared / "world" / "web")
    cmd = [sys.executable, "-m", "blip.cli", "--params", str(tmp_path / "params.yaml"), "ingest", "web",
           "--shards", *[src] * 20, "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out").glob("shard-*.tar")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(IncompleteDataset, match="unfinished"):
        shard_paths(tmp_path / "out")
    for shard in (tmp_path / "out").glob("shard-*.tar"):
        with tarfile.open(shard) as tar:  # every committed shard is a whole tar
            assert len(tar.getmembers()) % 3 == 0


def test_a_new_version_never_overwrites_a_shard_an_older_manifest_references(tmp_path, params, prepared):
    import dataclasses

    from blip.data import storage

    web = str(prepared / "world" / "web")
    first = ingest_webdataset(web, tmp_path / "out", params.ingest)
    old = {e["name"]: e["sha256"] for e in first["shards"]}
    # the same data cut to 3 words a caption: every shard's content, so every shard's name, changes
    second = ingest_webdataset(web, tmp_path / "out", dataclasses.replace(params.ingest, max_words=3))
    assert not set(old) & {e["name"] for e in second["shards"]}
    assert {name: storage.sha256(tmp_path / "out" / name) for name in old} == old  # the old version is whole
    assert read_manifest(tmp_path / "out") == second and verify_dataset(tmp_path / "out") == []
    # the same content again: the same names, the same bytes
    again = ingest_webdataset(web, tmp_path / "again", dataclasses.replace(params.ingest, max_words=3))
    assert again["shards"] == second["shards"]
