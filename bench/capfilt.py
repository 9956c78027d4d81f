"""CapFilt throughput: images/s through the real shard path (decode JPEG, one nucleus caption per
image, ITM + ITC of the web text and the synthetic caption, write kept samples), with captioner and
filter of a preset at an image size. Weights are random: speed does not depend on them, and every
caption is decoded to its full length (min_length = max_length), the worst case.

    python bench/capfilt.py                                  # tiny at 96 px, base at 384 px (CPU)
    python bench/capfilt.py --device cuda --cases base:384:2048:bf16:8 --batch 256

Writes bench/results/capfilt_<device>.json. The yardstick: the reference release's pieces (one
nucleus caption + two ITM passes per image, base, 384 px) cost about 6 s per image on a 2-core CPU.
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

from blip.capfilt.scoring import Member, RunSettings, score_web_shard
from blip.data.prepare import prepare
from blip.data.web import web_shards
from blip.inference import BlipInference
from blip.models.blip import Blip, BlipConfig
from blip.params import load_params
from blip.tokenizer import build_tokenizer
from blip.world.generate import write_sources

ROOT = Path(__file__).resolve().parents[1]


def member(preset: str, task: str, image_size: int, device: str) -> Member:
    arch = load_params(ROOT / "params.yaml").presets[preset].model
    torch.manual_seed(0)
    model = Blip(BlipConfig(task=task, image_size=image_size, vision=arch.vision, text=arch.text,
                            embed_dim=arch.embed_dim, queue_size=arch.queue_size)).to(device).eval()
    return Member(BlipInference(model, build_tokenizer(), torch.device(device), precision="fp32"), f"{preset}-{task}")


def run_case(preset: str, image_size: int, images: int, batch: int, repeats: int, device: str, web: str,
             precision: str, workers: int) -> dict:
    params = load_params(ROOT / "params.yaml")
    cfg = dataclasses.replace(params.capfilt, batch_size=batch, max_length=20, min_length=20)
    run = RunSettings(cfg=cfg, seed=0, round=1, ingest=params.ingest, precision=precision, loader_workers=workers)
    captioner, filt = member(preset, "captioner", image_size, device), member(preset, "filter", image_size, device)
    shard = web_shards(web)[0]
    times = []
    for r in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        with torch.inference_mode():
            _, stats = score_web_shard(shard.url, [captioner], [filt], run, limit=images, expected=shard.samples)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if r:
            times.append(time.perf_counter() - start)
    n = stats.counts["web_total"]
    median = statistics.median(times)
    return {"preset": preset, "image_size": image_size, "precision": precision, "images": n, "batch": batch,
            "loader_workers": workers,
            "seconds_median": round(median, 2), "images_per_s": round(n / median, 3),
            "s_per_image": round(median / n, 3), "seconds_all": [round(t, 2) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="+", default=["tiny:96:256:fp32:0", "tiny:96:256:fp32:2", "base:384:16:fp32:0",
                                                   "base:384:16:fp32:2", "base:384:16:bf16:0", "base:384:16:bf16:2"],
                    help="preset:image_size:images:precision:loader_workers (precision fp32 | bf16 autocast)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        # real web shards of the built-in world (JPEG bytes, noisy alt-texts): 1 shard of 256 images
        world = dataclasses.replace(params.world, web=dataclasses.replace(params.world.web, images=256, shard_size=256),
                                    human=dataclasses.replace(params.world.human, train=4, val=2, test=2))
        small = dataclasses.replace(params, world=world)
        prepare(small, tmp, write_sources(small, Path(tmp) / "world")[0])
        results = []
        for case in args.cases:
            preset, size, n, precision, workers = case.split(":")
            row = run_case(preset, int(size), int(n), min(args.batch, int(n)), args.repeats, args.device,
                           f"{tmp}/web", precision, int(workers))
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "bench" / "results" / f"capfilt_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                                           "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
                                           else platform.processor() or "cpu"},
                               "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
