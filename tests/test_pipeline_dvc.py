"""The real DVC, in a temporary git repository: the data stages run, then a second repro is a no-op."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, raw_params


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_runs_data_stages_then_is_a_noop(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(ROOT / "blip", repo / "blip", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo)
    raw = raw_params()
    raw["world"]["human"] = {"train": 30, "val": 10, "test": 10}
    raw["world"]["web"].update(images=60, shard_size=30)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], repo)
    _run(dvc + ["init", "-q"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "init"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code"], repo)

    out = _run(dvc + ["repro", "prepare", "validate_web"], repo)
    assert "Running stage 'prepare'" in out and "Running stage 'validate_web'" in out
    metrics = json.loads((repo / "metrics/prepare.json").read_text())
    assert metrics["world"]["web"]["noise"]["clean"] == 36 and metrics["web"]["samples"] == 60
    assert json.loads((repo / "metrics/validate_web.json").read_text())["ok"] is True
    assert (repo / "dvc.lock").is_file()

    again = _run(dvc + ["repro", "prepare", "validate_web"], repo)
    assert "Running stage" not in again

    # a params change re-runs what depends on it
    raw["world"]["web"]["noise_fraction"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    changed = _run(dvc + ["repro", "prepare", "validate_web"], repo)
    assert "Running stage 'prepare'" in changed
    assert json.loads((repo / "metrics/prepare.json").read_text())["world"]["web"]["noise"]["clean"] == 30
