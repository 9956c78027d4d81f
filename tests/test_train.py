"""The training engine through the real DeepSpeed launcher (2 CPU processes, gloo) and real MLflow."""

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from blip.train.engine import cpu_has_bf16
from tests.support import ROOT, in_process, small_training_params

pytestmark = pytest.mark.slow


def blip_cmd(params: Path, stage: str, out: Path, data: list[Path], *extra: str, procs: int = 2) -> list[str]:
    return [sys.executable, "-m", "blip.cli", "--params", str(params), stage, "--procs", str(procs),
            "--data", *map(str, data), "--out", str(out / "model"), "--ckpt-dir", str(out / "ckpt"),
            "--metrics", str(out / "metrics.json"), "--plot", str(out / "loss.csv"), *extra]


def run(cmd: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prepared):
    tmp = tmp_path_factory.mktemp("train")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlruns.db"}
    return tmp, small_training_params(tmp), env, [prepared / "human/train", prepared / "web"]


def test_killed_run_resumes_to_the_same_weights_and_is_tracked(setup):
    tmp, params, env, data = setup
    straight, resumed = tmp / "straight", tmp / "resumed"
    out = run(blip_cmd(params, "pretrain", straight, data), env, tmp)
    assert "step 8/8" in out.stdout
    # the ranks' shared-memory all-reduce buffers are gone with the run, not left in RAM
    port = re.search(r"--master_port (\d+)", out.stdout).group(1)
    assert not glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*")

    # the same run, killed (the launcher and both ranks) once the step-3 checkpoint is written
    proc = subprocess.Popen(blip_cmd(params, "pretrain", resumed, data), env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (resumed / "ckpt/latest").is_file():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (resumed / "ckpt/latest").read_text().strip() == "step00000003"
    assert not (resumed / "model").exists()
    again = run(blip_cmd(params, "pretrain", resumed, data), env, tmp)
    assert "resuming at micro-step 3" in again.stdout  # mid-epoch: 4 steps per epoch

    a, b = load_file(straight / "model/model.safetensors"), load_file(resumed / "model/model.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    assert any(k.startswith("visual_encoder_m.") for k in a) and "image_queue" in a and "queue_ptr" in a

    # MLflow: params, lineage tags, per-step metrics and artifacts of the uninterrupted run
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["blip-capfilt"], output_format="list",
                              order_by=["attributes.start_time ASC"])
    first = runs[0]
    assert first.info.status == "FINISHED" and first.info.run_name == "pretrain"
    p = first.data.params
    assert p["pretrain.lr"] == "0.0003" and p["architecture.vision.width"] == "64" and p["world_size"] == "2"
    assert p["precision"] == ("bf16-autocast" if cpu_has_bf16() else "fp32")  # train.bf16 on a CPU
    assert first.data.tags["git_commit"] != "" and any(k.endswith("manifest_sha256") for k in first.data.tags)
    itc = client.get_metric_history(first.info.run_id, "train/itc")
    assert [m.step for m in itc] == list(range(1, 9))
    for name in ("train/lr", "train/samples_per_s", "train/memory_mb", "train/lm", "train/itm"):
        assert client.get_metric_history(first.info.run_id, name)
    artifacts = {a.path for a in client.list_artifacts(first.info.run_id)}
    assert {"resolved_config.json", "metrics.json", "plots"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.info.run_id, "plots")} >= {"plots/loss.png", "plots/loss.csv"}
    # the killed attempt stays visible as a failed or unfinished run; the resumed one says where it began
    assert runs[-1].data.params["resumed_from"] == "step00000003"


def test_zero_partitions_only_across_processes(tmp_path):
    from blip.params import load_params
    from blip.tasks.pretrain.training import TRAIN
    from blip.train.engine import TrainJob, deepspeed_config

    params = load_params(small_training_params(tmp_path))
    job = TrainJob("pretrain", TRAIN, params.active.pretrain, params, [], tmp_path, tmp_path)
    assert deepspeed_config(job, bf16=False, world=2)["zero_optimization"]["stage"] == params.train.zero_stage == 2
    assert deepspeed_config(job, bf16=False, world=1)["zero_optimization"]["stage"] == 0  # nothing to shard


def test_fine_tuning_stages_start_from_the_pretrained_model(setup, monkeypatch):
    from blip.cli import main

    tmp, params, env, data = setup
    base = tmp / "straight/model"
    if not base.exists():
        pytest.skip("needs the pre-trained model of the resume test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    for stage, task in (("finetune_captioner", "captioner"), ("finetune_filter", "filter")):
        out = tmp / stage
        # one process, in this one: two ranks are the resume test's business
        in_process(main, blip_cmd(params, stage, out, data[:1], "--init-from", str(base), "--max-steps", "2",
                                  procs=1)[3:], tmp)
        cfg = yaml.safe_load((out / "model/config.json").read_text())
        assert cfg["task"] == task and cfg["init_from"] == str(base) and cfg["trained_steps"] == 2


def test_shared_captioner_filter_is_one_model_in_both_roles(setup, monkeypatch):
    """Table 4's ablation: finetune_filter trains one model with ITC, ITM and LM; finetune_captioner adopts it."""
    from PIL import Image

    from blip.cli import main
    from blip.inference import load

    tmp, params, env, data = setup
    base = tmp / "straight/model"
    if not base.exists():
        pytest.skip("needs the pre-trained model of the resume test")
    work = tmp / "shared"
    work.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    blip = ["--params", str(params)]
    refused = in_process(main, blip + ["finetune_captioner", "--models", "shared"], work, status=2)
    assert "models/filter holds no model: with capfilt.models = shared" in refused
    in_process(main, blip + ["finetune_filter", "--models", "shared", "--procs", "1", "--data", str(data[0]),
                             "--init-from", str(base), "--max-steps", "2"], work)
    history = (work / "plots/finetune_filter_loss.csv").read_text()
    assert {"itc", "itm", "lm"} <= set(history.splitlines()[0].split(","))  # all three losses trained
    in_process(main, blip + ["finetune_captioner", "--models", "shared"], work)

    captioner, filter_ = work / "models/captioner", work / "models/filter"
    assert load_file(captioner / "model.safetensors").keys() == load_file(filter_ / "model.safetensors").keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(captioner / "model.safetensors").values(),
                                                 load_file(filter_ / "model.safetensors").values()))
    assert yaml.safe_load((work / "metrics/finetune_captioner.json").read_text())["shared_with"] == "models/filter"
    model = load(captioner, device="cpu")
    assert model.model.cfg.task == "pretrain"  # encoder and decoder sharing all but self-attention
    image = Image.new("RGB", (64, 64), "red")
    assert isinstance(model.caption([image])[0][0], str)
    assert 0 <= model.score(image, ["a red square"])[0]["itm"] <= 1


def test_a_run_in_a_plain_process_leaves_no_launcher_variables_behind(setup, monkeypatch):
    """A notebook's (or a test's) training in its own process: its world of one is its own, so a command that
    process starts afterwards does not take itself for a launched rank on the finished run's port."""
    from blip.params import load_params
    from blip.tasks.captioner.training import TRAIN
    from blip.train.engine import LAUNCH_VARS, TrainJob, train

    tmp, params_path, env, data = setup
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    params = load_params(params_path)
    for run in ("first", "second"):  # the second run in the same process reuses the first one's group
        out = tmp / f"plain_{run}"
        train(TrainJob(run, TRAIN, params.active.finetune_captioner, params, [str(data[0])], out / "model",
                       out / "ckpt", max_steps=1, metrics_path=out / "metrics.json"))
        assert (out / "model/model.safetensors").is_file()
        assert [name for name in LAUNCH_VARS if name in os.environ] == []
