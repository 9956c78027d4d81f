"""What several tests share: the project root, params, small models, shards, repositories and runs."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml
from PIL import Image

from blip.capfilt.formats import SCORES_FORMAT
from blip.config import Params, TextArch, VisionArch
from blip.params import params_from_dict
from blip.data.parquet import write_table
from blip.data.shards import atomic_write_json
from blip.tasks.registry import import_models
from blip.models.blip import Blip, BlipConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
import_models()  # every task's model class: tiny() builds any task


REAL_CAPTIONS = Path(os.environ.get("BLIP_REAL_CAPTIONS", ROOT.parent / "shared" / "datasets" / "real-captions"))


def pipeline_checkout(root: Path) -> Path:
    """A copy of the pipeline (library, contracts, dvc.yaml) in root/repo, for real DVC runs; no params yet."""
    repo = root / "repo"
    repo.mkdir()
    for package in ("blip", "data_contracts"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo)
    # as a clone has it: the transfer tasks' scores folder, which `compare` reads even when params run no task
    (repo / "metrics/downstream").mkdir(parents=True)
    shutil.copy(ROOT / "metrics/downstream/.gitkeep", repo / "metrics/downstream")
    return repo


def raw_params() -> dict:
    with open(ROOT / "params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def small_params(**world_overrides) -> Params:
    """params.yaml with a small world: 40/10/10 human images, 120 web images in 6 shards of 20."""
    raw = copy.deepcopy(raw_params())
    raw["world"]["human"] = {"train": 40, "val": 10, "test": 10}
    raw["world"]["web"]["images"] = 120
    raw["world"]["web"]["shard_size"] = 20
    raw["world"]["image_size"] = 64
    raw["ingest"]["shard_size"] = 20
    raw["world"].update(world_overrides)
    return params_from_dict(raw)


def downstream_workspace(tmp: Path, raw: dict):
    """`tmp` as a workspace for `blip` commands: params.yaml from `raw` and two small pre-trained models, `a` and `b`
    (other seeds); returns a runner of `blip <args>` there, in this process (the model stack is already imported:
    a subprocess would import it again, seconds each), that checks the exit status and returns the output."""

    from blip.cli import main
    from blip.config import TextArch
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer

    raw["train"].update(num_workers=0, log_every=1)
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    narrow = TextArch(hidden=32, layers=2, heads=2, intermediate=64, dropout=0.0, positions=64)
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_pretrained(tiny("pretrain", text=narrow), tmp / name, build_tokenizer())

    def blip(*args: str) -> str:
        return in_process(main, ["--params", "params.yaml", *args], tmp)

    return blip


def in_process(main, argv: list[str], cwd: Path, status: int = 0) -> str:
    """A command's `main(argv)` run in this process, in `cwd`: its output and errors, once its exit status is
    checked against `status`. The model stack is already imported here, where a subprocess would import it again
    (seconds each)."""
    import contextlib

    out, err, environ = io.StringIO(), io.StringIO(), dict(os.environ)
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:  # as a process's environment ends with it (MLflow, for one, sets its experiment's id there)
        os.environ.clear()
        os.environ.update(environ)
    assert code == status, f"{argv} (exit {code}):\n{out.getvalue()[-3000:]}\n{err.getvalue()[-3000:]}"
    return out.getvalue() + err.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VISION = VisionArch(patch_size=16, width=64, depth=2, heads=4, mlp_ratio=2.0, drop_path=0.0)


TEXT = TextArch(hidden=64, layers=2, heads=4, intermediate=128, dropout=0.0)


CAPTIONS = [f"a {s} {c} {shape}" for s in ("small", "large") for c in ("red", "blue") for shape in
            ("circle", "square", "star", "triangle")]


def tiny(task="pretrain", vision=VISION, text=TEXT, **kw) -> Blip:
    torch.manual_seed(0)
    return build_model(BlipConfig(task=task, image_size=32, vision=vision, text=text, embed_dim=32, queue_size=64, **kw))


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def jpeg(colour=(200, 30, 30), size=(48, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


def read_by_web_rules(dataset_dir: Path, cfg) -> tuple[Counter, Counter, dict]:
    """Every sample of a registered web set read as CapFilt and the training loader read it: (skips by reason,
    normalisations, usable texts by key)."""
    from blip.capfilt.inputs import decode, shard_samples
    from blip.data.web import web_shards

    skipped, fixes, texts = Counter(), Counter(), {}
    for shard in web_shards(dataset_dir):
        for sample in shard_samples(shard.url, cfg, shard.samples):
            got = decode(sample, [], cfg)
            if got.skip:
                skipped[got.skip] += 1
            else:
                fixes.update(got.fixes)
                texts[got.key] = got.text
    return skipped, fixes, texts


def small_training_params(tmp: Path) -> Path:
    """A preset small enough for a few CPU steps: 8 steps over 2 epochs, checkpoints every 3 steps."""
    raw = copy.deepcopy(raw_params())
    tiny = raw["presets"]["tiny"]
    tiny["model"] = {"vision": {"patch_size": 16, "width": 64, "depth": 2, "heads": 2, "mlp_ratio": 2.0,
                                "drop_path": 0.0},
                     "text": {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "dropout": 0.0,
                              "positions": 64},
                     "embed_dim": 32, "queue_size": 64, "temp_min": 0.001, "itm_random_negatives": 0.0,
                     "vision_init": None, "text_init": None}
    for stage in ("pretrain", "finetune_captioner", "finetune_filter", "finetune_vqa", "finetune_nlvr",
                  "finetune_dialog"):
        tiny[stage].update(image_size=64, batch_size=8, epochs=2, steps_per_epoch=4, warmup_steps=2)
    tiny["finetune_nlvr"]["pretrain"].update(image_size=64, batch_size=8, epochs=1, steps_per_epoch=4)
    tiny["pretrain"]["lr"] = 3.0e-4
    raw["train"].update(num_workers=1, log_every=1, checkpoint_every=3, keep_checkpoints=2)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_checked(cmd: list[str], cwd: Path, ok: bool = True) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlruns.db"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert (proc.returncode == 0) == ok, f"{cmd} (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def commit_all(repo: Path, message: str) -> None:
    run_checked(["git", "add", "-A"], repo)
    run_checked(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def dvc_repo(repo: Path, raw: dict, message: str = "pipeline", dvc_config: str | None = None) -> None:
    """params.yaml from `raw`, then git and DVC initialised (with `dvc_config` as .dvc/config) and committed."""
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    (repo / ".gitignore").write_text((ROOT / ".gitignore").read_text())  # as a clone of the project ignores
    run_checked(["git", "init", "-q"], repo)
    run_checked([sys.executable, "-m", "dvc", "init", "-q"], repo)
    if dvc_config:
        (repo / ".dvc/config").write_text(dvc_config)
    commit_all(repo, message)


FILTERS = 2


def scores_folder(root, tables: int = 3, images: int = 40, seed: int = 0):
    """Score tables with many tied scores (ITM on a coarse grid), two filters, 1-2 captions per image."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    entries, total = [], 0
    for t in range(tables):
        rows = {k: [] for k in ("key", "image", "candidate", "source", "text", "itm", "itc", "captioner", "filters",
                                "image_sha256", "pixels_sha256", "round")}
        for i in range(images):
            for c in range(1 + int(rng.integers(1, 3))):
                rows["key"].append(f"t{t}_{i:04d}")
                rows["image"].append(i)
                rows["candidate"].append(c)
                rows["source"].append("web" if c == 0 else "synthetic")
                rows["text"].append(f"text {t} {i} {c}")
                rows["itm"].append(list(rng.integers(0, 10, FILTERS) / 10))
                rows["itc"].append(list(rng.integers(-5, 6, FILTERS) / 10))
                rows["captioner"].append("" if c == 0 else "cap@x")
                rows["filters"].append("f1@x+f2@x")
                rows["image_sha256"].append(f"{t}-{i}")
                rows["pixels_sha256"].append(f"p{t}-{i}")
                rows["round"].append(1)
        lists = pa.list_(pa.float32(), FILTERS)
        table = pa.table({**{k: v for k, v in rows.items() if k not in ("itm", "itc")},
                          "itm": pa.array(rows["itm"], lists), "itc": pa.array(rows["itc"], lists)})
        entry = write_table(root / f"scores-{t:06d}.parquet", table)
        entries.append({"url": str(root / entry.pop("name")), **entry,
                        "input": {"url": f"web/shard-{t:06d}.tar", "sha256": "0" * 64, "samples": images}})
        total += table.num_rows
    labels = rng.integers(0, 2, 200)
    calibration = pa.table({"label": pa.array(labels, pa.int8()),
                            "itm": pa.array([list(np.clip(rng.normal(0.3 + 0.4 * y, 0.2, FILTERS), 0, 1))
                                             for y in labels], pa.list_(pa.float32(), FILTERS)),
                            "itc": pa.array([[0.0] * FILTERS] * 200, pa.list_(pa.float32(), FILTERS))})
    atomic_write_json(root / "manifest.json", {
        "format": SCORES_FORMAT, "rows": total, "tables": entries, "round": 1, "fingerprint": "test",
        "calibration": {"url": str(root / "calibration.parquet"),
                        **write_table(root / "calibration.parquet", calibration)}, "captioners": ["cap@x"],
        "filters": ["f1@x", "f2@x"], "calibrate_on": "val", "counts": {}})
    return root


def git_repo(repo: Path) -> None:
    """Commit the checkout in a fresh git repository with DVC initialised (as a user's clone is)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    shutil.copytree(ROOT / "flows", repo / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("mlruns.db\nmlruns/\n")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)


def experiments(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json`: each experiment's name -> its commit and params.yaml values."""
    out = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    found = {}
    for baseline in json.loads(out):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = {"rev": rev["rev"], "params": rev["data"]["params"]["params.yaml"]["data"]}
    return found


def flow_run_of(experiment: str):
    """The Prefect flow run tagged with this DVC experiment (exactly one)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if f"dvc_experiment:{experiment}" in r.tags]
    assert len(runs) == 1
    return runs[0]
