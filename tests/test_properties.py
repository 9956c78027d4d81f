"""Generated inputs (hypothesis) through caption clean-up, web and Karpathy ingestion and the web contract.

Whatever the captions, keys, JSON rows and tar layouts: ingestion either writes a dataset that verifies
and accounts for every input sample, or fails with IngestError (or a ValueError naming the file) and
leaves nothing readable. No other exception, no half-written dataset. What ingestion writes passes the
web data contract.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from blip.config import load_params
from blip.data.ingest import IngestError, ingest_webdataset
from blip.data.karpathy import ingest_karpathy
from blip.data.shards import IncompleteDataset, iter_samples, plain_name, read_manifest, verify_dataset
from blip.data.text import CaptionError, prepare_caption
from tests.conftest import ROOT
from tests.test_ingest import jpeg

PARAMS = load_params(ROOT / "params.yaml")
REASONS = {"caption_empty", "caption_not_utf8", "caption_too_long"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

captions = st.one_of(st.text(), st.binary(), st.text(alphabet=st.characters(codec="utf-8"), max_size=50))


@SETTINGS
@given(raw=captions)
def test_a_caption_is_clean_or_refused_by_reason(raw):
    try:
        text, cut = prepare_caption(raw, 30, 4000)
    except CaptionError as e:
        assert e.reason in REASONS
        return
    words = text.split(" ")
    assert text and all(words) and len(words) <= 30 and text == text.strip()
    assert not any(c in text for c in '.!"()*#:;~\x00\u200b\ufeff')
    assert all(c.isprintable() or c == " " for c in text), repr(text)
    assert prepare_caption(text, 30, 4000) == (text, False)  # clean-up is idempotent


def _content(kind: str) -> bytes:
    return {"jpeg": jpeg(), "png": _png(), "garbage": b"\xff\xd8 not a jpeg", "empty": b"",
            "caption": "A red box, on the LEFT.".encode(), "long": b"x " * 3000, "latin1": "caf\xe9".encode("latin-1"),
            "json": json.dumps({"caption": "a blue box", "url": "http://x/1.jpg"}).encode(),
            "json_number": json.dumps({"caption": 7}).encode(), "json_bad": b"{not json"}[kind]


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (30, 30), (0, 200, 0, 100)).save(out, format="PNG")
    return out.getvalue()


# a sample: a key and its files (extension, content); good ones are common, so most runs write something
plain_keys = st.from_regex(r"[0-9a-z_]{1,6}", fullmatch=True)
good_sample = st.tuples(plain_keys, st.sampled_from([[("jpg", "jpeg"), ("txt", "caption")],
                                                     [("jpg", "jpeg"), ("json", "json")],
                                                     [("png", "png"), ("txt", "caption"), ("json", "json")]]))
odd_sample = st.tuples(
    st.one_of(plain_keys, st.sampled_from(["a.b", "../up", "/abs", "dir/003", "sub\\004", "\u00fc", ""])),
    st.lists(st.tuples(st.sampled_from(["jpg", "txt", "json", "png", "JPG", "tar", ""]),
                       st.sampled_from(["jpeg", "png", "garbage", "empty", "caption", "long", "latin1", "json",
                                        "json_number", "json_bad"])), min_size=1, max_size=3))
members = st.lists(st.one_of(good_sample, good_sample, odd_sample), max_size=8).map(
    lambda samples: [(key, ext, kind) for key, files in samples for ext, kind in files])


def _tar(path: Path, layout: list[tuple[str, str, str]], cut: float | None) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, ext, kind in layout:
            data = _content(kind)
            info = tarfile.TarInfo(f"{key}.{ext}" if ext else key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data if cut is None else data[:int(len(data) * cut)])


def _nothing_readable(out: Path) -> None:
    with pytest.raises(IncompleteDataset):
        read_manifest(out)
    assert not list(out.glob("shard-*.tar")) if out.exists() else True


@SETTINGS
@given(layout=members, cut=st.one_of(st.none(), st.none(), st.floats(0.0, 1.0)),
       max_skip=st.sampled_from([0.0, 0.5, 1.0, 1.0]))
def test_any_tar_layout_is_ingested_whole_or_not_at_all(layout, cut, max_skip):
    cfg = dataclasses.replace(PARAMS.ingest, max_skip_fraction=max_skip)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _tar(tmp / "00000.tar", layout, cut)
        try:
            manifest = ingest_webdataset(str(tmp / "00000.tar"), tmp / "out", cfg)
        except IngestError:
            event("refused")
            _nothing_readable(tmp / "out")
            return
        event("ingested")
        assert verify_dataset(tmp / "out") == []
        samples = list(iter_samples(tmp / "out"))
        assert len(samples) == manifest["samples"] > 0
        assert manifest["inputs_seen"] == manifest["samples"] + manifest["skipped_total"]
        assert all(plain_name(s["__key__"]) and s["txt"] for s in samples)
        assert all(not s["json"]["orig_key"].startswith(("/", "..")) for s in samples)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=6)
good_names = st.sampled_from(["a.jpg", "b.jpg", "c.png"])
image_names = st.one_of(good_names, st.sampled_from(["missing.jpg", "../a.jpg", "/etc/passwd", "", "bad.jpg"]))
words = st.text(alphabet="abc xyz,.!\u00e9", min_size=1, max_size=20)
splits = st.sampled_from(["train", "val", "test", "restval", "other"])
good_row = st.fixed_dictionaries({"image": good_names, "caption": words},
                                 optional={"split": st.sampled_from(["train", "val", "test"])})
odd_row = st.fixed_dictionaries({"image": image_names, "caption": st.one_of(words, json_values)},
                                optional={"split": splits, "image_id": json_values})
blip_rows = st.lists(st.one_of(good_row, good_row, odd_row, json_values), min_size=1, max_size=10)
sentence = st.one_of(st.fixed_dictionaries({"raw": words}), st.fixed_dictionaries({"raw": json_values}), json_values)
karpathy_docs = st.fixed_dictionaries({"images": st.lists(st.one_of(
    st.fixed_dictionaries({"filename": image_names, "sentences": st.lists(sentence, max_size=3)},
                          optional={"split": splits, "filepath": st.just("")}),
    json_values), min_size=1, max_size=8)})


@SETTINGS
@given(doc=st.one_of(blip_rows, karpathy_docs, json_values), max_skip=st.sampled_from([0.5, 1.0, 1.0]))
def test_any_karpathy_json_is_ingested_whole_or_refused_by_name(doc, max_skip):
    cfg = dataclasses.replace(PARAMS.ingest, max_skip_fraction=max_skip)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "imgs").mkdir()
        (tmp / "imgs" / "a.jpg").write_bytes(jpeg())
        (tmp / "imgs" / "b.jpg").write_bytes(jpeg((0, 0, 200)))
        (tmp / "imgs" / "c.png").write_bytes(_png())
        (tmp / "imgs" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        (tmp / "k.json").write_text(json.dumps(doc))
        try:
            manifests = ingest_karpathy(tmp / "k.json", tmp / "imgs", tmp / "out", cfg, dataset="t",
                                        default_split="train")
        except (IngestError, ValueError) as e:
            event(f"refused: {type(e).__name__}")
            assert "k.json" in str(e)
            for split in ("train", "val", "test"):
                _nothing_readable(tmp / "out" / split)
            return
        event("ingested")
        for split, manifest in manifests.items():
            assert verify_dataset(tmp / "out" / split) == []
            gt = json.loads((tmp / "out" / split / "karpathy.json").read_text())
            assert len(gt) == manifest["samples"] and all(e["caption"] for e in gt)
        assert sum(m["samples"] for m in manifests.values()) > 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=8))
def test_what_ingestion_writes_passes_the_web_contract(texts):
    from data_contracts.runner import validate

    layout = [(f"{i:03d}", ext, "jpeg") for i in range(len(texts)) for ext in ("jpg",)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(tmp / "00000.tar", "w") as tar:
            for (key, _, _), text in zip(layout, texts):
                for ext, data in (("jpg", jpeg()), ("txt", text.encode("utf-8", "surrogatepass"))):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        cfg = dataclasses.replace(PARAMS.ingest, max_skip_fraction=1.0)
        try:
            ingest_webdataset(str(tmp / "00000.tar"), tmp / "out", cfg)
        except IngestError:  # every generated caption was unusable (empty after clean-up, not UTF-8)
            _nothing_readable(tmp / "out")
            return
        report = validate("web", str(tmp / "out"), PARAMS, eval_dirs=[])
        assert report["success"], report["failures"]
