"""The Prefect flow over the real DVC pipeline, against Prefect's test API server: each flow run is one
DVC experiment, and the workspace's params.yaml is never written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.support import ROOT, experiments, flow_run_of, git_repo, pipeline_checkout, raw_params

pytestmark = pytest.mark.slow


def _repo(tmp_path: Path, **contracts) -> Path:
    repo = pipeline_checkout(tmp_path)
    raw = raw_params()
    raw["world"]["human"] = {"train": 20, "val": 6, "test": 6}
    raw["world"]["web"].update(images=30, shard_size=15)
    raw["contracts"].update(image_sample=10, **contracts)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    git_repo(repo)
    return repo


def test_deployment_carries_its_data_parameters(prefect_api):
    from prefect.client.orchestration import get_client

    from flows.serve import deployment

    deployment_id = deployment(web_shards="s3://bucket/web/{00000..00009}.tar").apply()
    with get_client(sync_client=True) as client:
        created = client.read_deployment(deployment_id)
    assert created.name == "nightly" and created.schedules[0].schedule.cron == "0 2 * * *"
    # written out, nulls included: a scheduled run never takes them from an earlier run's params
    assert created.parameters == {"web_shards": "s3://bucket/web/{00000..00009}.tar", "human_karpathy": None,
                                  "human_images": None, "recipe": None}


def test_removed_keys_and_long_values_are_logged_as_mlflow_accepts_them(tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Param

    from flows.pipeline import mlflow_params

    logged = mlflow_params({"~downstream.video.qa": None, "select.threshold": 0.3, "data.web_shards": "s" * 7000})
    assert logged == {"downstream/video/qa": "(removed)", "select/threshold": "0.3", "data/web_shards": "s" * 6000}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")  # a store of its own: no process-wide state touched
    run = client.create_run(client.create_experiment("flow-parameters"))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in logged.items()])
    assert client.get_run(run.info.run_id).data.params == logged


def test_two_flow_runs_are_two_dvc_experiments_and_params_yaml_stays(prefect_api, tmp_path, monkeypatch):
    from flows.pipeline import pipeline

    repo = _repo(tmp_path)
    before, metrics = (repo / "params.yaml").read_bytes(), sorted((repo / "metrics").rglob("*"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    first = pipeline(stages=["validate_web"], threshold=0.6, rounds=2, repo=str(repo))
    second = pipeline(stages=["validate_web"], overrides={"world.web.noise_fraction": 0.2}, repo=str(repo))
    # the workspace is as it was: each run's outputs are its experiment's
    assert (repo / "params.yaml").read_bytes() == before and sorted((repo / "metrics").rglob("*")) == metrics
    found = experiments(repo)
    one, two = found[first["experiment"]]["params"], found[second["experiment"]]["params"]
    assert found[second["experiment"]]["rev"] == second["rev"]
    assert one["rounds"] == 2 and one["select"]["threshold"] == 0.6 and one["select"]["calibrate"] is False
    assert one["world"]["web"]["noise_fraction"] == 0.4 and two["world"]["web"]["noise_fraction"] == 0.2
    assert two["rounds"] == 1 and two["select"]["calibrate"] is True
    # the experiment's own outputs, cross-linked with MLflow and Prefect
    report = json.loads(subprocess.run(["git", "show", f"{second['rev']}:metrics/validate_web.json"], cwd=repo,
                                       capture_output=True, text=True, check=True).stdout)
    assert report["success"] is True
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlruns.db")
    runs = mlflow.search_runs(experiment_names=["blip-capfilt"])
    parent = runs[runs["tags.dvc_experiment"] == second["experiment"]].iloc[0]
    assert parent["tags.dvc_experiment_rev"] == second["rev"] and parent["run_id"] == second["mlflow_run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert set(children["tags.stage"]) == {"validate_web", "validate_human"}
    assert f"mlflow_run_id:{second['mlflow_run_id']}" in flow_run_of(second["experiment"]).tags


def test_a_bad_parameter_fails_the_flow_before_any_stage(prefect_api, tmp_path):
    from flows.pipeline import pipeline

    repo = _repo(tmp_path)
    state = pipeline(overrides={"select.target_precision": 2.0}, repo=str(repo), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="select.target_precision"):
        state.result()
    assert not experiments(repo) and not (repo / "data").exists()


def test_a_failed_contract_fails_the_flow_and_says_why(prefect_api, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.pipeline import pipeline

    repo = _repo(tmp_path, max_words=2)  # every caption is longer: the web contract fails
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    state = pipeline(stages=["pretrain"], repo=str(repo), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="contract 'web' FAILED"):
        state.result()
    assert not experiments(repo)  # a failed experiment is not saved
    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_artifacts()
                     if a.key == "failure" and a.flow_run_id == state.state_details.flow_run_id]
    # the contract's explanation, in the flow run: value, bounds and the param that sets them
    assert artifacts and "allowed [1, 2] (set by contracts.min_words, contracts.max_words)" in artifacts[0].data


def test_every_recipe_is_valid_params_and_a_tilde_key_removes_a_parameter_in_dvc_as_in_the_check():
    from blip.params import params_from_dict
    from flows.experiment import apply_overrides, load_recipe, set_param_args

    for recipe in sorted((ROOT / "flows/recipes").glob("*.yaml")):
        overrides = load_recipe(recipe)
        params = params_from_dict(apply_overrides(raw_params(), overrides, recipe.name), recipe.name)
        if "~downstream.video.qa" in overrides:  # the real-data recipes: no built-in-world transfer task
            assert params.downstream.video == {} and params.downstream.tasks == []
    assert set_param_args({"~downstream.video.qa": None, "seed": 3}) == ["-S", "~downstream.video.qa", "-S", "seed=3"]
    with pytest.raises(ValueError, match="no parameter 'downstream.video.nothing' in params.yaml to remove"):
        apply_overrides(raw_params(), {"~downstream.video.nothing": None}, "a recipe")


def _kill_capfilt_mid_run(tables: Path, log: list) -> None:
    """Wait for CapFilt's first finished table (out of six), then SIGKILL its driver: a node lost mid-scoring."""
    import time

    import psutil

    deadline = time.time() + 900
    while time.time() < deadline:
        done = list(tables.rglob("scores-*.parquet"))
        if done:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = proc.info["cmdline"] or []
                if any(part.endswith("blip") for part in cmd) and "capfilt" in cmd:
                    log.append(len(done))
                    proc.kill()
                    return
        time.sleep(0.05)


@pytest.mark.timeout(1500)
def test_a_flow_run_killed_while_scoring_is_retried_and_scores_only_the_missing_shards(prefect_api, tmp_path,
                                                                                      monkeypatch):
    import threading

    from prefect.client.orchestration import get_client

    from flows.pipeline import pipeline
    from tests.support import small_training_params

    repo = pipeline_checkout(tmp_path)
    raw = yaml.safe_load(small_training_params(tmp_path).read_text())
    raw["world"].update(image_size=64, human={"train": 16, "val": 6, "test": 6},
                        web={**raw["world"]["web"], "images": 48, "shard_size": 8})  # six shards to score
    raw["capfilt"].update(batch_size=4, max_length=10, workers=1, cpus_per_worker=1)
    raw["gates"]["on_fail"] = "warn"  # models of 8 steps are near chance; the gates are test_gates' business
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    git_repo(repo)
    tables = tmp_path / "cache"
    monkeypatch.setenv("BLIP_CACHE", str(tables))  # where CapFilt files its tables, outside the experiment's folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    killed: list = []
    killer = threading.Thread(target=_kill_capfilt_mid_run, args=(tables, killed), daemon=True)
    killer.start()
    result = pipeline(stages=["capfilt"], repo=str(repo), retry_delay_s=1.0)
    killer.join(timeout=5)
    assert killed and 0 < killed[0] < 6, killed  # the first attempt died with some shards scored, not all
    metrics = json.loads(subprocess.run(["git", "show", f"{result['rev']}:metrics/capfilt.json"], cwd=repo,
                                        capture_output=True, text=True, check=True).stdout)
    # the retry ran in a fresh experiment folder, found the tables of the same job and scored only the rest
    assert metrics["shards"] == 6 and metrics["shards_resumed"] >= killed[0] and metrics["shards_resumed"] < 6
    assert metrics["images"] == 48 and len(list(tables.rglob("scores-*.parquet"))) == 6
    run = flow_run_of(result["experiment"])
    with get_client(sync_client=True) as client:
        attempts = [t for t in client.read_task_runs() if t.flow_run_id == run.id]
        # a keyed artifact's latest version (the retry made its own): what the UI shows
        artifacts = {a.key: a for a in sorted(client.read_artifacts(), key=lambda a: a.created)
                     if a.flow_run_id == run.id}
    assert [t.run_count for t in attempts] == [2]  # one task run, at stage level, retried once
    # while it scored, the flow run showed CapFilt's progress: a bar and the figures, updated as shards finished
    assert artifacts["capfilt-progress"].data == 100.0
    assert "6 of 6 shards" in artifacts["capfilt-status"].data and "images/s" in artifacts["capfilt-status"].data


def test_a_stage_killed_by_a_signal_is_worth_a_retry_and_a_failed_gate_or_contract_is_not():
    from flows.pipeline import _is_transient

    warned = "gate filter: FAILED for models/filter:\n  (gates.on_fail=warn: going on)\n"
    killed = "ERROR: failed to reproduce 'capfilt': failed to run: blip capfilt ..., exited with -9"
    assert _is_transient(255, warned + killed)  # a gate that only warned earlier does not make a kill final
    assert not _is_transient(255, "contract 'bootstrapped' FAILED for data/bootstrapped:\n  summary: ...")
    assert not _is_transient(255, "gate filter: FAILED for models/filter:\n  - the filter's ITM AUC ...")
    assert _is_transient(255, "sqlite3.OperationalError: database is locked")
