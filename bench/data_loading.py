"""Data-loading throughput: images/s through read + decode + BLIP's training augmentation.

Two cases, each with 2 data-loader workers: the tiny preset (built-in world at 96 px, crops of 96 px)
and the fine-tuning resolution (384 px images, crops of 384 px). Writes bench/results/data_loading.json
with the median of several timed passes.

    python bench/data_loading.py [--repeats 5] [--batches 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from blip.data.loader import build_loader
from blip.data.selected import training_data
from blip.data.transforms import build_transform
from blip.data.web import register_web
from blip.params import load_params
from blip.world.generate import write_web

ROOT = Path(__file__).resolve().parents[1]


def measure(web: str, image_size: int, batches: int, repeats: int, workers: int) -> dict:
    params = load_params(ROOT / "params.yaml")
    data = training_data([web], params.ingest)  # a registered web set, read in place by the web rules
    tf = build_transform("finetune" if image_size >= 384 else "pretrain", image_size, params.loader)
    rates = []
    for r in range(repeats + 1):  # the first pass warms the page cache and is not counted
        torch.manual_seed(r)
        loader, _ = build_loader(data.shards, tf, 32, train=True, seed=r, num_workers=workers,
                                 max_words=params.ingest.max_words, resampled=True, batches_per_epoch=batches,
                                 joiner=data.joiner)
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += batch.images.shape[0]
        if r:
            rates.append(n / (time.perf_counter() - start))
    return {"image_size": image_size, "workers": workers, "batch_size": 32, "batches": batches,
            "images_per_s_median": round(statistics.median(rates), 1), "images_per_s_all": [round(x, 1) for x in rates]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "bench/results/data_loading.json"))
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (params.world.image_size, 384):
            world = dataclasses.replace(params.world, image_size=size,
                                        web=dataclasses.replace(params.world.web, images=640, shard_size=80))
            write_web(world, params.seed, Path(tmp) / f"raw{size}")
            register_web(str(Path(tmp) / f"raw{size}"), Path(tmp) / f"web{size}", on_ray=False)
            results.append(measure(str(Path(tmp) / f"web{size}"), size, args.batches, args.repeats, 2))
            print(json.dumps(results[-1]))
    report = {"benchmark": "data_loading", "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                       "torch": torch.__version__}, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
