"""MLflow tracking of every stage run: params, lineage tags, per-step metrics, artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI, else params.yaml `tracking.uri` (a local sqlite file
by default: no server needed; a server URL works the same; `off` tracks nothing). When a pipeline run has opened a parent
run (MLFLOW_PARENT_RUN_ID), each stage becomes a nested run under it. Only rank 0 talks to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

PARENT_ENV = "MLFLOW_PARENT_RUN_ID"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if not isinstance(v, (list, tuple)) else json.dumps(v)
    return out


def git_commit(repo: str | Path = ".") -> str:
    """HEAD's commit, with '-dirty' when tracked files changed; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hashes(dataset_dirs: list[str], lock_file: str | Path = "dvc.lock") -> dict[str, str]:
    """Lineage of input datasets: DVC's md5 from dvc.lock (when DVC produced them) and our manifest hash."""
    outs: dict[str, str] = {}
    if Path(lock_file).is_file():
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs", []):
                outs[out["path"].rstrip("/")] = out.get("md5", "")
    hashes = {}
    for d in dataset_dirs:
        norm = str(Path(d)).rstrip("/")
        for path, md5 in outs.items():
            if norm == path or norm.startswith(path + "/"):
                hashes[f"data.{norm}.dvc_md5"] = md5
        manifest = Path(d) / "manifest.json"
        if manifest.is_file():
            hashes[f"data.{norm}.manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return hashes


class Tracker:
    """One MLflow run for one stage; every method is a no-op when disabled (ranks other than 0)."""

    def __init__(self, uri: str, experiment: str, run_name: str, enabled: bool = True):
        uri = os.environ.get("MLFLOW_TRACKING_URI", uri)
        # "off": no tracking, and MLflow is never imported (the GPU check kit runs without it)
        self.enabled = enabled and uri != "off"
        self.run_id: str | None = None
        if not self.enabled:
            return
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        parent = os.environ.get(PARENT_ENV)
        tags = {"mlflow.parentRunId": parent} if parent else None
        run = mlflow.start_run(run_name=run_name, tags=tags)
        self.run_id = run.info.run_id

    def params(self, params: dict) -> None:
        if self.enabled:
            flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
            self.mlflow.log_params(flat)

    def tags(self, tags: dict) -> None:
        if self.enabled:
            self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled:
            self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.enabled:
            p = Path(path)
            (self.mlflow.log_artifacts if p.is_dir() else self.mlflow.log_artifact)(str(p), folder)

    def dict_artifact(self, obj: dict, name: str) -> None:
        if self.enabled:
            self.mlflow.log_dict(obj, name)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.mlflow.end_run(status=status)
