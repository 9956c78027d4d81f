"""VQA (paper sec. 5.3): the accuracy metric, the release's answer weighting and ranking, the data forms
(VQA v2 JSON, the release's vqa_*.json, the built-in world), and the stage end to end with real DeepSpeed."""

import dataclasses
import io
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from blip.config import TextArch
from blip.params import params_from_dict
from blip.models.checkpoints import CheckpointError, init_task_model, load_model, save_pretrained
from blip.tokenizer import DEC_ID, build_tokenizer, tokenize
from blip.tasks.vqa.accuracy import normalize_answer, question_accuracy, vqa_accuracy
from blip.tasks.vqa.answer import answer, candidate_ids, rank
from blip.tasks.vqa.data import VQAFormatError, answer_weights, ingest_vqa, read_vqa_files
from tests.support import TEXT, downstream_workspace, raw_params, tiny

QUESTIONS = ["what colour is the star", "how many objects are there", "is there a red circle"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


# ---------------------------------------------------------------------------------------- the metric

def test_accuracy_averages_min_of_matches_over_three_across_the_ten_leave_one_out_subsets():
    # 2 of 10 annotators said "red": leaving out one of them leaves 1 match (1/3), any other leaves 2 (2/3)
    assert question_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert question_accuracy("red", ["red"] * 4 + ["blue"] * 6) == pytest.approx((4 * 1 + 6 * 1) / 10)
    assert question_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert question_accuracy("green", ["red"] * 10) == 0


def test_answers_are_cleaned_up_as_the_vqa_evaluation_does_when_annotators_disagree():
    assert normalize_answer("Two") == "2" and normalize_answer("the dog.") == "dog"
    assert normalize_answer("dont know") == "don't know" and normalize_answer("its") == "its"
    assert normalize_answer("3,000") == "3000" and normalize_answer("left/right") == "left right"
    assert question_accuracy("two", ["2"] * 7 + ["two"] * 3) == 1.0
    # all ten agree: the evaluation compares the prediction as written
    assert question_accuracy("two", ["2"] * 10) == 0.0


def test_accuracy_is_reported_overall_and_per_answer_type_and_a_missing_answer_scores_zero():
    questions = {1: {"answers": ["yes"] * 10, "answer_type": "yes/no"},
                 2: {"answers": ["2"] * 10, "answer_type": "number"},
                 3: {"answers": ["red"] * 10, "answer_type": "other"}}
    result = vqa_accuracy({1: "yes", 2: "3"}, questions)
    assert result["overall"] == pytest.approx(100 / 3, abs=0.01)
    assert result["per_answer_type"] == {"number": 0.0, "other": 0.0, "yes/no": 100.0}


# ---------------------------------------------------------------------------------------- the release's rules

def test_answers_are_weighted_by_their_share_of_annotators_and_visual_genome_by_a_fixed_fifth():
    assert answer_weights(["red"] * 6 + ["dark red"] * 3 + ["pink"]) == (["red", "dark red", "pink"], [0.6, 0.3, 0.1])
    assert answer_weights(["a cat"], source="vg") == (["a cat"], [0.2])


def _vqa_model(**kw):
    return tiny("vqa", text=dataclasses.replace(TEXT, positions=64), **kw).eval()


def test_the_loss_is_each_answers_label_smoothed_token_sum_weighted_then_summed_over_the_batch_size(tokenizer):
    model = _vqa_model(label_smoothing=0.1)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids, mask = tokenize(tokenizer, QUESTIONS[:2], 35)
    a_ids, a_mask = tokenize(tokenizer, ["red", "dark red", "2"], 35)
    weights, counts = torch.tensor([0.7, 0.3, 1.0]), torch.tensor([2, 1])
    loss = model(images, ids, mask, answers=(a_ids, a_mask, weights, counts))["lm"]

    # by hand: per answer, over its tokens after [DEC] ([SEP] included, padding not),
    # (1 - eps) * -log p(target) + eps * mean over the vocabulary of -log p
    states = model.question_states(model.image_embeds(images), ids, mask)
    expected = 0.0
    for row, (q, w) in enumerate(zip([0, 0, 1], weights)):
        dec = a_ids[row:row + 1].clone()
        dec[0, 0] = DEC_ID
        n = int(a_mask[row].sum())
        logits = model.text_decoder(dec[:, :n], encoder_hidden_states=states[q:q + 1],
                                    encoder_attention_mask=mask[q:q + 1]).logits[0, :-1]
        logp = F.log_softmax(logits.float(), -1)
        targets = dec[0, 1:n]
        per_token = 0.9 * -logp.gather(1, targets[:, None])[:, 0] + 0.1 * -logp.mean(1)
        expected += w * per_token.sum()
    assert loss.item() == pytest.approx(expected.item() / 2, rel=1e-5)


def test_ranking_takes_the_top_k_by_first_token_then_the_best_whole_answer(tokenizer):
    model = _vqa_model()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ids, mask = tokenize(tokenizer, QUESTIONS, 35)
    candidates = ["red", "blue", "red star", "two", "yes", "no", "blue circle"]
    c_ids, c_mask = candidate_ids(tokenizer, candidates, torch.device("cpu"))
    with torch.no_grad():
        states = model.question_states(model.image_embeds(images), ids, mask)
        # k = every candidate: the best by the release's whole-answer score (minus the smoothed loss)
        scores = torch.stack([-model.answer_nll(states, mask, c_ids[i:i + 1].expand(3, -1),
                                                c_mask[i:i + 1].expand(3, -1)) for i in range(len(candidates))], 1)
        assert rank(model, states, mask, c_ids, c_mask, k=len(candidates)).tolist() == scores.argmax(1).tolist()
        # k = 1: the candidate whose first token is likeliest after [DEC]
        start = torch.full((3, 1), DEC_ID)
        first = model.text_decoder(start, encoder_hidden_states=states, encoder_attention_mask=mask).logits[:, 0]
        by_first = first.softmax(-1)[:, c_ids[:, 1]].argmax(1)
        assert rank(model, states, mask, c_ids, c_mask, k=1).tolist() == by_first.tolist()


def test_answering_ranks_or_generates_and_refuses_a_model_of_another_task(tokenizer):
    model, images = _vqa_model(), torch.randn(2, 3, 32, 32)
    ranked = answer(model, tokenizer, images, QUESTIONS[:2], "rank", ["red", "two", "yes"], k=2)
    assert len(ranked) == 2 and set(ranked) <= {"red", "two", "yes"}
    generated = answer(model, tokenizer, images, QUESTIONS[:2], "generate")
    assert len(generated) == 2 and all(isinstance(g, str) for g in generated)
    with pytest.raises(ValueError, match="not a VQA model"):
        answer(tiny("captioner"), tokenizer, images, QUESTIONS[:2], "generate")
    with pytest.raises(ValueError, match="candidate answer list"):
        answer(model, tokenizer, images, QUESTIONS[:2], "rank", None)


# ---------------------------------------------------------------------------------------- weights in

def test_a_vqa_model_starts_from_the_pretrained_encoder_and_decoder(tmp_path, capsys):
    narrow = TextArch(hidden=32, layers=2, heads=4, intermediate=64, dropout=0.0, positions=64)
    pretrained = tiny("pretrain", text=narrow)  # image 64 wide, text 32: the answer decoder's keys cannot be taken
    save_pretrained(pretrained, tmp_path / "pretrain")
    vqa = init_task_model(tmp_path / "pretrain", "vqa", 32)
    src, dst = pretrained.state_dict(), vqa.state_dict()
    for key in ("text_encoder.encoder.layer.1.crossattention.self.key.weight",
                "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
                "text_decoder.bert.encoder.layer.0.crossattention.self.query.weight",
                "text_decoder.bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(src[key], dst[key]), key
    assert dst["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 32)
    assert "4 cross-attention key/value weights start fresh" in capsys.readouterr().out
    # encoder and decoder are two models now: training one leaves the other
    assert vqa.text_decoder.bert.embeddings is not vqa.text_encoder.embeddings

    save_pretrained(tiny("filter"), tmp_path / "filter")
    with pytest.raises(CheckpointError, match="starts from a pre-trained model"):
        init_task_model(tmp_path / "filter", "vqa", 32)


def test_a_release_vqa_state_dict_loads_by_name_as_a_vqa_model():
    model = _vqa_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["text_encoder.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    loaded = load_model(state, vision_heads=4, text_heads=4)
    assert loaded.cfg.task == "vqa" and loaded.cfg.text.positions == 64
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    del state["text_decoder.bert.encoder.layer.1.crossattention.self.value.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_model(state, vision_heads=4, text_heads=4)


# ---------------------------------------------------------------------------------------- data forms

def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def vqa_v2(tmp_path):
    """A tiny VQA v2 split in the official layout: questions + annotations JSON, COCO-named images."""
    (tmp_path / "val2014").mkdir()
    for image_id, colour in ((42, "red"), (7, "blue")):
        (tmp_path / f"val2014/COCO_val2014_{image_id:012d}.jpg").write_bytes(_jpeg(colour))
    questions = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What color is it?", "question_id": 420},
        {"image_id": 42, "question": "Is it red?", "question_id": 421},
        {"image_id": 7, "question": "What color is it?", "question_id": 70},
        {"image_id": 99, "question": "Where is the image?", "question_id": 990}]}
    annotations = {"annotations": [
        {"question_id": q, "image_id": i, "answer_type": t, "question_type": qt, "multiple_choice_answer": a[0],
         "answers": [{"answer": x, "answer_confidence": "yes", "answer_id": j + 1} for j, x in enumerate(a)]}
        for q, i, t, qt, a in ((420, 42, "other", "what color is", ["red"] * 9 + ["orange"]),
                               (421, 42, "yes/no", "is it", ["yes"] * 10),
                               (70, 7, "other", "what color is", ["blue"] * 10),
                               (990, 99, "other", "where is", ["nowhere"] * 10))]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    return tmp_path


def test_vqa_v2_json_is_ingested_by_image_with_a_missing_image_skipped_and_counted(vqa_v2, params):
    manifest = ingest_vqa([str(vqa_v2 / "q.json"), str(vqa_v2 / "a.json")], str(vqa_v2), vqa_v2 / "out",
                          dataclasses.replace(params.ingest, max_skip_fraction=0.5), shard_size=10)
    assert manifest["samples"] == 2 and manifest["questions"] == 3
    assert manifest["skipped"] == {"missing_file": 1}
    assert manifest["skip_examples"][0]["file"] == "val2014/COCO_val2014_000000000099.jpg"
    from blip.data.finished import iter_samples

    by_image = {s["json"]["image"]: s["json"]["questions"] for s in iter_samples(vqa_v2 / "out")}
    red = by_image["val2014/COCO_val2014_000000000042.jpg"]
    assert [q["question_id"] for q in red] == [420, 421]
    assert red[0]["answers"].count("red") == 9 and red[0]["answer_type"] == "other"


def test_the_release_vqa_json_reads_with_visual_genome_answers_and_test_questions(tmp_path):
    (tmp_path / "vqa_train.json").write_text(json.dumps([
        {"question_id": 1, "question": "what is it?", "answer": ["cat", "cat", "kitten"],
         "image": "train2014/a.jpg", "dataset": "vqa"},
        {"question_id": 2, "question": "what colour?", "answer": ["black"], "image": "vg/b.jpg", "dataset": "vg"}]))
    (tmp_path / "vqa_test.json").write_text(json.dumps([
        {"question_id": 3, "question": "how many?", "image": "test2015/c.jpg", "dataset": "vqa"}]))
    records = list(read_vqa_files([str(tmp_path / "vqa_train.json"), str(tmp_path / "vqa_test.json")]))
    assert [(r["image"], r["source"], r["answers"]) for r in records] == [
        ("train2014/a.jpg", "vqa", ["cat", "cat", "kitten"]), ("vg/b.jpg", "vg", ["black"]),
        ("test2015/c.jpg", "vqa", [])]


def test_a_file_of_no_vqa_form_is_refused_by_name(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps({"images": [], "annotations_of": []}))
    with pytest.raises(VQAFormatError, match="captions.json: neither a VQA v2"):
        list(read_vqa_files([str(tmp_path / "captions.json")]))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(VQAFormatError, match="broken.json: not readable JSON"):
        list(read_vqa_files([str(tmp_path / "broken.json")]))
    (tmp_path / "q.json").write_text(json.dumps({"data_subtype": "val2014", "questions": [{"question_id": 1}]}))
    with pytest.raises(VQAFormatError, match="q.json: a VQA v2 question .* without a usable 'image_id'"):
        list(read_vqa_files([str(tmp_path / "q.json")]))


def test_world_questions_are_true_of_their_scenes(params):
    import numpy as np

    from blip.world.scene import sample_scene
    from blip.world.vqa import world_questions

    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng, 3)
        for q in world_questions(scene, rng, 4):
            words = q["question"].split()
            if q["question_type"] == "count":
                assert q["answer"] == str(len(scene.objects))
            elif q["question_type"] == "colour":
                assert any(o.shape == words[-1] and o.colour == q["answer"] for o in scene.objects)
            elif q["question_type"] == "shape":
                assert any(o.colour == words[-2] and o.shape == q["answer"] for o in scene.objects)
            elif q["question_type"] == "exists":
                truth = any((o.colour, o.shape) == (words[-2], words[-1]) for o in scene.objects)
                assert q["answer"] == ("yes" if truth else "no")
            elif q["question_type"] == "background":
                assert q["answer"] == scene.background


# ---------------------------------------------------------------------------------------- the stage

@pytest.mark.slow
def test_the_vqa_stage_fine_tunes_from_each_model_scores_them_and_blip_ask_answers(tmp_path):
    raw = raw_params()
    raw["world"].update(image_size=32, vqa={"train": 24, "test": 8, "questions_per_image": 3})
    raw["presets"]["tiny"]["finetune_vqa"].update(image_size=32, batch_size=8, epochs=1, steps_per_epoch=3)
    params = params_from_dict(raw)
    blip = downstream_workspace(tmp_path, raw)

    made = blip("downstream-data", "vqa", "--out", "data/vqa")
    assert "downstream-data vqa: {'train': 72, 'test': 24} (world)" in made
    out = blip("downstream", "vqa", "--from", "baseline=a", "bootstrapped=b", "--procs", "1")
    assert "[vqa_baseline] epoch 1/1 step 3/3" in out and "[vqa_bootstrapped] epoch 1/1 step 3/3" in out
    result = json.loads((tmp_path / "metrics/downstream/vqa.json").read_text())
    assert result["test_questions"] == 24 and result["inference"] == params.active.finetune_vqa.inference
    for name, source in (("baseline", "a"), ("bootstrapped", "b")):
        assert result[name]["from"] == source and 0 <= result[name]["overall"] <= 100
        assert set(result[name]["per_answer_type"]) <= {"number", "other", "yes/no"}
    assert 0 < result["chance"]["prior"]["overall"] < 100
    answers = json.loads((tmp_path / "models/vqa/baseline/answer_list.json").read_text())
    assert "yes" in answers and "no" in answers

    (tmp_path / "img.jpg").write_bytes(_jpeg("red"))
    lines = blip("ask", "img.jpg", "is there a red circle", "how many objects are there",
                 "--model", "models/vqa/baseline").strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["is there a red circle", "how many objects are there"]
    assert all(line.split("\t")[1] in answers for line in lines)
