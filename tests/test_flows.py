"""The Prefect flow over the real DVC pipeline, against Prefect's test API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import pipeline_checkout, raw_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _repo(tmp_path: Path, **contracts) -> Path:
    repo = pipeline_checkout(tmp_path)
    raw = raw_params()
    raw["world"]["human"] = {"train": 20, "val": 6, "test": 6}
    raw["world"]["web"].update(images=30, shard_size=15)
    raw["contracts"].update(image_sample=10, **contracts)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    (repo / ".gitignore").write_text("mlruns.db\nmlruns/\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo


def test_deployment_with_a_schedule_is_created(prefect_api):
    from prefect.client.orchestration import get_client

    from flows.serve import deployment

    deployment_id = deployment().apply()
    with get_client(sync_client=True) as client:
        created = client.read_deployment(deployment_id)
    assert created.name == "nightly" and created.schedules
    assert created.schedules[0].schedule.cron == "0 2 * * *"


def test_flow_runs_stages_through_dvc_with_nested_mlflow_runs(prefect_api, tmp_path, monkeypatch):
    from flows.pipeline import pipeline

    repo = _repo(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    state = pipeline(stages=["prepare", "validate_web"], threshold=0.6, rounds=2, capfilt_procs=3, repo=str(repo),
                     return_state=True)
    assert state.is_completed(), state
    assert (repo / "metrics/validate_web.json").is_file() and "preset: tiny" in (repo / "params.yaml").read_text()
    written = yaml.safe_load((repo / "params.yaml").read_text())  # flow parameters reach DVC as params
    assert written["rounds"] == 2 and written["capfilt"]["procs"] == 3
    assert written["select"]["threshold"] == 0.6 and written["select"]["calibrate"] is False
    mlflow.set_tracking_uri(f"sqlite:///{repo}/mlruns.db")
    runs = mlflow.search_runs(experiment_names=["blip-capfilt"])
    parent = runs[runs["tags.prefect_flow_run_id"].notna()].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert set(children["tags.stage"]) == {"validate_web", "validate_human"}


def test_a_failed_contract_fails_the_flow_before_training(prefect_api, tmp_path, monkeypatch):
    from flows.pipeline import pipeline

    repo = _repo(tmp_path, max_words=2)  # every caption is longer: the web contract fails
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    state = pipeline(stages=["prepare", "validate_web", "pretrain"], repo=str(repo), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="validate_web"):
        state.result()
    assert not (repo / "models/pretrain").exists()
