"""Evaluation: pycocoevalcap metrics, retrieval recalls, and a whole model on a test split."""

import json

import pytest
import torch

from blip.evaluate.captioning import score_captions, spice_status
from blip.evaluate.retrieval import recall_at_k


@pytest.mark.slow
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
    # one figure when one is asked for (the gate and the chance level want CIDEr alone, without METEOR's JVM)
    assert score_captions(refs, {"a": "a red circle", "b": "a blue square"}, ("CIDEr",)).keys() == {"CIDEr"}
    with pytest.raises(ValueError, match="unknown caption metric.*'Cider'"):
        score_captions(refs, {"a": "x", "b": "y"}, ("Cider",))


def test_recall_at_k():
    # 3 images with 2 captions each; image i's captions are texts 2i and 2i+1
    txt2img = [0, 0, 1, 1, 2, 2]
    perfect_i2t = torch.tensor([[9, 8, 0, 0, 0, 0], [0, 0, 9, 8, 0, 0], [0, 0, 0, 0, 9, 8]], dtype=torch.float)
    r = recall_at_k(perfect_i2t, perfect_i2t.T.contiguous(), txt2img)
    assert r["txt_r1"] == r["img_r1"] == r["r_mean"] == 100.0
    shifted = perfect_i2t.roll(2, dims=1)  # every image prefers the next image's captions
    r = recall_at_k(shifted, shifted.T.contiguous(), txt2img)
    assert r["txt_r1"] == 0.0 and r["txt_r5"] == 100.0


@pytest.mark.slow
def test_evaluate_command_on_a_test_split(tmp_path, prepared):
    from blip.cli import main
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    save_pretrained(tiny("pretrain"), tmp_path / "model", build_tokenizer())
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(prepared / "human/test"),
                 "--metrics", str(out), "--k-test", "4", "--limit", "6"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 6 and metrics["texts"] == 30
    for key in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L", "txt_r1", "img_r10", "r_mean"):
        assert key in metrics


@pytest.mark.slow
def test_evaluation_across_two_torchrun_ranks_gives_the_one_process_figures(tmp_path, prepared):
    import os
    import subprocess
    import sys

    from blip.cli import main
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.support import ROOT, tiny

    model = tmp_path / "model"
    save_pretrained(tiny("pretrain"), model, build_tokenizer())
    args = ["evaluate", "--model", str(model), "--data", str(prepared / "human/test"), "--k-test", "4"]
    assert main([*args, "--metrics", str(tmp_path / "one.json")]) == 0
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "blip.cli", *args, "--metrics", str(tmp_path / "two.json")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["ranks"] == 1 and two["ranks"] == 2
    figures = [k for k, v in one.items() if isinstance(v, float)]
    assert {"CIDEr", "txt_r1", "img_r1", "r_mean"} <= set(figures)
    assert {k: two[k] for k in figures} == {k: one[k] for k in figures}  # each rank re-ranked half the rows


def test_evaluation_ranks_without_a_rendezvous_are_refused():
    from blip.launch import Ranks, join_process_group

    with pytest.raises(ValueError, match="torchrun or the DeepSpeed launcher"):
        join_process_group(Ranks(3, 8, 0, "slurm"), torch.device("cpu"))
    join_process_group(Ranks(0, 1, 0, "none"), torch.device("cpu"))  # a world of one needs no group
