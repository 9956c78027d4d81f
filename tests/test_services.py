"""The local services: infra/stop_local.sh leaves no process of a server behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stopping_the_mlflow_server_stops_its_whole_process_group(tmp_path):
    env = {**os.environ, "MLFLOW_PORT": str(_free_port()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "infra/start_local.sh"), "mlflow", str(tmp_path)], env=env, check=True,
                   timeout=300)
    group = int((tmp_path / "mlflow.pid").read_text())
    members = [p for p in psutil.process_iter(["pid"]) if _group_of(p) == group]
    assert len(members) >= 2, "the server and its worker run in the server's own process group"
    assert os.getpgid(0) != group  # not ours: stopping it cannot hit the test
    subprocess.run(["bash", str(ROOT / "infra/stop_local.sh"), str(tmp_path)], env=env, check=True, timeout=120)
    # when the script returns, the whole group is gone (a worker that ignores SIGTERM is killed)
    left = [p.pid for p in members if _alive(p)]
    assert not left, f"processes left behind: {left}"
    assert not (tmp_path / "mlflow.pid").exists()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None
