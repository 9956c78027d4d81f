"""Generated inputs (hypothesis) through caption clean-up, web registration and reading, Karpathy ingestion
and the web contract.

Whatever the captions, keys, JSON rows and tar layouts: a web shard is registered where it is and every
one of its samples is read by the web rules as usable or as a skip with its reason (none lost, no other
exception), or registration is refused, writing nothing; Karpathy ingestion either writes a dataset that
verifies and accounts for every input, or fails with IngestError (or a ValueError naming the file) and
leaves nothing readable. A web set of usable samples passes the web data contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from blip.params import load_params
from blip.data.finished import verify_dataset
from blip.data.ingest import IngestError, unsafe_name
from blip.data.karpathy import ingest_karpathy
from blip.data.shards import IncompleteDataset, read_manifest
from blip.data.text import CaptionError, prepare_caption
from tests.support import ROOT, jpeg

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


SKIP_REASONS = {"broken_shard", "caption_empty", "caption_not_utf8", "caption_too_long", "caption_not_text",
                "missing_caption", "missing_image", "unsafe_key", "duplicate_key", "oversized_member", "empty_file",
                "not_an_image", "truncated_image", "corrupt_image", "too_small", "extreme_aspect", "too_many_pixels"}


@SETTINGS
@given(layout=members, cut=st.one_of(st.none(), st.none(), st.floats(0.0, 1.0)))
@example(layout=[("0", "jpg", "jpeg"), ("0", "txt", "caption"), ("dir/003", "jpg", "jpeg"), ("dir/003", "txt", "json")],
         cut=None)  # a key with a folder part, read as usable (its caption is the text file's, JSON or not)
def test_any_tar_layout_is_registered_and_every_sample_read_or_skipped_by_reason(layout, cut):
    """The per-shard work of registration (a Ray task in `register_web`, called here directly) counts what the
    shard holds; the web rules then read every one of those samples, as usable or as a skip by reason."""
    from blip.capfilt.inputs import decode, shard_samples
    from blip.data.web import register_shard

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "00000.tar"
        _tar(path, layout, cut)
        entry = register_shard({"url": str(path), "bytes": path.stat().st_size})
        assert entry["counted_by"] == "scan" and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        event("empty" if entry["samples"] == 0 else "registered")
        read = [decode(s, [], PARAMS.ingest) for s in shard_samples(str(path), PARAMS.ingest, entry["samples"])]
        assert len(read) >= entry["samples"]  # every registered sample comes out: usable, or a skip in its place
        assert {r.skip for r in read if r.skip} <= SKIP_REASONS
        usable = [r for r in read if not r.skip]
        # a key stays inside the shard (docs/data.md): a folder part is webdataset's key, as a tar of a folder tree has
        # it ("dir/003"), and is kept; an absolute or climbing path is skipped as unsafe_key
        assert all(r.key and not unsafe_name(r.key) and r.text for r in usable)


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


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=8))
def test_a_web_set_of_usable_samples_passes_the_web_contract(texts):
    from blip.data.text import CaptionError, prepare_caption
    from blip.data.web import register_web
    from data_contracts.runner import validate

    usable = []
    for text in texts:
        try:
            prepare_caption(text.encode("utf-8", "surrogatepass"), 30, 4000)
            usable.append(text)
        except CaptionError:  # empty after clean-up, or not UTF-8: a skip, which the contract counts
            continue
    if not usable:
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(tmp / "00000.tar", "w") as tar:
            for i, text in enumerate(usable):
                for ext, data in (("jpg", jpeg()), ("txt", text.encode("utf-8", "surrogatepass"))):
                    info = tarfile.TarInfo(f"{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        register_web(str(tmp / "00000.tar"), tmp / "out")
        report = validate("web", str(tmp / "out"), PARAMS, eval_dirs=[])
        assert report["success"], report["failures"]
