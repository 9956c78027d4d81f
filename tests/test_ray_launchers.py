"""The cluster launchers for per-shard work: infra/ray-slurm.sbatch run on a one-node "allocation" (srun and
scontrol stand-ins run their commands here), and the KubeRay RayJob read as the operator reads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, free_port

SRUN = """#!/usr/bin/env bash
# srun on a one-node allocation: the command after srun's own options, run here
while [ "$#" -gt 0 ]; do
  case "$1" in -w|--nodelist) shift 2 ;; -*) shift ;; *) break ;; esac
done
exec "$@"
"""


@pytest.mark.timeout(300)
def test_the_slurm_script_starts_a_ray_cluster_and_runs_the_command_as_its_driver(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")  # `scontrol show hostnames`: one node
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_JOB_NODELIST="localhost", SLURM_CPUS_PER_TASK="1",
               SLURM_GPUS_ON_NODE="0", RAY_PORT=str(free_port()), RAY_BIN=str(Path(sys.executable).parent / "ray"),
               PYTHON_BIN=sys.executable)
    driver = ("import os, ray; ray.init(); print('driver on', os.environ['RAY_ADDRESS'], 'nodes', len(ray.nodes()),"
              " 'cpus', ray.cluster_resources()['CPU'], 'auth', os.environ['RAY_AUTH_MODE'])")
    log = tmp_path / "job.log"  # a file, not a pipe: the head started in the background keeps its output open
    proc = subprocess.Popen(["bash", "infra/ray-slurm.sbatch", sys.executable, "-c", driver], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=240)
        out = log.read_text()
    finally:  # the head the script started in the background (Slurm ends a job's steps with the job)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
    assert proc.returncode == 0, out[-3000:]
    assert f":{env['RAY_PORT']} nodes 1 cpus 1.0 auth token" in out, out[-3000:]


def test_the_rayjob_runs_capfilt_on_gpu_workers_with_its_data_in_object_storage():
    job = yaml.safe_load((ROOT / "infra/kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["blip", "--params", "/app/params.yaml"] and "capfilt" in entry
    for flag in ("--input", "--output", "--tables"):
        assert entry[entry.index(flag) + 1].startswith("s3://"), flag  # every node reads and writes the bucket
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert int(workers["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert spec["rayClusterSpec"]["rayVersion"] == __import__("ray").__version__  # the locked Ray
