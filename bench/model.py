"""Model benchmarks: one pre-training step (ITC+ITM+LM, forward + backward + AdamW + EMA) and caption
generation, on whatever device is given (CPU by default). Writes bench/results/model_<device>.json.

    python bench/model.py                         # tiny + base train steps, base generation at 384 px
    python bench/model.py --device cuda --presets base --precisions bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from blip.models.blip import Blip, BlipConfig
from blip.models.generate import GenerationSettings, generate_ids
from blip.params import load_params
from blip.tokenizer import build_tokenizer, tokenize

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "a large red circle to the left of a small blue square on a striped white background"


def _model(preset: str, task: str, image_size: int, device: str) -> Blip:
    params = load_params(ROOT / "params.yaml")
    arch = params.presets[preset].model
    torch.manual_seed(0)
    cfg = BlipConfig(task=task, image_size=image_size, vision=arch.vision, text=arch.text,
                     embed_dim=arch.embed_dim, queue_size=arch.queue_size)
    return Blip(cfg).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(preset: str, precision: str, batch: int, steps: int, warmup: int, device: str) -> dict:
    image_size = 224 if preset != "tiny" else load_params(ROOT / "params.yaml").world.image_size
    model = _model(preset, "pretrain", image_size, device).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5, weight_decay=0.05)
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    ids, mask = tokenize(build_tokenizer(), [CAPTION] * batch, 30)
    ids, mask = ids.to(device), mask.to(device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with autocast:
            losses = model(images, ids, mask, alpha=0.4)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
        model.momentum_update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"preset": preset, "precision": precision, "image_size": image_size, "batch": batch,
            "step_s_median": round(median, 3), "samples_per_s": round(batch / median, 2),
            "step_s_all": [round(t, 3) for t in times]}


def generation(preset: str, method: str, batch: int, image_size: int, repeats: int, device: str,
               precision: str) -> dict:
    model = _model(preset, "captioner", image_size, device).eval()
    tokenizer = build_tokenizer()
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    # min_length = max_length: every run decodes the full 20 tokens, as the yardstick does
    settings = GenerationSettings(method, num_beams=3, max_length=20, min_length=20)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        with autocast:
            generate_ids(model, images, tokenizer, settings)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"preset": preset, "method": method, "precision": precision, "image_size": image_size, "batch": batch,
            "seconds_median": round(median, 2), "images_per_s": round(batch / median, 3),
            "seconds_all": [round(t, 2) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "generate"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results: dict = {"train_step": [], "generation": []}
    if "train" not in args.skip:
        for preset in args.presets:
            for precision in args.precisions:
                steps = args.steps if preset != "tiny" else 10
                results["train_step"].append(train_step(preset, precision, args.batch, steps, 1, args.device))
                print(json.dumps(results["train_step"][-1]), flush=True)
    if "generate" not in args.skip:
        gen_preset = "base" if "base" in args.presets else args.presets[0]
        for method in ("beam", "nucleus"):
            results["generation"].append(generation(gen_preset, method, args.batch, 384, 3, args.device, "fp32"))
            print(json.dumps(results["generation"][-1]), flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"benchmark": "model", "device": args.device, "device_name": device_name,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}, **results}
    out = Path(args.out or ROOT / f"bench/results/model_{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
