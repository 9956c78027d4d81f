"""The pipeline as a Prefect flow: each DVC stage a task, run in order through `dvc repro`.

DVC alone decides what is stale and versions every output; the flow adds parameters, retries for
transient failures, a schedule and the UI. One MLflow parent run per flow run (tagged with the flow
run's id, and the flow run tagged with it back); every stage's own MLflow run nests under it.

    python flows/pipeline.py                    # run once now, on the embedded default
    python flows/serve.py                       # serve the scheduled deployment (see prefect.yaml)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from blip.tracking import PARENT_ENV  # every stage's MLflow run nests under the run this names

STAGES = ["prepare", "validate_web", "pretrain", "finetune_captioner", "finetune_filter", "capfilt", "select",
          "validate_bootstrapped", "retrain", "finetune_captioner_retrain", "finetune_filter_retrain",
          "evaluate", "rounds", "register"]


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; `transient` says whether running it again may help."""

    def __init__(self, stage: str, code: int, tail: str):
        self.transient = _is_transient(code, tail)
        super().__init__(f"stage '{stage}' failed (exit {code}):\n{tail}")


def _is_transient(code: int, tail: str) -> bool:
    # killed (OOM, pre-emption) or a locked store are worth another try; a failed data contract or a
    # bad parameter is not: it fails the same way again
    if "contract" in tail and "FAILED" in tail:
        return False
    return code < 0 or code in (137, 143) or "database is locked" in tail or "Connection refused" in tail


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except StageFailed as e:
        return e.transient
    except Exception:  # anything else (the machine, not the data) may pass next time
        return True
    return False


def set_params(params_file: Path, overrides: dict) -> None:
    """Write dotted-key overrides into params.yaml, keeping its comments (as `dvc exp run -S` would)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load(params_file.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        node, *path, last = [data, *key.split(".")]
        for part in path:
            node = node[part]
        if last not in node:
            raise ValueError(f"{params_file}: no parameter '{key}' to override")
        node[last] = value
    with open(params_file, "w", encoding="utf-8") as f:
        yaml.dump(data, f)


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_retry_transient, task_run_name="{stage}")
def run_stage(stage: str, repo: str, env: dict) -> None:
    """`dvc repro --single-item <stage>`: runs the stage if stale, its output streamed to the run log."""
    log = get_run_logger()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=repo,
                            env={**os.environ, **env}, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        log.info(line.rstrip())
    if proc.wait() != 0:
        raise StageFailed(stage, proc.returncode, "\n".join(lines[-25:]))


@flow(name="blip-capfilt", log_prints=True)
def pipeline(preset: str = "tiny", web_shards: str | None = None, human_karpathy: str | None = None,
             human_images: str | None = None, threshold: float | None = None, rounds: int | None = None,
             capfilt_procs: int | None = None, stages: list[str] | None = None, repo: str = ".") -> list[str]:
    """Run the chain (or the named stages) with these parameters written to params.yaml first.

    `rounds` > 1 bootstraps again after round 1 (the `rounds` stage): each round captions and
    filters the web data with the models fine-tuned from the previous round's retrained model.
    `capfilt_procs` runs CapFilt as that many local ranks, one per GPU of the worker's node; ranks
    launched elsewhere on the same shared output (infra/launch_capfilt.sh) join the same job."""
    import mlflow

    overrides = {"preset": preset}
    for key, value in (("data.web_shards", web_shards), ("data.human_karpathy", human_karpathy),
                       ("data.human_images", human_images), ("select.threshold", threshold),
                       ("rounds", rounds), ("capfilt.procs", capfilt_procs)):
        if value is not None:
            overrides[key] = value
    if threshold is not None:  # a threshold given is the threshold used, not a calibrated one
        overrides["select.calibrate"] = False
    set_params(Path(repo) / "params.yaml", overrides)
    from blip.config import load_params

    params = load_params(Path(repo) / "params.yaml")
    uri = os.environ.get("MLFLOW_TRACKING_URI", params.tracking.uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(Path(repo) / uri[len('sqlite:///'):]).resolve()}"  # relative to the repo
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(params.tracking.experiment)
    flow_run_id = str(flow_run.get_id())
    with mlflow.start_run(run_name=f"pipeline {flow_run.get_name()}",
                          tags={"prefect_flow_run_id": flow_run_id, "preset": preset}) as parent:
        mlflow.log_params({k.replace(".", "/"): v for k, v in overrides.items()})
        _tag_flow_run(parent.info.run_id)
        env = {PARENT_ENV: parent.info.run_id, "MLFLOW_TRACKING_URI": uri}
        done = []
        for stage in stages or STAGES:
            run_stage(stage, repo, env)
            done.append(stage)
    return done


def _tag_flow_run(mlflow_run_id: str) -> None:
    """Cross-link: the flow run carries the MLflow parent run's id as a tag."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.get_id())
        client.update_flow_run(run.id, tags=[*run.tags, f"mlflow_run_id:{mlflow_run_id}"])


if __name__ == "__main__":
    pipeline()
