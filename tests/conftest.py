"""Shared fixtures: the project's params, a small built-in world, and the shared real-captions set."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

from blip.config import Params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]
REAL_CAPTIONS = Path(os.environ.get("BLIP_REAL_CAPTIONS", ROOT.parent / "shared" / "datasets" / "real-captions"))


def pipeline_checkout(root: Path) -> Path:
    """A copy of the pipeline (library, contracts, dvc.yaml) in root/repo, for real DVC runs; no params yet."""
    repo = root / "repo"
    repo.mkdir()
    for package in ("blip", "data_contracts"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo)
    # Table 12 over seeds (bench/table12.py), which the compare stage shows beside the chain it ran on
    (repo / "bench/results").mkdir(parents=True)
    shutil.copy(ROOT / "bench/results/table12.json", repo / "bench/results")
    return repo


def raw_params() -> dict:
    with open(ROOT / "params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def small_params(**world_overrides) -> Params:
    """params.yaml with a small world: 40/10/10 human images, 120 web images in 3 shards."""
    raw = copy.deepcopy(raw_params())
    raw["world"]["human"] = {"train": 40, "val": 10, "test": 10}
    raw["world"]["web"]["images"] = 120
    raw["world"]["web"]["shard_size"] = 40
    raw["world"]["image_size"] = 64
    raw["ingest"]["shard_size"] = 20
    raw["world"].update(world_overrides)
    return params_from_dict(raw)


def downstream_workspace(tmp: Path, raw: dict):
    """`tmp` as a workspace for `blip` commands: params.yaml from `raw` and two small pre-trained models, `a` and `b`
    (other seeds); returns a runner of `blip <args>` there that checks the exit status and returns the output."""
    import subprocess
    import sys

    import torch

    from blip.config import TextArch
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.test_models import tiny

    raw["train"].update(num_workers=0, log_every=1)
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    narrow = TextArch(hidden=32, layers=2, heads=2, intermediate=64, dropout=0.0, positions=64)
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_pretrained(tiny("pretrain", text=narrow), tmp / name, build_tokenizer())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def blip(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "blip.cli", "--params", "params.yaml", *args], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    return blip


@pytest.fixture(scope="session", autouse=True)
def isolated_mlflow(tmp_path_factory):
    """Every run a test makes goes to a throw-away sqlite store, never the repository's."""
    store = tmp_path_factory.mktemp("mlflow") / "mlruns.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def params() -> Params:
    return params_from_dict(raw_params())


@pytest.fixture(scope="session")
def small() -> Params:
    return small_params()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, small) -> Path:
    """A finished `prepare` output for the small world (data/human/..., data/web)."""
    from blip.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(small, out)
    return out


@pytest.fixture(scope="session")
def real_captions() -> Path:
    if not (REAL_CAPTIONS / "karpathy_style.json").is_file():
        pytest.skip(f"the shared real-captions set is not at {REAL_CAPTIONS} (set BLIP_REAL_CAPTIONS); "
                    "it lives outside the repository for licence reasons")
    return REAL_CAPTIONS
