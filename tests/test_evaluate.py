"""Evaluation: pycocoevalcap metrics, retrieval recalls, and a whole model on a test split."""

import json

import pytest
import torch

from blip.evaluate.captioning import score_captions, spice_status
from blip.evaluate.retrieval import recall_at_k


def test_caption_metrics_reward_the_right_caption():
    refs = {"a": ["a red circle on a white background", "a red circle"],
            "b": ["a small blue square above a green star", "two shapes, a blue square and a green star"]}
    perfect = score_captions(refs, {"a": "a red circle on a white background",
                                    "b": "a small blue square above a green star"})
    wrong = score_captions(refs, {"a": "a dog in a park", "b": "people riding bikes"})
    assert perfect["BLEU-4"] > 0.9 and perfect["CIDEr"] > 2 * max(wrong["CIDEr"], 0.1)
    assert perfect["METEOR"] > wrong["METEOR"] and perfect["ROUGE-L"] > wrong["ROUGE-L"]
    ok, why = spice_status()
    assert ("SPICE" in perfect) if ok else perfect["SPICE_skipped"] == why


def test_recall_at_k():
    # 3 images with 2 captions each; image i's captions are texts 2i and 2i+1
    txt2img = [0, 0, 1, 1, 2, 2]
    perfect_i2t = torch.tensor([[9, 8, 0, 0, 0, 0], [0, 0, 9, 8, 0, 0], [0, 0, 0, 0, 9, 8]], dtype=torch.float)
    r = recall_at_k(perfect_i2t, perfect_i2t.T.contiguous(), txt2img)
    assert r["txt_r1"] == r["img_r1"] == r["r_mean"] == 100.0
    shifted = perfect_i2t.roll(2, dims=1)  # every image prefers the next image's captions
    r = recall_at_k(shifted, shifted.T.contiguous(), txt2img)
    assert r["txt_r1"] == 0.0 and r["txt_r5"] == 100.0


def test_evaluate_command_on_a_test_split(tmp_path, prepared):
    from blip.cli import main
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.test_models import tiny

    save_pretrained(tiny("pretrain"), tmp_path / "model", build_tokenizer())
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(prepared / "human/test"),
                 "--metrics", str(out), "--k-test", "4", "--limit", "6"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 6 and metrics["texts"] == 30
    for key in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L", "txt_r1", "img_r10", "r_mean"):
        assert key in metrics
