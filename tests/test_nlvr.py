"""NLVR2 (paper sec. 5.4): the two-image encoder as the release builds it, the data forms (NLVR2's JSON lines,
the release's list, the built-in world), and the stage end to end with real DeepSpeed."""

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from blip.config import TextArch
from blip.world.scene import BACKGROUNDS, COLOURS
from blip.models.checkpoints import init_task_model, load_model, save_pretrained
from blip.tasks.nlvr.data import NLVRFormatError, ingest_nlvr, read_nlvr_files
from blip.world.nlvr import balanced_pair
from blip.tokenizer import build_tokenizer, tokenize
from tests.support import downstream_workspace, raw_params, tiny

TEXT = TextArch(hidden=32, layers=2, heads=4, intermediate=64, dropout=0.0, positions=64)


def test_each_block_attends_to_both_images_starting_from_the_pretrained_cross_attention(tmp_path):
    pretrained = tiny("pretrain", text=TEXT)
    save_pretrained(pretrained, tmp_path / "pretrain")
    nlvr = init_task_model(tmp_path / "pretrain", "nlvr", 32).eval()
    src, dst = pretrained.state_dict(), nlvr.state_dict()
    for image in ("0", "1"):
        for w in ("query", "key", "value"):
            key = f"text_encoder.encoder.layer.1.crossattention.self.{w}.weight"
            assert torch.equal(src[key], dst[key.replace(".self.", f".self{image}.")])
        key = "text_encoder.encoder.layer.0.crossattention.output.dense.weight"
        assert torch.equal(src[key], dst[key.replace(".dense.", f".dense{image}.")])
    # the first half of the blocks averages the two images' outputs, the second half projects them (new weights)
    assert "text_encoder.encoder.layer.0.crossattention.output.merge_layer.weight" not in dst
    assert dst["text_encoder.encoder.layer.1.crossattention.output.merge_layer.weight"].shape == (32, 64)
    # averaging: with one image in both places, a first-half block is the pre-trained one
    ids, mask = tokenize(build_tokenizer(), ["a red star", "two objects"], 35)
    image = pretrained.image_embeds(torch.randn(2, 3, 32, 32))
    hidden = pretrained.text_encoder.embeddings(ids)
    single = pretrained.text_encoder.encoder.layer[0].crossattention(hidden, encoder_hidden_states=image)[0]
    twin = nlvr.text_encoder.encoder.layer[0].crossattention(hidden, encoder_hidden_states=(image, image))[0]
    assert torch.allclose(single, twin, atol=1e-6)


def test_pairs_are_classified_and_the_extra_pretraining_head_gives_way_to_the_task_head(tmp_path):
    three = tiny("nlvr", text=TEXT, num_classes=3)
    ids, mask = tokenize(build_tokenizer(), ["both images contain a red object"] * 2, 35)
    pairs = torch.randn(2, 2, 3, 32, 32)
    assert three.pair_logits(pairs, ids, mask).shape == (2, 3)
    assert three(pairs, ids, mask, labels=torch.tensor([0, 2]))["cls"].item() > 0
    save_pretrained(three, tmp_path / "three")
    two = init_task_model(tmp_path / "three", "nlvr", 32, num_classes=2)
    assert two.cls_head[2].weight.shape == (2, 32)
    assert torch.equal(two.cls_head[0].weight, three.cls_head[0].weight)
    assert torch.equal(two.state_dict()["text_encoder.encoder.layer.1.crossattention.output.merge_layer.weight"],
                       three.state_dict()["text_encoder.encoder.layer.1.crossattention.output.merge_layer.weight"])


def test_a_release_nlvr_state_dict_loads_by_name():
    model = tiny("nlvr", text=TEXT)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_model(state, vision_heads=4, text_heads=4)
    assert loaded.cfg.task == "nlvr" and loaded.cfg.num_classes == 2
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------- data forms

def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_nlvr2_json_lines_find_their_images_and_a_pair_with_a_missing_image_is_skipped(tmp_path, params):
    import dataclasses

    (tmp_path / "train/17").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    for name in ("train/17/train-1-0-img0.png", "train/17/train-1-0-img1.png", "dev/dev-5-2-img0.png"):
        (tmp_path / name).write_bytes(_png("red"))
    rows = [{"identifier": "train-1-0-0", "sentence": "Both images show red.", "label": "True", "directory": 17},
            {"identifier": "train-1-0-1", "sentence": "One image is blue.", "label": "False", "directory": 17},
            {"identifier": "dev-5-2-0", "sentence": "The right image is red.", "label": "True"}]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(r) for r in rows))
    records = list(read_nlvr_files([str(tmp_path / "train.json")]))
    assert records[0]["images"] == ["train/17/train-1-0-img0.png", "train/17/train-1-0-img1.png"]
    assert [r["label"] for r in records] == [1, 0, 1] and records[2]["images"][1] == "dev/dev-5-2-img1.png"
    manifest = ingest_nlvr([str(tmp_path / "train.json")], str(tmp_path), tmp_path / "out",
                           dataclasses.replace(params.ingest, max_skip_fraction=0.5), shard_size=10)
    assert manifest["samples"] == 2 and manifest["skipped"] == {"missing_file": 1}

    from blip.data.finished import iter_raw_samples

    sample = next(s for _, s in iter_raw_samples(tmp_path / "out"))
    assert {"jpg", "right.jpg", "txt", "json"} <= set(sample)


def test_downstream_data_ingests_the_users_nlvr2_files_and_adds_the_worlds_pretraining_pairs(tmp_path):
    import yaml

    from blip.cli import main

    (tmp_path / "dev").mkdir()
    for side in (0, 1):
        (tmp_path / f"dev/dev-1-0-img{side}.png").write_bytes(_png("red"))
    rows = [{"identifier": "dev-1-0-0", "sentence": "Both images show red.", "label": "True"},
            {"identifier": "dev-1-0-1", "sentence": "One image is blue.", "label": "False"}]
    (tmp_path / "dev.json").write_text("\n".join(json.dumps(r) for r in rows))
    raw = raw_params()
    raw["world"].update(image_size=32, nlvr={"pretrain": 4, "train": 2, "test": 2})
    raw["data"]["nlvr"] = {"train": [str(tmp_path / "dev.json")], "test": [str(tmp_path / "dev.json")],
                           "images": str(tmp_path)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--params", str(tmp_path / "params.yaml"), "downstream-data", "nlvr", "--out", str(tmp_path / "out"),
                 "--metrics", str(tmp_path / "nlvr_data.json")]) == 0
    metrics = json.loads((tmp_path / "nlvr_data.json").read_text())
    # NLVR2 has no pairs for the extra pre-training step: the world's stand in, beside the user's train and test
    assert metrics["source"] == "files" and metrics["pairs"] == {"train": 2, "test": 2, "pretrain": 4}


def test_the_release_list_form_and_bad_entries(tmp_path):
    (tmp_path / "nlvr_dev.json").write_text(json.dumps([
        {"images": ["dev/a-img0.png", "dev/a-img1.png"], "sentence": "two dogs", "label": "False"}]))
    assert [(r["images"], r["label"]) for r in read_nlvr_files([str(tmp_path / "nlvr_dev.json")])] == [
        (["dev/a-img0.png", "dev/a-img1.png"], 0)]
    (tmp_path / "bad.json").write_text(json.dumps([{"images": ["a", "b"], "sentence": "x", "label": "maybe"}]))
    with pytest.raises(NLVRFormatError, match="bad.json, entry 0: label 'maybe'"):
        list(read_nlvr_files([str(tmp_path / "bad.json")]))
    (tmp_path / "worse.json").write_text('{"sentence": "no identifier"}\n')
    with pytest.raises(NLVRFormatError, match="worse.json, entry 0: not an NLVR2 or release entry"):
        list(read_nlvr_files([str(tmp_path / "worse.json")]))


def _truth(text: str, left, right) -> bool:
    """An independent reading of the world's statements against the two scenes."""
    side = lambda s: left if s == "left" else right  # noqa: E731
    colours = lambda scene: {o.colour for o in scene.objects}  # noqa: E731
    if m := re.fullmatch(r"the (left|right) image has more objects than the other", text):
        other = right if m[1] == "left" else left
        return len(side(m[1]).objects) > len(other.objects)
    if m := re.fullmatch(r"both images contain a (\w+) object", text):
        return m[1] in colours(left) and m[1] in colours(right)
    if m := re.fullmatch(r"the (left|right) image contains a (\w+) object", text):
        return m[2] in colours(side(m[1]))
    if text == "the two images have the same background":
        return left.background == right.background
    if m := re.fullmatch(r"exactly one image has a ([\w ]+) background", text):
        return (left.background == m[1]) + (right.background == m[1]) == 1
    if m := re.fullmatch(r"the (left|right) image has a ([\w ]+) background", text):
        return side(m[1]).background == m[2]
    raise AssertionError(f"unknown statement {text!r}")


def test_world_pairs_make_their_statements_true_or_false_and_the_text_alone_tells_nothing():
    rng = np.random.default_rng(0)
    by_template = {}
    for _ in range(600):
        label = int(rng.integers(2))
        left, right, text = balanced_pair(rng, 3, label)
        assert _truth(text, left, right) == bool(label), text
        template = re.sub(r"\b(left|right|" + "|".join(COLOURS) + "|" + "|".join(BACKGROUNDS) + r")\b", "_", text)
        by_template.setdefault(template, []).append(label)
    assert len(by_template) == 6
    for template, labels in by_template.items():  # e.g. "both images contain a _ object" is rarely true by chance
        assert 0.35 < np.mean(labels) < 0.65, (template, np.mean(labels))


def test_world_pairs_of_one_object_scenes_say_nothing_about_which_has_more():
    rng = np.random.default_rng(0)
    texts = [balanced_pair(rng, 1, i % 2)[2] for i in range(200)]  # finishes: no statement it cannot make true
    assert not any("more objects" in t for t in texts) and len(set(texts)) > 10


# ---------------------------------------------------------------------------------------- the stage

@pytest.mark.slow
def test_the_nlvr_stage_pretrains_fine_tunes_and_scores_from_each_model_and_verify_pair_answers(tmp_path):
    raw = raw_params()
    raw["world"].update(image_size=32, nlvr={"pretrain": 16, "train": 16, "test": 8})
    raw["presets"]["tiny"]["finetune_nlvr"].update(image_size=32, batch_size=4, epochs=1, steps_per_epoch=2)
    raw["presets"]["tiny"]["finetune_nlvr"]["pretrain"].update(image_size=32, batch_size=4, epochs=1, steps_per_epoch=2)
    blip = downstream_workspace(tmp_path, raw)

    assert "{'pretrain': 16, 'train': 16, 'test': 8} (world)" in blip("downstream-data", "nlvr", "--out", "data/nlvr")
    out = blip("downstream", "nlvr", "--from", "baseline=a", "bootstrapped=b", "--procs", "1")
    for name in ("baseline", "bootstrapped"):
        assert f"[nlvr_{name}_pretrain] epoch 1/1 step 2/2" in out and f"[nlvr_{name}] epoch 1/1 step 2/2" in out
    result = json.loads((tmp_path / "metrics/downstream/nlvr.json").read_text())
    assert result["test_pairs"] == 8 and 0 < result["chance"]["majority_class"] <= 100
    assert {result[n]["from"] for n in ("baseline", "bootstrapped")} == {"a", "b"}
    assert load_model(tmp_path / "models/nlvr/baseline_pretrain").cfg.num_classes == 3
    assert load_model(tmp_path / "models/nlvr/baseline").cfg.num_classes == 2
    tuned, source = load_model(tmp_path / "models/nlvr/baseline").state_dict(), load_model(tmp_path / "a").state_dict()
    assert all(torch.equal(v, source[k]) for k, v in tuned.items()  # finetune_nlvr.freeze_vision, both steps
               if k.startswith("visual_encoder."))

    for colour, name in (("red", "left.jpg"), ("blue", "right.jpg")):
        Image.new("RGB", (40, 40), colour).save(tmp_path / name)
    statements = ["both images contain a red object", "the left image has more objects than the other"]
    lines = blip("verify-pair", "left.jpg", "right.jpg", *statements, "--model", "models/nlvr/bootstrapped")
    rows = [line.split("\t") for line in lines.strip().splitlines()]
    assert [r[0] for r in rows] == statements
    assert all(r[1] in ("true", "false") and 0 <= float(r[2]) <= 1 for r in rows)
