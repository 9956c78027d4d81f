"""Later bootstrapping rounds (`blip rounds`, the `rounds` stage), started from a finished round 1.

Round 1 is the main chain (tests/test_pipeline_dvc.py and the own-data flow run it through DVC); here its
outputs are laid down as the chain leaves them (the prepared data, the retrained model, the captioner and
filter fine-tuned from it, their figures), and round 2 runs from them: gates, CapFilt with round 1's models,
selection, the audit, the contract, a new model pre-trained from scratch, its captioner and filter, their
evaluation. The registry then holds round 2's models.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from blip.capfilt.scoring import model_id
from blip.models.blip import Blip, BlipConfig
from blip.models.checkpoints import save_pretrained
from blip.params import load_params
from blip.tokenizer import build_tokenizer
from tests.support import small_training_params

pytestmark = pytest.mark.slow

# round 1's figures, as its stages write them (only the keys the rounds table and the registry read)
ROUND_ONE = {
    "select": {"web_removed_share": 0.4, "noise_ratio": 0.2},
    "audit": {"world": True, "selection": {"web": {"noisy_texts": {"precision": 0.5, "recall": 0.5}}}},
    "eval_bootstrapped_captioner": {"CIDEr": 0.1, "BLEU-4": 0.01},
    "eval_bootstrapped_filter": {"txt_r1": 10.0, "img_r1": 10.0, "r_mean": 20.0},
}


def finished_round_one(workspace: Path, prepared: Path, params_path: Path) -> None:
    """The main chain's outputs that round 2 reads, in a workspace of its own."""
    shutil.copytree(prepared, workspace / "data", symlinks=True)  # data/human, data/web, data/world
    params = load_params(params_path)
    arch = params.active.model
    tokenizer = build_tokenizer(params.tokenizer.vocab)
    for task, folder in (("pretrain", "retrain"), ("captioner", "captioner_retrain"), ("filter", "filter_retrain")):
        torch.manual_seed(0)
        model = Blip(BlipConfig(task=task, image_size=64, vision=arch.vision, text=arch.text,
                                embed_dim=arch.embed_dim, queue_size=arch.queue_size))
        save_pretrained(model, workspace / "models" / folder, tokenizer)
    (workspace / "metrics").mkdir()
    for name, figures in ROUND_ONE.items():
        (workspace / "metrics" / f"{name}.json").write_text(json.dumps(figures))


def blip(args: list[str], workspace: Path) -> str:
    """A `blip` command in the workspace, as the `rounds` and `register` stages run it; its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlruns.db"}
    proc = subprocess.run([sys.executable, "-m", "blip.cli", "--params", "params.yaml", *args], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"blip {args[0]} (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.timeout(1500)
def test_round_two_bootstraps_with_round_ones_models_and_the_registry_holds_its_models(tmp_path, prepared):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    params_path = small_training_params(tmp_path)
    raw = yaml.safe_load(params_path.read_text())
    raw["rounds"] = 2
    raw["train"].update(procs=1, log_every=2, checkpoint_every=100)
    raw["capfilt"].update(batch_size=16, max_length=10)
    raw["select"].update(threshold=0.3, calibrate=False)
    # models of 8 steps are near chance: the gates record it and the round goes on, the contract's share bounds
    # are opened (test_gates and test_contracts cover both)
    raw["gates"]["on_fail"] = "warn"
    raw["contracts"].update(synthetic_share=[0.0, 1.0], web_removed_share=[0.0, 1.0], noise_ratio=[0.0, 1.0])
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    finished_round_one(workspace, prepared, workspace / "params.yaml")

    out = blip(["rounds", "--out", "rounds", "--metrics", "metrics/rounds.json"], workspace)
    assert "round 2: capfilt" in out and "round 2: evaluate_filter" in out
    # round 2 bootstrapped with the models fine-tuned from round 1's retrained model
    round2 = json.loads((workspace / "rounds/r2/data/bootstrapped/manifest.json").read_text())["selection"]
    assert round2["round"] == 2
    assert round2["captioners"] == [model_id(str(workspace / "models/captioner_retrain"))]
    assert round2["filters"] == [model_id(str(workspace / "models/filter_retrain"))]
    rounds = json.loads((workspace / "metrics/rounds.json").read_text())
    assert [row["round"] for row in rounds["per_round"]] == [1, 2]
    assert all("noisy_web_precision" in row for row in rounds["per_round"])  # each round audited
    assert rounds["per_round"][0]["r_mean"] == ROUND_ONE["eval_bootstrapped_filter"]["r_mean"]
    assert (workspace / "rounds/r2/models/filter/model.safetensors").is_file()
    assert "| round |" in (workspace / "rounds/rounds.md").read_text()

    # the registry holds the last round's models: round 2's new model, the captioner and filter that bootstrapped
    # its data
    from mlflow import MlflowClient

    blip(["register", "--metrics", "metrics/register.json", "--rounds-dir", "rounds"], workspace)
    client = MlflowClient(f"sqlite:///{workspace}/mlruns.db")
    folders = {d["name"]: client.get_model_version(d["name"], d["version"]).tags["model_folder"]
               for d in json.loads((workspace / "metrics/register.json").read_text())["decisions"]}
    assert folders == {"blip-pretrained": "rounds/r2/models/pretrain", "blip-captioner": "models/captioner_retrain",
                       "blip-filter": "models/filter_retrain"}
