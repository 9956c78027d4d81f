"""Quality gates: a hopeless filter or captioner stops the chain right after its fine-tuning, saying what
was measured and what to try; calibration refuses a threshold that would remove nearly every text."""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
import pytest
import yaml

from blip.params import load_params
from blip.gates import filter_problems, filter_quality
from tests.support import ROOT, dvc_repo, pipeline_checkout, run_checked, scores_folder, small_training_params


def _params(**select):
    params = load_params(ROOT / "params.yaml")
    return dataclasses.replace(params, select=dataclasses.replace(params.select, **select))


def test_a_filter_that_ranks_true_pairs_first_passes():
    rng = np.random.default_rng(0)
    label = np.repeat([1, 0], 200)
    score = np.where(label == 1, rng.uniform(0.4, 1.0, 400), rng.uniform(0.0, 0.6, 400)).astype(np.float32)
    params = _params()
    measured = filter_quality(score, label, params)
    assert measured["itm_auc"] > 0.9 and measured["precision"] >= params.select.target_precision
    assert measured["recall"] > 0.5 and not filter_problems(measured, params, "val")


def test_a_filter_at_chance_fails_with_what_was_measured_and_the_param():
    rng = np.random.default_rng(1)
    label = np.repeat([1, 0], 200)
    params = _params()
    measured = filter_quality(rng.uniform(0, 1, 400).astype(np.float32), label, params)
    problems = filter_problems(measured, params, "data/human/val")
    assert any("ITM AUC on data/human/val is 0.4" in p or "ITM AUC on data/human/val is 0.5" in p for p in problems)
    assert any("gates.filter_min_auc 0.65" in p for p in problems)
    # at chance no threshold reaches precision 0.8 but a sliver at the top: recall is near zero
    assert measured["recall"] < 0.2 and any("gates.min_recall" in p and "true pairs" in p for p in problems)


def test_a_fixed_threshold_above_every_true_pair_keeps_nothing():
    label = np.repeat([1, 0], 50)
    score = np.where(label == 1, 0.45, 0.1).astype(np.float32)
    params = _params(calibrate=False, threshold=0.5)
    measured = filter_quality(score, label, params)
    assert measured["itm_auc"] == 1.0 and measured["recall"] == 0.0 and measured["precision"] is None
    assert any("select.threshold 0.5" in p for p in filter_problems(measured, params, "val"))


def test_calibration_refuses_a_threshold_with_recall_below_the_floor(tmp_path):
    from blip.selection.job import SelectJob, threshold_for

    scores_dir = scores_folder(tmp_path / "scores")
    manifest = json.loads((scores_dir / "manifest.json").read_text())
    params = load_params(ROOT / "params.yaml")
    strict = dataclasses.replace(params, select=dataclasses.replace(params.select, target_precision=0.99),
                                 gates=dataclasses.replace(params.gates, min_recall=0.9))
    job = SelectJob(strict, scores=str(scores_dir), human=[], output=tmp_path / "out")
    with pytest.raises(ValueError, match=r"keeps .*% of the true human val pairs \(val\), below gates.min_recall 0.9"):
        threshold_for(job, str(scores_dir), manifest)
    warned = dataclasses.replace(strict, gates=dataclasses.replace(strict.gates, on_fail="warn"))
    threshold, found = threshold_for(dataclasses.replace(job, params=warned), str(scores_dir), manifest)
    assert found["recall"] < 0.9 and found["precision"] >= 0.99 and threshold == found["threshold"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_hopeless_filter_stops_the_chain_within_a_minute_of_its_fine_tuning(tmp_path):
    repo = pipeline_checkout(tmp_path)
    raw = yaml.safe_load(small_training_params(tmp_path).read_text())
    raw["world"].update(image_size=64, human={"train": 24, "val": 8, "test": 8},
                        web={**raw["world"]["web"], "images": 24, "shard_size": 24})
    raw["presets"]["tiny"]["finetune_filter"].update(epochs=1, steps_per_epoch=1)  # one step: near chance
    raw["gates"]["filter_min_auc"] = 0.9  # far above what 9 steps reach, so no CPU's rounding lets it pass
    raw["contracts"]["image_sample"] = 10
    dvc_repo(repo, raw)
    run_checked([sys.executable, "-m", "dvc", "repro", "finetune_filter"], repo)
    start = time.monotonic()
    out = run_checked([sys.executable, "-m", "dvc", "repro"], repo, ok=False)
    assert time.monotonic() - start < 60
    assert "Running stage 'gate_filter'" in out and "gate filter: FAILED for models/filter" in out
    assert "below gates.filter_min_auc 0.9" in out and "more fine-tuning steps" in out
    assert "Running stage 'finetune_captioner'" not in out and not (repo / "models/captioner").exists()
    measured = json.loads((repo / "metrics/gate_filter.json").read_text())
    assert measured["passed"] is False and measured["itm_auc"] < 0.9 and measured["true_pairs"] == 40
