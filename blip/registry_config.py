"""The model registry's section of params.yaml (`registry`), light to import (blip/registry.py needs MLflow)."""

from __future__ import annotations

from blip.config import Name, section


@section
class RegistryMetrics:
    captioner: Name
    filter: Name
    pretrained: Name
    vqa: Name
    nlvr: Name


@section
class RegistryConfig:
    prefix: Name               # registered names: <prefix>-captioner, -filter, -pretrained, -vqa
    metric: RegistryMetrics    # the evaluation metric (higher is better) that decides champion
