import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from blip.world import generate as G
from blip.world import scene as W
from blip.data.shards import iter_tar_samples
from blip.data.text import clean_caption
from tests.support import small_params


def _digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_world_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path, small):
    G.generate_world(small.world, 0, tmp_path / "a")
    G.generate_world(small.world, 0, tmp_path / "b")
    G.generate_world(small.world, 1, tmp_path / "c")
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_statistics_match_params(tmp_path):
    p = small_params()
    stats = G.generate_world(p.world, 0, tmp_path)
    assert stats["human"]["images"] == {"train": 40, "val": 10, "test": 10}
    assert stats["human"]["captions"] == 5 * 60
    assert stats["web"]["images"] == 120
    noise = stats["web"]["noise"]
    assert sum(noise.values()) == 120
    # 40% of 120 = 48 noisy, split 0.5/0.3/0.2 -> 24/14.4/9.6 -> largest remainder 24/14/10
    assert noise == {"clean": 72, "mismatched": 24, "partial": 14, "uninformative": 10}
    assert stats["web"]["noise_fraction"] == 0.4
    assert 50 < stats["vocabulary_words"] < 400


def test_human_set_is_karpathy_form_with_five_distinct_captions(tmp_path, small):
    G.write_human(small.world, 0, tmp_path)
    entries = json.loads((tmp_path / "karpathy.json").read_text())
    assert [e["split"] for e in entries].count("val") == 10
    for e in entries:
        assert len(set(e["caption"])) == 5
        img = Image.open(tmp_path / e["image"])
        assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "RGB"


def test_web_set_has_img2dataset_layout_and_its_truth_beside_it(tmp_path, small):
    G.generate_world(small.world, 0, tmp_path)
    truth = {r["key"]: r for r in pq.read_table(tmp_path / G.TRUTH).to_pylist()}
    tmp_path = tmp_path / "web"
    shards = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert shards == [f"{i:05d}.tar" for i in range(6)]
    # img2dataset's statistics beside each shard: registration reads the sample count from them
    assert json.loads((tmp_path / "00001_stats.json").read_text())["successes"] == 20
    samples = list(iter_tar_samples(tmp_path / "00001.tar"))
    assert len(samples) == 20
    s = samples[3]
    assert s["__key__"] == "000010003" and set(s) == {"__key__", "jpg", "txt", "json"}
    meta = json.loads(s["json"])
    for field in ("url", "caption", "key", "status", "width", "height", "original_width"):
        assert field in meta
    assert meta["caption"] == s["txt"].decode()
    # the shards hold what a user's would: the truth is a table of its own, one row per sample, by key
    assert "truth" not in meta and len(truth) == small.world.web.images
    assert truth[s["__key__"]]["kind"] in ("clean", "mismatched", "partial", "uninformative")
    assert truth[s["__key__"]]["shard"] == "00001.tar"


def test_noisy_texts_are_noisy_in_the_recorded_way(tmp_path, small):
    G.generate_world(small.world, 0, tmp_path)
    truths = {r["key"]: {**r, "scene": json.loads(r["scene"])} for r in pq.read_table(tmp_path / G.TRUTH).to_pylist()}
    kinds = {}
    for shard in sorted((tmp_path / "web").glob("*.tar")):
        for s in iter_tar_samples(shard):
            truth, text = truths[s["__key__"]], clean_caption(s["txt"].decode(), 100)
            kinds[truth["kind"]] = kinds.get(truth["kind"], 0) + 1
            scene = W.Scene(tuple(W.Obj(o["shape"], o["colour"], o["size"], tuple(o["cell"]))
                                  for o in truth["scene"]["objects"]),
                            truth["scene"]["texture"], truth["scene"]["background"])
            shapes = {o.shape for o in scene.objects}
            if truth["kind"] == "clean":
                assert text.startswith(clean_caption(truth["true_caption"], 100))  # alt-text may add " - photo"
            elif truth["kind"] == "uninformative":
                assert not any(shape in text for shape in W.SHAPES)
            elif truth["kind"] == "partial":
                assert "->" in truth["detail"] or "<->" in truth["detail"]
                assert any(shape in text for shape in shapes | set(W.SHAPES))
            else:
                assert truth["detail"].startswith("caption of web image")
    assert set(kinds) == {"clean", "mismatched", "partial", "uninformative"}


def test_partial_captions_are_false_and_true_captions_are_true():
    rng = np.random.default_rng(7)
    scene = W.Scene((W.Obj("circle", "red", "large", (0, 0)), W.Obj("square", "blue", "small", (0, 2))),
                    "plain", "white")
    truths = set(W.caption_pool(scene, [0, 1], [True, True]) + W.caption_pool(scene, [1, 0], [True, True]))
    assert "a large red circle to the left of a small blue square" in truths
    for _ in range(30):
        text, detail = W.partial_caption(scene, rng)
        assert text not in truths, (text, detail)


def test_rendered_objects_have_their_colour():
    scene = W.Scene((W.Obj("square", "red", "large", (1, 1)),), "plain", "white")
    img = np.asarray(W.render(scene, 96, np.random.default_rng(0)))
    centre = img[40:56, 40:56].reshape(-1, 3).mean(0)
    assert centre[0] > 180 and centre[1] < 80 and centre[2] < 80
    corner = img[2:10, 2:10].reshape(-1, 3).mean(0)
    assert (corner > 220).all()
