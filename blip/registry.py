"""The MLflow model registry: BLIP models as servable pyfuncs, with lineage and alias promotion.

A registered model is a pyfunc over our model folder: given base64 images it captions them; given
images and texts it returns ITM match probabilities and ITC similarities (param `itm_token`: "enc", or
"cls" as the release's BLIP_ITM demo). So `mlflow models serve -m models:/blip-captioner@champion`
answers HTTP requests.

Promotion by alias: a new version becomes `champion` only when its metric (named in params) beats
the version that holds `champion` now, whoever put it there (a person promoting in the UI included);
otherwise it becomes `challenger`. The decision and its reason are tags of the new version.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

ROOT = Path(__file__).resolve().parents[1]
# base64 images, optionally a text per image; the params a request may set
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "image"), ColSpec("string", "text", required=False)]),
                           params=ParamSchema([ParamSpec("itm_token", "string", "enc")]))


class BlipPyfunc(mlflow.pyfunc.PythonModel):
    """Caption images (column `image`: base64 bytes) or score them against texts (column `text`)."""

    def load_context(self, context) -> None:
        from blip.inference import load

        self.blip = load(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from PIL import Image

        images = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in model_input["image"]]
        if "text" in model_input.columns:
            token = (params or {}).get("itm_token", "enc")
            rows = [self.blip.score(im, [t], itm_token=token)[0] for im, t in zip(images, model_input["text"])]
            return pd.DataFrame(rows)
        return pd.DataFrame({"caption": [c[0] for c in self.blip.caption(images)]})


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
