"""The pipeline as a Prefect flow: each flow run is one DVC experiment of the whole chain.

The flow's parameters (preset, data sources, a recipe file, any `key=value`) become `dvc exp run --temp
--name <flow run> -S key=value` (flows/experiment.py): the workspace's params.yaml is never written, a
scheduled run uses only the parameters its deployment carries, and `dvc exp show` compares runs. DVC
decides what is stale and versions every output; the flow adds validation of the parameters before
anything runs, retries for transient failures (the run cache resumes at the last finished stage), a
schedule, and the UI: an MLflow parent run per flow run (every stage's run nests under it, both tagged
with the experiment) and artifacts for the comparison, CapFilt, the gates and the contracts.

    python -m flows.pipeline                                   # the embedded default, once, now
    python -m flows.pipeline --recipe flows/recipes/real-small.yaml --set data.web_shards=/data/web ...
    python flows/serve.py                                      # the scheduled deployment (see prefect.yaml)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from blip.tracking import PARENT_ENV  # every stage's MLflow run nests under the run this names
from flows.artifacts import ProgressArtifacts, failure_markdown, publish
from flows.experiment import (
    checked_params,
    experiment_rev,
    failure_summary,
    load_recipe,
    read_output,
    run_experiment,
    with_absolute_data_paths,
)


class StageFailed(RuntimeError):
    """The experiment stopped at a failed stage; `transient` says whether running it again may help."""

    def __init__(self, code: int, summary: str):
        self.transient = _is_transient(code, summary)
        self.summary = summary
        super().__init__(f"the experiment stopped (exit {code}):\n{summary}")


# a stage's process killed by a signal (OOM, pre-emption, a lost node), as DVC reports it
_KILLED = re.compile(r"exited with -\d+|exited with (137|143)\b")


def _is_transient(code: int, tail: str) -> bool:
    # a stage killed by a signal (OOM, pre-emption, a lost node) or a locked store is worth another try, even
    # where a gate only warned earlier in the run; a failed data contract, a failed quality gate or a bad
    # parameter is not: it fails the same way again
    if code < 0 or code in (137, 143) or _KILLED.search(tail):
        return True
    if ("contract" in tail or "gate" in tail) and "FAILED" in tail:
        return False
    return "database is locked" in tail or "Connection refused" in tail


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except StageFailed as e:
        return e.transient
    except Exception:  # anything else (the machine, not the data) may pass next time
        return True
    return False


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_retry_transient, task_run_name="dvc exp run {name}")
def experiment(repo: str, name: str, overrides: dict, targets: list[str], env: dict) -> str:
    """Run the chain as DVC experiment `name`; returns its commit. Stage output streams to the run log; CapFilt's
    progress lines also update the flow run's `capfilt-progress` artifacts while it scores.

    A retry runs the experiment again in a fresh folder: DVC's run cache restores every finished stage, and
    CapFilt finds the tables it already wrote (filed under its job's fingerprint, outside the experiment's
    folder) and scores only the shards still missing."""
    log = get_run_logger()
    progress = ProgressArtifacts()

    def each_line(line: str) -> None:
        log.info(line)
        progress.update(line)

    code, lines = run_experiment(Path(repo), name, overrides, targets, {**os.environ, **env}, each_line)
    if code != 0:
        raise StageFailed(code, failure_summary(lines))
    return experiment_rev(Path(repo), name)


def flow_overrides(preset: str | None, web_shards: str | list[str] | None, human_karpathy: str | None,
                   human_images: str | None, threshold: float | None, rounds: int | None, capfilt_workers: int | None,
                   recipe: str | None, overrides: dict[str, Any] | None, repo: Path) -> dict[str, Any]:
    """Every parameter of the run as dotted keys: the recipe's, then the named ones, then `overrides`."""
    merged = dict(load_recipe(repo / recipe if not Path(recipe).is_absolute() else recipe)) if recipe else {}
    for key, value in (("preset", preset), ("data.web_shards", web_shards), ("data.human_karpathy", human_karpathy),
                       ("data.human_images", human_images), ("select.threshold", threshold), ("rounds", rounds),
                       ("capfilt.workers", capfilt_workers)):
        if value is not None:
            merged[key] = value
    if threshold is not None:  # a threshold given is the threshold used, not a calibrated one
        merged["select.calibrate"] = False
    merged.update(overrides or {})
    return with_absolute_data_paths(merged, repo)


def mlflow_params(settings: dict) -> dict[str, str]:
    """The flow's settings as MLflow parameters: dotted keys as paths, a removed key (`~key`) as "(removed)"
    (MLflow refuses "~" in a name), values cut to MLflow's 6,000 characters."""
    return {k.removeprefix("~").replace(".", "/"): "(removed)" if k.startswith("~") else str(v)[:6000]
            for k, v in settings.items()}


@flow(name="blip-capfilt", log_prints=True)
def pipeline(preset: str | None = None, web_shards: str | list[str] | None = None, human_karpathy: str | None = None,
             human_images: str | None = None, threshold: float | None = None, rounds: int | None = None,
             capfilt_workers: int | None = None, recipe: str | None = None, overrides: dict[str, Any] | None = None,
             stages: list[str] | None = None, repo: str = ".", retry_delay_s: float = 30.0) -> dict:
    """Run the chain (or up to the named stages) as one DVC experiment with these parameters.

    Data parameters left at None use the committed params.yaml's (the built-in world by default), never
    an earlier run's. `recipe` is a YAML file of `key: value` settings (flows/recipes/); `overrides` sets
    any params key. `rounds` > 1 bootstraps again after round 1. `capfilt_workers` is CapFilt's number of Ray
    workers (0: one per GPU of the Ray cluster: the worker's own machine, or the cluster RAY_ADDRESS names).
    A stage killed mid-run (a pre-empted node, OOM) is retried after `retry_delay_s`, resuming where it stopped."""
    import mlflow

    root = Path(repo).resolve()
    if not (isinstance(retry_delay_s, (int, float)) and 0 <= retry_delay_s <= 86400):
        raise ValueError(f"retry_delay_s: seconds between 0 and 86400, got {retry_delay_s!r}")
    settings = flow_overrides(preset, web_shards, human_karpathy, human_images, threshold, rounds, capfilt_workers,
                              recipe, overrides, root)
    params = checked_params(root, settings)  # a bad value stops here, before any stage
    name = f"{flow_run.get_name()}-{str(flow_run.get_id())[:8]}"
    uri = _tracking_uri(root, params.tracking.uri)
    experiment_id = _mlflow_experiment(uri, params.tracking.experiment, root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"pipeline {name}",
                          tags={"prefect_flow_run_id": str(flow_run.get_id()), "dvc_experiment": name,
                                "preset": params.preset}) as parent:
        mlflow.log_params(mlflow_params(settings))
        _tag_flow_run([f"mlflow_run_id:{parent.info.run_id}", f"dvc_experiment:{name}"])
        env = {PARENT_ENV: parent.info.run_id, "MLFLOW_TRACKING_URI": uri}
        try:
            run = experiment.with_options(retry_delay_seconds=retry_delay_s)
            rev = run(str(root), name, settings, stages or [], env)
        except StageFailed as e:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(key="failure", markdown=failure_markdown(e.summary, name),
                                     description="why the experiment stopped")
            raise
        mlflow.set_tag("dvc_experiment_rev", rev)
        select_run = _child_run(experiment_id, parent.info.run_id, "select")
        publish(lambda path: read_output(root, rev, path), uri, experiment_id, parent.info.run_id, select_run, name)
    return {"experiment": name, "rev": rev, "mlflow_run_id": parent.info.run_id}


def _tracking_uri(repo: Path, uri: str) -> str:
    """MLFLOW_TRACKING_URI, else params'; a relative sqlite path is the repository's, not the experiment's copy."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(repo / uri[len('sqlite:///'):]).resolve()}"
    return uri


def _mlflow_experiment(uri: str, name: str, repo: Path) -> str:
    """The MLflow experiment's id; created with its artifacts in the repository's mlruns/ for a local store."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    local = uri.startswith("sqlite:")
    return mlflow.create_experiment(name, artifact_location=(repo / "mlruns").as_uri() if local else None)


def _child_run(experiment_id: str, parent_id: str, stage: str) -> str | None:
    """The id of the parent's nested run of `stage` (the last one), if it ran."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and "
                              f"tags.stage = '{stage}'", order_by=["start_time DESC"], max_results=1)
    return runs["run_id"].iloc[0] if len(runs) else None


def _tag_flow_run(tags: list[str]) -> None:
    """Cross-link: the flow run carries the MLflow parent run's id and the DVC experiment's name as tags."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.get_id())
        client.update_flow_run(run.id, tags=[*run.tags, *tags])


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.pipeline [--recipe FILE] [--set key=value ...]`: one flow run, now."""
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=None, help="a YAML file of key: value settings (flows/recipes/)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any params key, the value read as YAML (repeatable)")
    ap.add_argument("--stage", action="append", default=None, help="run up to this stage only (repeatable)")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    state = pipeline(recipe=args.recipe, overrides=overrides, stages=args.stage, repo=args.repo, return_state=True)
    if state.is_completed():
        print(f"experiment {state.result()['experiment']}: `dvc exp show` lists it, `dvc exp apply` takes it")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
