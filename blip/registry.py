"""The MLflow model registry: BLIP models as servable pyfuncs, with lineage and alias promotion.

A registered model is a pyfunc over our model folder, answering as its task serves (blip/tasks/): a
captioner, filter or pre-trained model captions base64 images, or scores them against texts (ITM match
probabilities and ITC similarities; param `itm_token`: "enc", or "cls" as the release's BLIP_ITM demo); a
VQA model answers questions; an NLVR model says whether a statement is true of two images (columns `image`,
`image2`, `text`). So `mlflow models serve -m models:/blip-captioner@champion` answers HTTP requests.

Promotion by alias: a new version becomes `champion` only when its metric (named in params) beats
the version that holds `champion` now, whoever put it there (a person promoting in the UI included);
otherwise it becomes `challenger`. The decision and its reason are tags of the new version.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from blip.layout import WORKSPACE, round_outputs

ROOT = Path(__file__).resolve().parents[1]
# base64 images, optionally a text per image (both optional here: a row or a frame without them gets an
# answer saying so, not a refused request); the params a request may set
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "image", required=False),
                                          ColSpec("string", "text", required=False),
                                          ColSpec("string", "question", required=False),
                                          ColSpec("string", "image2", required=False)]),
                           params=ParamSchema([ParamSpec("itm_token", "string", "enc")]))


class BlipPyfunc(mlflow.pyfunc.PythonModel):
    """A model folder served: each request frame is answered as the model's task serves it (blip/tasks/*/serve)."""

    def load_context(self, context) -> None:
        from blip.inference import load
        from blip.models.checkpoints import saved_task
        from blip.tasks.registry import serving

        # the task's code first: it registers the model class the folder loads as
        self.task = serving(saved_task(context.artifacts["model"]))
        self.blip = load(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.task.serve(self.blip, model_input, params or {})


def log_and_register(model_dir: str, name: str, tags: dict, metrics: dict) -> str:
    """Log the model as a pyfunc in the active run and register it; returns the new version."""
    info = mlflow.pyfunc.log_model(name="model", python_model=BlipPyfunc(), artifacts={"model": str(model_dir)},
                                   signature=SIGNATURE, code_paths=[str(ROOT / "blip")], registered_model_name=name,
                                   pip_requirements=["torch", "torchvision", "timm", "transformers", "pillow",
                                                     "pandas", "safetensors"])
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in {**tags, **{f"metric.{k}": v for k, v in metrics.items()}}.items():
        client.set_model_version_tag(name, version, k, str(v))
    return version


def register_transfer_models(params, task: str, metric: str, result: dict, sources: dict[str, str]) -> dict:
    """Each fine-tuned model of a transfer task's result as `<prefix>-<task>`, a version per source, each in an
    MLflow run of its own and promoted by registry.metric.<task>; {source name: the promotion}."""
    from blip.tracking import Tracker, git_commit

    decisions = {}
    for name, source in sources.items():
        scores = result[name]
        tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"register-{task}-{name}")
        if not tracker.enabled:
            return {}
        registry_name = f"{params.registry.prefix}-{task}"
        version = log_and_register(scores["model"], registry_name, {"from": source, "git_commit": git_commit()},
                                   {metric: scores[metric]})
        decisions[name] = promote(registry_name, version, getattr(params.registry.metric, task))
        tracker.end("FINISHED")
    return decisions


def _metric_of(client: MlflowClient, name: str, version: str, metric: str) -> float | None:
    value = client.get_model_version(name, version).tags.get(f"metric.{metric}")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def promote(name: str, version: str, metric: str, higher_is_better: bool = True) -> dict:
    """Give `version` the champion alias if it beats the current champion on `metric`, else challenger."""
    client = MlflowClient()
    new = _metric_of(client, name, version, metric)
    try:
        champion = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        champion = None
    if new is None or math.isnan(new):
        alias, reason = "challenger", f"no {metric} recorded for version {version}"
    elif champion is None:
        alias, reason = "champion", f"first version with {metric}={new:.4g}"
    else:
        old = _metric_of(client, name, champion.version, metric)
        better = old is None or (new > old if higher_is_better else new < old)
        alias = "champion" if better else "challenger"
        reason = (f"{metric} {new:.4g} {'beats' if better else 'does not beat'} champion v{champion.version} "
                  f"({'none' if old is None else f'{old:.4g}'})")
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "promotion_decision", alias)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    return {"name": name, "version": version, "alias": alias, "reason": reason}


@dataclass(frozen=True)
class Registered:
    """A model the register stage registers and the evaluation it is promoted on."""

    folder: Path
    evaluation: Path


def round_models(r: int, rounds_root: Path) -> tuple[dict[str, Registered], Path, Path]:
    """Round `r`'s models for the registry: the captioner and filter that bootstrapped its data and the model
    pre-trained on that data; with the data folder and its selection statistics."""
    this = round_outputs(r, rounds_root)
    if r <= 1:  # round 1's data was bootstrapped by the baseline captioner and filter
        models = {"captioner": Registered(WORKSPACE.model("captioner"), WORKSPACE.metrics("eval_baseline_captioner")),
                  "filter": Registered(WORKSPACE.model("filter"), WORKSPACE.metrics("eval_baseline_filter"))}
    else:
        previous = round_outputs(r - 1, rounds_root)
        models = {"captioner": Registered(previous.captioner, previous.eval_captioner),
                  "filter": Registered(previous.filter, previous.eval_filter)}
    # the pre-trained model is judged by the filter fine-tuned from it, as in round 1
    models["pretrained"] = Registered(this.pretrain, this.eval_filter)
    return models, this.data, this.select


def register_round(params, r: int, rounds_dir: Path, only: list[str] | None = None,
                   metrics_path: str | None = None) -> list[dict]:
    """Register round `r`'s captioner, filter and pre-trained model (or `only` some), each promoted by its metric."""
    from blip.data.shards import atomic_write_json
    from blip.tracking import Tracker, data_hashes, git_commit

    if r < 1:
        raise ValueError(f"--round {r}: rounds count from 1")
    models, data, select_metrics = round_models(r, rounds_dir)
    chosen = {k: m for k, m in models.items() if only is None or k in only}
    for kind, model in chosen.items():
        if not model.folder.is_dir():
            raise FileNotFoundError(f"round {r}'s {kind} ({model.folder}) does not exist: run the chain that far "
                                    f"first (params `rounds` >= {r}), or register another round with --round")
        if not model.evaluation.is_file():
            raise FileNotFoundError(f"round {r}'s {kind} has no evaluation ({model.evaluation}), which its promotion "
                                    f"needs: blip evaluate --model {model.folder} --metrics {model.evaluation}")
    lineage = {"git_commit": git_commit(), "bootstrap_round": str(r)}
    if select_metrics.is_file():  # the data this round bootstrapped (absent before its selection ran)
        capfilt = json.loads(select_metrics.read_text())
        lineage.update({**data_hashes([str(data)]), "capfilt.noise_ratio": capfilt["noise_ratio"],
                        "capfilt.web_removed_share": capfilt["web_removed_share"],
                        "capfilt.threshold": capfilt["threshold"]})
    decisions = []
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"register round {r}")
    tracker.tags({"stage": "register", **lineage})
    for kind, model in chosen.items():
        evaluation = json.loads(model.evaluation.read_text())
        numbers = {k: v for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        name = f"{params.registry.prefix}-{kind}"
        with mlflow.start_run(run_name=f"register-{kind}", nested=True):
            version = log_and_register(str(model.folder), name, {**lineage, "model_folder": str(model.folder)}, numbers)
        decisions.append(promote(name, version, getattr(params.registry.metric, kind)))
    tracker.dict_artifact({"decisions": decisions}, "registry_decisions.json")
    tracker.end()
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(metrics_path, {"round": r, "decisions": decisions})
    return decisions
