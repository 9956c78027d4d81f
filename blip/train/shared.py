"""Table 4's ablation: CapFilt's captioner and filter as one model.

With `capfilt.models: shared`, finetune_filter trains one model with ITC, ITM and LM at once (task `shared`
in the engine), and finetune_captioner trains nothing: it adopts that model as the captioner, so every later
stage (the captioner's gate, CapFilt, the baseline's evaluation, the registry) sees the same weights in both
roles, as the paper's shared variant does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from blip.data import storage
from blip.data.shards import atomic_write_json
from blip.models.checkpoints import load_model


def adopt_shared_captioner(shared_dir: Path, out_dir: Path, shared_metrics: Path, metrics_path: Path,
                           shared_plot: Path, plot_path: Path) -> None:
    """Make the shared captioner-filter in `shared_dir` the captioner: its folder, metrics and loss curve."""
    fix = "with capfilt.models = shared, run finetune_filter with --models shared first (dvc repro does)"
    if not (shared_dir / "config.json").is_file():
        raise ValueError(f"{shared_dir} holds no model: {fix}")
    task = load_model(shared_dir).cfg.task
    if task != "pretrain":
        raise ValueError(f"{shared_dir} holds a {task} model, not a shared captioner-filter: {fix}")
    staging = out_dir.with_name(out_dir.name + ".adopting")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(shared_dir, staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)  # the folder appears whole or not at all
    atomic_write_json(metrics_path, json.loads(shared_metrics.read_text()) | {"shared_with": str(shared_dir)})
    storage.write_bytes(plot_path, shared_plot.read_bytes())
