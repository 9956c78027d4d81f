"""params.yaml, whole: the one entry point that loads the file and checks it.

Each section is declared by the module that reads it (the base's in blip/config.py, a task's in its
folder's task.py, CapFilt's beside CapFilt, ...). This module puts them together into one strict schema:
the file is checked at once, every problem named by its dotted key, before any work. A task's sections
come from the task registry, so adding a task adds its `presets.<preset>.<stage>` and `data.<task>` keys
here without an edit.

    params = load_params("params.yaml")
    params.capfilt.top_p, params.active.finetune_vqa.lr
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import model_validator

from blip import config
from blip.capfilt.config import CapfiltConfig
from blip.config import section
from blip.gates_config import GatesConfig
from blip.registry_config import RegistryConfig
from blip.rounds_config import RetrainConfig, Rounds
from blip.selection.config import SelectConfig
from blip.tasks.registry import TASKS, DownstreamConfig
from blip.world.config import WorldConfig
from data_contracts.config import ContractsConfig

# the sections declared above the base, by the modules that read them
SECTIONS: dict[str, Any] = {
    "world": WorldConfig,            # the built-in world's generators
    "capfilt": CapfiltConfig,        # CapFilt's captioning and scoring
    "select": SelectConfig,          # selection's rule
    "contracts": ContractsConfig,    # the data contracts
    "gates": GatesConfig,            # the quality gates
    "retrain": RetrainConfig,        # the rounds
    "rounds": Rounds,                # the rounds
    "downstream": DownstreamConfig,  # the task registry's transfer tasks
    "registry": RegistryConfig,      # the model registry
}


def _shared_in_one_round(self: Any) -> Any:
    if self.capfilt.models == "shared" and self.rounds > 1:
        raise ValueError("capfilt.models is 'shared' (the ablation) and rounds > 1: later rounds fine-tune "
                         "decoupled models; run the ablation with rounds: 1")
    return self


def _extend(base: type, fields: dict[str, Any], **namespace: Any) -> type:
    """A section class: `base`'s fields and `fields`, as strict as every other section."""
    return section(type(base.__name__, (base,), {"__annotations__": fields, "__module__": __name__, **namespace}))


def _task_keys(kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for task in TASKS.values():
        for key, cls in getattr(task, kind).items():
            if key in found:
                raise ValueError(f"task {task.name} declares {kind} section {key!r}, which another task declares")
            found[key] = cls
    return found


@functools.lru_cache(maxsize=None)
def _schema(tasks: tuple[str, ...]) -> type:
    data = _extend(config.DataConfig, {key: cls | None for key, cls in _task_keys("data").items()})
    preset = _extend(config.Preset, _task_keys("stage"))
    return _extend(config.Params, {"data": data, "presets": dict[str, preset], **SECTIONS},
                   _shared_in_one_round=model_validator(mode="after")(_shared_in_one_round))


def schema() -> type:
    """The whole file's class, for the tasks the registry holds now."""
    return _schema(tuple(TASKS))


def params_from_dict(data: Any, source: str = "params") -> config.Params:
    """Typed params from an already-parsed params mapping; every problem is named by its dotted key."""
    return config.validate(schema(), data, source)


def load_params(path: str | Path = "params.yaml") -> config.Params:
    """Read params.yaml into typed, validated config objects."""
    with open(path, encoding="utf-8") as f:
        return params_from_dict(yaml.safe_load(f), str(path))
