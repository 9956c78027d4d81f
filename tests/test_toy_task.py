"""A task added as one folder (tests/toy_task/, laid out as a folder under blip/tasks/): registered, trained for a
few steps by the generic engine from a pre-trained model, and scored through the registry's stage hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from blip.models.blip import Blip, BlipConfig
from blip.models.checkpoints import load_model, save_pretrained
from blip.params import load_params
from blip.tasks import registry
from blip.tokenizer import build_tokenizer
from tests.support import small_training_params
from tests.toy_task.task import TASK

ROOT = Path(__file__).resolve().parents[1]


def with_toy_section(params_path: Path, **changes) -> dict:
    """The params file with the toy task's stage section in every preset: the captioner's settings, 2 negatives."""
    raw = yaml.safe_load(params_path.read_text())
    for preset in raw["presets"].values():
        preset["finetune_toy"] = {**preset["finetune_captioner"], "negatives": 2, **changes}
    params_path.write_text(yaml.safe_dump(raw))
    return raw["presets"][raw["preset"]]


def test_a_toy_task_in_its_own_folder_trains_and_scores(tmp_path, prepared, monkeypatch):
    params_path = small_training_params(tmp_path)
    with_toy_section(params_path)
    monkeypatch.setitem(registry.TASKS, "toy", TASK)  # the line the registry would gain
    params = load_params(params_path)
    assert params.active.finetune_toy.negatives == 2  # its section, declared in its folder, read and checked
    arch = params.active.model
    torch.manual_seed(0)
    pretrained = Blip(BlipConfig(task="pretrain", image_size=64, vision=arch.vision, text=arch.text,
                                 embed_dim=arch.embed_dim, queue_size=arch.queue_size))
    save_pretrained(pretrained, tmp_path / "pretrain", build_tokenizer(params.tokenizer.vocab))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db"}
    out = subprocess.run([sys.executable, "-m", "tests.toy_task", str(params_path), str(tmp_path / "pretrain"),
                          str(prepared / "human"), str(tmp_path / "models"), "3"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert 0 <= result["base"]["accuracy"] <= 100 and result["chance"] == 50.0

    # the engine ran the toy task's own inputs and loss, for the steps asked
    trained = json.loads((tmp_path / "models/base_train.json").read_text())
    assert trained["steps"] == 3 and torch.isfinite(torch.tensor(trained["final_match"]))

    # the model folder loads as the toy task's class, with the head of its own beside the shared parts
    import tests.toy_task.model  # noqa: F401  (registers the class, as the registry does)

    model = load_model(tmp_path / "models/base")
    assert type(model).__name__ == "BlipToy" and model.cfg.task == "toy"
    assert {k for k in model.state_dict() if not k.startswith(("visual_encoder.", "text_encoder."))} == {
        "match_head.weight", "match_head.bias"}


def test_a_task_the_registry_does_not_hold_is_refused_by_name(tmp_path, capsys):
    from blip.cli import main

    assert main(["downstream-data", "toy", "--out", str(tmp_path / "toy")]) == 2
    err = capsys.readouterr().err
    assert "no transfer task 'toy': known are vqa, nlvr, dialog" in err and not (tmp_path / "toy").exists()


def test_the_toy_tasks_section_is_checked_like_every_other(tmp_path, monkeypatch):
    params_path = small_training_params(tmp_path)
    with_toy_section(params_path, negatives=0)
    with pytest.raises(ValueError, match="presets.tiny.finetune_toy: unknown key"):
        load_params(params_path)  # not in the registry: its section is a typo like any other

    monkeypatch.setitem(registry.TASKS, "toy", TASK)
    with pytest.raises(ValueError, match=r"presets.tiny.finetune_toy.negatives: Input should be greater than 0, got 0"):
        load_params(params_path)
    raw = yaml.safe_load(params_path.read_text())
    del raw["presets"]["tiny"]["finetune_toy"]
    params_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="presets.tiny.finetune_toy: missing"):
        load_params(params_path)
