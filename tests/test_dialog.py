"""Visual dialog (paper sec. 5.5): VisDial's metrics by hand, its v1.0 JSON and dense annotations with real JPEGs,
the built-in world's dialogs checked against their truth, the dialog encoder's init and loss, and the stage end
to end with real DeepSpeed."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from blip.config import TextArch
from blip.data.finished import iter_samples
from blip.tasks.dialog.data import (
    OPTIONS,
    DialogFormatError,
    dialog_text,
    ingest_visdial,
    ranked_rounds,
    read_visdial,
    training_pairs,
)
from blip.tasks.dialog.evaluate import ndcg, rank_of, summarise
from blip.models.checkpoints import init_task_model, load_model, save_pretrained
from blip.tokenizer import build_tokenizer, tokenize
from blip.world.dialog import meaning, world_dialog
from blip.world.scene import scene_from_json
from tests.support import downstream_workspace, raw_params, tiny

# ---------------------------------------------------------------------------------------- the metrics


def test_ranks_are_one_based_with_ties_in_option_order():
    scores = torch.tensor([0.2, 0.9, 0.2, 0.5])
    assert [rank_of(scores, i) for i in range(4)] == [3, 1, 4, 2]


def test_ndcg_counts_the_top_k_for_k_relevant_candidates_against_the_ideal_order():
    relevance = [0.0, 1.0, 0.5, 0.0, 1.0]  # k = 3
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])  # ranked 0, 1, 2: gains 0, 1, 0.5
    dcg = 0 / 1 + 1 / torch.log2(torch.tensor(3.0)) + 0.5 / 2
    ideal = 1 + 1 / torch.log2(torch.tensor(3.0)) + 0.5 / 2
    assert ndcg(scores, relevance) == pytest.approx(float(dcg / ideal))
    assert ndcg(torch.tensor([0.0, 3.0, 1.0, 0.0, 2.0]), relevance) == pytest.approx(1.0)


def test_the_summary_is_mrr_recalls_and_mean_rank_in_visdials_units():
    out = summarise([1, 2, 10, 40], [0.5])
    assert out["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 10 + 1 / 40) / 4, abs=0.01)
    assert (out["r1"], out["r5"], out["r10"], out["mean_rank"], out["ndcg"]) == (25.0, 50.0, 75.0, 13.25, 50.0)


# ---------------------------------------------------------------------------------------- VisDial v1.0

def _visdial(tmp_path, split="val2018"):
    answers = [f"answer {i}" for i in range(120)]
    questions = ["is it sunny", "how many people", "what colour is the car"]

    def rnd(q, a, opts_from):
        return {"question": q, "answer": a, "answer_options": list(range(opts_from, opts_from + OPTIONS)),
                "gt_index": a - opts_from}

    data = {"version": "1.0", "split": split, "data": {"questions": questions, "answers": answers, "dialogs": [
        {"image_id": 42, "caption": "a car on a street", "dialog": [rnd(0, 3, 0), rnd(1, 17, 10), rnd(2, 5, 5)]},
        {"image_id": 7, "caption": "two people walking", "dialog": [rnd(0, 1, 0), rnd(1, 2, 0)]},
        {"image_id": 99, "caption": "an image nobody has", "dialog": [rnd(0, 1, 0)]}]}}
    (tmp_path / "visdial.json").write_text(json.dumps(data))
    dense = [{"image_id": 42, "round_id": 2, "gt_relevance": [1.0 if i in (7, 8) else 0.0 for i in range(OPTIONS)]}]
    (tmp_path / "dense.json").write_text(json.dumps(dense))
    (tmp_path / "images/val").mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(tmp_path / "images/val/VisualDialog_val2018_000000000042.jpg")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "images/COCO_train2014_000000000007.jpg")
    return answers


def test_visdial_json_reads_with_its_dense_annotations_and_questions_as_text(tmp_path):
    answers = _visdial(tmp_path)
    first = next(read_visdial([str(tmp_path / "visdial.json")], str(tmp_path / "dense.json")))
    assert first["image_id"] == 42 and first["caption"] == "a car on a street"
    assert first["rounds"][1] == {"question": "how many people?", "answer": "answer 17",
                                  "options": answers[10:110], "gt_index": 7}
    assert first["dense"]["round"] == 1 and first["dense"]["relevance"][7] == 1.0  # round_id is 1-based
    rounds = list(ranked_rounds(first))
    assert rounds[2]["history"] == [("is it sunny?", "answer 3"), ("how many people?", "answer 17")]
    assert rounds[1]["relevance"] is not None and rounds[0]["relevance"] is None


def test_visdial_is_ingested_with_images_found_by_id_at_any_depth_and_a_missing_one_skipped_and_counted(
        tmp_path, params):
    _visdial(tmp_path)
    cfg = dataclasses.replace(params.ingest, max_skip_fraction=0.5)
    manifest = ingest_visdial([str(tmp_path / "visdial.json")], str(tmp_path / "images"), tmp_path / "out", cfg, 10,
                              str(tmp_path / "dense.json"))
    assert manifest["samples"] == 2 and manifest["rounds"] == 5 and manifest["skipped"] == {"missing_file": 1}
    samples = list(iter_samples(tmp_path / "out"))
    assert [s["json"]["image_id"] for s in samples] == [42, 7] and samples[1]["txt"] == "two people walking"


def test_a_test_split_ranks_its_last_round_only_and_a_file_of_another_form_is_refused_by_name(tmp_path):
    meta = {"image_id": 1, "caption": "c", "rounds": [
        {"question": "q1?", "answer": "a1", "options": None, "gt_index": None},
        {"question": "q2?", "answer": None, "options": [f"o{i}" for i in range(OPTIONS)], "gt_index": None}]}
    (only,) = ranked_rounds(meta)
    assert only["round"] == 1 and only["gt_index"] is None and only["history"] == [("q1?", "a1")]
    with pytest.raises(DialogFormatError, match="no right answer"):
        training_pairs([only])
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DialogFormatError, match="other.json: not VisDial v1.0's form"):
        list(read_visdial([str(tmp_path / "other.json")]))


def test_the_dialog_text_puts_the_answer_and_question_first_so_truncation_drops_the_oldest_rounds():
    history = [(f"old question {i}?", f"old answer {i}") for i in range(30)]
    text = dialog_text("yes", "is it red?", history)
    assert text.startswith("yes [SEP] is it red? [SEP] old question 29? old answer 29 [SEP] old question 28?")
    tok = build_tokenizer()
    ids, _ = tokenize(tok, [text], 16)
    words = tok.decode(ids[0], skip_special_tokens=True)
    assert words.startswith("yes is it red? old question 29") and "old question 0" not in words


# ---------------------------------------------------------------------------------------- the built-in world

def test_world_dialogs_offer_the_true_answer_among_100_distinct_candidates_and_mark_its_phrasings_relevant(params):
    from blip.world.scene import rng_for, sample_scene
    from blip.world.vqa import world_questions

    for index in range(20):
        rng = rng_for(0, 99, index)
        scene = sample_scene(rng, 3)
        d = world_dialog(scene, "a caption", rng, 4, dense=True)
        truths = {q["question"] + "?": q["answer"]
                  for q in world_questions(scene, rng_for(0, 99, index), 99)}  # every template's truth
        for r in d["rounds"]:
            assert len(r["options"]) == OPTIONS == len(set(r["options"]))
            assert r["options"][r["gt_index"]] == r["answer"]
            if r["question"] in truths and r["answer_type"] in ("count", "background"):  # no random choice inside
                assert meaning(r["answer"]) == truths[r["question"]]
        dense = d["dense"]
        rnd = d["rounds"][dense["round"]]
        marked = {o for o, rel in zip(rnd["options"], dense["relevance"]) if rel}
        assert rnd["answer"] in marked and {meaning(o) for o in marked} == {meaning(rnd["answer"])}
        assert scene_from_json(scene.to_json()) == scene


# ---------------------------------------------------------------------------------------- the model

def test_a_dialog_model_takes_the_pretrained_encoder_and_itm_head_and_maps_the_caption_to_the_image_width(tmp_path):
    narrow = TextArch(hidden=32, layers=2, heads=4, intermediate=64, dropout=0.0, positions=64)
    pretrained = tiny("pretrain", text=narrow)  # image 64 wide, text 32
    save_pretrained(pretrained, tmp_path / "pretrain")
    dialog = init_task_model(tmp_path / "pretrain", "dialog", 32)
    src, dst = pretrained.state_dict(), dialog.state_dict()
    for key in ("text_encoder.encoder.layer.1.crossattention.self.key.weight", "itm_head.weight",
                "visual_encoder.cls_token"):
        assert torch.equal(src[key], dst[key]), key
    assert dst["caption_proj.weight"].shape == (64, 32)
    assert not any(k.startswith(("text_decoder.", "vision_proj", "text_encoder_m")) for k in dst)
    save_pretrained(dialog, tmp_path / "dialog")
    assert load_model(tmp_path / "dialog").cfg.task == "dialog"
    # as wide as the image: the caption's states join unmapped
    assert isinstance(tiny("dialog", text=dataclasses.replace(narrow, hidden=64)).caption_proj, torch.nn.Identity)


def test_the_dialog_loss_is_itm_cross_entropy_over_each_images_texts(tmp_path):
    tok = build_tokenizer()
    model = tiny("dialog", text=TextArch(hidden=32, layers=2, heads=4, intermediate=64, dropout=0.0, positions=64))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    caps = tokenize(tok, ["a red circle", "a blue star"], 16)
    ids, mask = tokenize(tok, ["yes [SEP] q?", "no [SEP] q?", "red [SEP] colour?", "blue [SEP] colour?"], 16)
    labels = torch.tensor([1, 0, 1, 0])
    loss = model(images, ids, mask, labels=labels, captions=caps)["itm"]
    memory, memory_mask = model.dialog_memory(images, *caps)
    rows = torch.tensor([0, 0, 1, 1])
    expected = F.cross_entropy(model.dialog_logits(memory[rows], memory_mask[rows], ids, mask), labels)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_training_pairs_are_the_right_answer_then_answers_to_alike_questions_then_random_candidates():
    options = [f"o{i}" for i in range(OPTIONS)]

    def rnd(question, gt):
        return {"image_id": 1, "round": 0, "question": question, "options": options, "gt_index": gt, "history": []}

    torch.manual_seed(0)
    texts, labels = training_pairs([rnd("what colour is the star?", 5), rnd("what colour is the sky?", 7),
                                    rnd("how many stars?", 9)], negatives=2, hard=1)
    assert labels == [1, 0, 0] * 3
    assert texts[0] == "o5 [SEP] what colour is the star?" and texts[1] == "o7 [SEP] what colour is the star?"
    assert texts[4] == "o5 [SEP] what colour is the sky?"  # the other colour question's answer: a hard negative
    assert texts[2] not in texts[:2] and texts[7] not in (texts[6], texts[8])  # then random candidates


# ---------------------------------------------------------------------------------------- the stage

@pytest.mark.slow
def test_the_dialog_stage_fine_tunes_from_each_model_and_ranks_the_test_candidates(tmp_path):
    raw = raw_params()
    raw["world"].update(image_size=32, dialog={"train": 12, "test": 4, "rounds": 2})
    raw["presets"]["tiny"]["finetune_dialog"].update(image_size=32, batch_size=4, epochs=1, steps_per_epoch=2)
    blip = downstream_workspace(tmp_path, raw)

    assert "{'train': 24, 'test': 8} (world)" in blip("downstream-data", "dialog", "--out", "data/dialog")
    out = blip("downstream", "dialog", "--from", "baseline=a", "bootstrapped=b", "--procs", "1")
    assert "[dialog_baseline] epoch 1/1 step 2/2" in out and "[dialog_bootstrapped] epoch 1/1 step 2/2" in out
    result = json.loads((tmp_path / "metrics/downstream/dialog.json").read_text())
    for name, source in (("baseline", "a"), ("bootstrapped", "b")):
        r = result[name]
        assert r["from"] == source and r["rounds"] == 8 and r["dense_rounds"] == 4
        assert 1 <= r["mean_rank"] <= 100 and 1 <= r["mrr"] <= 100 and r["r1"] <= r["r5"] <= r["r10"]
    assert result["chance"]["uniform"]["mean_rank"] == 50.5 and result["chance"]["answer_prior"]["rounds"] == 8
    tuned = load_model(tmp_path / "models/dialog/baseline").state_dict()
    source = load_model(tmp_path / "a").state_dict()
    assert tuned["visual_encoder.cls_token"].shape and all(  # finetune_dialog.freeze_vision: the ViT as pre-trained
        torch.equal(v, source[k]) for k, v in tuned.items() if k.startswith("visual_encoder."))
    assert not torch.equal(tuned["itm_head.weight"], source["itm_head.weight"])
