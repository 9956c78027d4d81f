import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from blip.data.finished import iter_samples, verify_dataset
from blip.data.karpathy import ingest_karpathy
from blip.data.shards import read_manifest
from blip.data.web import register_web
from tests.support import ROOT, jpeg, make_tar, read_by_web_rules


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


def test_web_shards_are_registered_in_place_and_bad_samples_skipped_by_reason_where_read(tmp_path, params):
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
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    m = register_web(str(tmp_path / "*.tar"), tmp_path / "out")
    # nothing copied, nothing changed: the manifest names the shards where they are, by size and sha256
    assert sorted((tmp_path / "out").iterdir()) == [tmp_path / "out" / "manifest.json"]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == before
    assert [Path(s["url"]).name for s in m["shards"]] == ["00000.tar", "00001.tar"]
    assert [s["bytes"] for s in m["shards"]] == [len(before["00000.tar"]), len(before["00001.tar"])]
    assert m["counted_by"] == {"stats": 0, "scan": 2}  # no _stats.json: each counted once, from its tar headers
    skipped, fixes, texts = read_by_web_rules(tmp_path / "out", params.ingest)
    assert skipped == {"broken_shard": 1, "caption_empty": 1, "caption_not_utf8": 1, "caption_too_long": 1,
                       "empty_file": 1, "missing_image": 1, "not_an_image": 1, "unsafe_key": 1}
    assert fixes == {"alpha_composited": 1, "caption_truncated": 1}
    assert texts["000000105"] == "caption from json"
    assert len(texts["000000108"].split()) == params.ingest.max_words
    assert all(not k.startswith("..") for k in texts)
    assert sum(skipped.values()) + len(texts) == m["samples"] + skipped["broken_shard"] - 1  # every sample accounted


def _png_rgba() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(out, format="PNG")
    return out.getvalue()


def test_a_killed_registration_leaves_the_previous_manifest_as_it_was(tmp_path, prepared):
    """The manifest is the one thing registration writes, in one atomic write at its end: killed before that,
    the folder's previous version is still whole and readable."""
    src = str(prepared / "world" / "web")
    register_web(src, tmp_path / "out")
    previous = (tmp_path / "out" / "manifest.json").read_bytes()
    cmd = [sys.executable, "-m", "blip.cli", "ingest", "web", "--shards", *[src] * 40, "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(3)  # joining the Ray cluster, or registering
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # whenever the kill landed: the old version whole, or the new one whole; never none, never a part
    now = read_manifest(tmp_path / "out", ("blip-web/1",))
    assert (tmp_path / "out" / "manifest.json").read_bytes() == previous or now["samples"] == 40 * 120


def test_a_new_version_never_overwrites_a_shard_an_older_manifest_references(tmp_path, params, prepared):
    import dataclasses

    from blip.data import storage

    human = prepared / "world" / "human"
    first = ingest_karpathy(human / "karpathy.json", human, tmp_path / "out", params.ingest, "world")["train"]
    old = {e["name"]: e["sha256"] for e in first["shards"]}
    # the same data cut to 3 words a caption: every shard's content, so every shard's name, changes
    cut = dataclasses.replace(params.ingest, max_words=3)
    second = ingest_karpathy(human / "karpathy.json", human, tmp_path / "out", cut, "world")["train"]
    assert not set(old) & {e["name"] for e in second["shards"]}
    assert {name: storage.sha256(tmp_path / "out/train" / name) for name in old} == old  # the old version is whole
    assert read_manifest(tmp_path / "out/train") == second and verify_dataset(tmp_path / "out/train") == []
    # the same content again: the same names, the same bytes
    again = ingest_karpathy(human / "karpathy.json", human, tmp_path / "again", cut, "world")["train"]
    assert again["shards"] == second["shards"]
