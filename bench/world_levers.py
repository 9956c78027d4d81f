"""What makes the captioner and the filter good at their jobs on the built-in world: one lever at a time.

Each lever is a set of params overrides (dotted keys, as `dvc exp run -S`) and the first stage it
changes: `capfilt` uses the chain's `models/captioner` and `models/filter` as they are, `finetune`
re-trains them from the chain's `models/pretrain`, `pretrain` re-trains everything. Then CapFilt scores the web set and `select` keeps texts as the
chain does (threshold calibrated on the human val pairs), and the world's truth judges both models
(`metrics/capfilt.json`'s `world`, `select`'s precision and recall on noisy web texts).

    python bench/world_levers.py                               # every lever below
    python bench/world_levers.py --levers current filter_1500  # some

Needs the chain's data and `models/pretrain` (`dvc repro` first). Writes bench/results/world_levers.json:
per lever its overrides, the measurements, and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = "presets.tiny"
LEVERS = {  # name -> (first stage re-run, overrides)
    "current": ("finetune", {}),
    "beam": ("capfilt", {"capfilt.method": "beam"}),
    "filter_1500": ("finetune", {f"{TINY}.finetune_filter.epochs": 15}),
    "captioner_900": ("finetune", {f"{TINY}.finetune_captioner.epochs": 9}),
    "captioner_900_lr_6e-4": ("finetune", {f"{TINY}.finetune_captioner.epochs": 9,
                                           f"{TINY}.finetune_captioner.lr": 6.0e-4}),
    "image_160": ("pretrain", {f"{TINY}.{s}.image_size": 160 for s in ("pretrain", "finetune_captioner",
                                                                        "finetune_filter")}),
    "pretrain_6_epochs": ("pretrain", {f"{TINY}.pretrain.epochs": 6}),
    "text_256": ("pretrain", {f"{TINY}.model.text.hidden": 256, f"{TINY}.model.text.heads": 4,
                              f"{TINY}.model.text.intermediate": 1024}),
    "combined": ("pretrain", {f"{TINY}.model.text.hidden": 256, f"{TINY}.model.text.heads": 4,
                              f"{TINY}.model.text.intermediate": 1024, f"{TINY}.finetune_captioner.epochs": 9,
                              f"{TINY}.finetune_captioner.lr": 6.0e-4, f"{TINY}.finetune_filter.epochs": 15}),
}


def _override(raw: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    node = raw
    for part in path:
        node = node[part]
    node[key] = value


def _blip(params: Path, *args: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///" + str(params.parent / "mlruns.db")}
    subprocess.run([sys.executable, "-m", "blip.cli", "--params", str(params), *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def run_lever(name: str, first: str, overrides: dict, work: Path) -> dict:
    """Train what the lever changes, score the web set, select; the world's verdict on both models."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        _override(raw, key, value)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    start = time.time()
    pretrain = "models/pretrain"
    if first == "pretrain":
        pretrain = str(work / "pretrain")
        _blip(params, "pretrain", "--out", pretrain, "--ckpt-dir", str(work / "ckpt/pretrain"),
              "--metrics", str(work / "pretrain.json"), "--plot", str(work / "pretrain.csv"))
    models = {"finetune_captioner": str(ROOT / "models/captioner"), "finetune_filter": str(ROOT / "models/filter")}
    if first != "capfilt":
        for stage in models:
            models[stage] = str(work / stage)
            _blip(params, stage, "--init-from", pretrain, "--out", models[stage], "--ckpt-dir", str(work / "ckpt" / stage),
                  "--metrics", str(work / f"{stage}.json"), "--plot", str(work / f"{stage}.csv"))
    _blip(params, "capfilt", "--captioner", models["finetune_captioner"], "--filter", models["finetune_filter"],
          "--output", str(work / "scores"), "--metrics", str(work / "capfilt.json"))
    _blip(params, "select", "--scores", str(work / "scores"), "--output", str(work / "bootstrapped"),
          "--metrics", str(work / "select.json"), "--report", str(work / "report"))
    capfilt, select = (json.loads((work / f).read_text()) for f in ("capfilt.json", "select.json"))
    return {"lever": name, "first_stage": first, "overrides": overrides, "seconds": round(time.time() - start),
            "world": capfilt["world"], "select_truth": select.get("truth"), "threshold": select.get("threshold")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--out", default=str(ROOT / "bench/results/world_levers.json"))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text())["results"] if out.is_file() else []
    for name in args.levers:
        with tempfile.TemporaryDirectory(prefix=f"lever-{name}-") as tmp:
            result = run_lever(name, *LEVERS[name], Path(tmp))
        results = [r for r in results if r["lever"] != name] + [result]
        print(json.dumps(result), flush=True)
        out.write_text(json.dumps({"results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
