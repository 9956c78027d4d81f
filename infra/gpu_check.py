"""The GPU check: the figures a lent GPU must give, in one run of under 8 minutes, written as JSON.

    python infra/gpu_check.py                 # on a GPU: base preset (make gpu-check)
    python infra/gpu_check.py --cpu-sized     # the same steps, tiny and short, on a CPU (the kit's own test)

Steps (each timed; one that fails is recorded with its error and the others still run):
1. pre-training, base at 224 px, bf16, DeepSpeed: steady samples/s of the last log window, and MFU
   from the step's FLOPs counted by torch's FlopCounterMode against the GPU's dense bf16 peak;
2. CapFilt, base at 384 px, a captioner and a filter over >= 2,000 web images through the scoring
   function each Ray worker runs (a decoder pool, each shard read once, keyed nucleus sampling, ITM/ITC),
   without Ray, in images/s: every shard, model loading included, and a steady pass over one shard;
3. beam-search captioning (3 beams, 5-20 tokens), images/s;
4. retrieval evaluation (ITC top-k, ITM re-rank) on 1,000 image-text pairs, seconds;
5. a short training run killed after its first checkpoint and resumed, its final weights compared
   with an uninterrupted run's.
Weights are random (nothing is downloaded): speed does not depend on them. Models come from the
library, so the figures are the project's, not a micro-benchmark's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.params import params_from_dict  # noqa: E402

SIZES = {  # what each mode runs
    "gpu": dict(preset="base", device="cuda", pretrain_size=224, pretrain_batch=128, pretrain_steps=60,
                log_every=10, capfilt_images=2048, capfilt_size=384, capfilt_batch=256, caption_images=512,
                caption_batch=128, retrieval_pairs=1000, k_test=256, resume_steps=6, loader_workers=8),
    "cpu": dict(preset="tiny", device="cpu", pretrain_size=96, pretrain_batch=8, pretrain_steps=6, log_every=2,
                capfilt_images=64, capfilt_size=96, capfilt_batch=16, caption_images=16, caption_batch=8,
                retrieval_pairs=32, k_test=8, resume_steps=6, loader_workers=1),
}
# dense bf16 tensor-core peaks (FLOP/s) for MFU
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12}


def check_params(size: dict, workdir: Path, vocab: str | None) -> Path:
    """params.yaml with the check's sizes: random initialisation, no MLflow, one process."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["preset"] = size["preset"]
    preset = raw["presets"][size["preset"]]
    preset["model"].update(vision_init=None, text_init=None)
    preset["pretrain"].update(image_size=size["pretrain_size"], batch_size=size["pretrain_batch"], epochs=1,
                              steps_per_epoch=size["pretrain_steps"], warmup_steps=2)
    raw["train"].update(procs=1, bf16=True, log_every=size["log_every"], checkpoint_every=3, num_workers=4
                        if size["device"] == "cuda" else 1)
    raw["tracking"]["uri"] = "off"
    raw["tokenizer"]["vocab"] = vocab
    raw["capfilt"].update(batch_size=size["capfilt_batch"])
    raw["inference"].update(device=size["device"], loader_workers=size["loader_workers"])
    n = size["capfilt_images"]
    raw["world"].update(image_size=size["capfilt_size"], human={"train": 64, "val": 16, "test": size["retrieval_pairs"]},
                        web={**raw["world"]["web"], "images": n, "shard_size": max(16, n // 4)})
    raw["ingest"].update(shard_size=max(16, n // 4), max_side=max(640, size["capfilt_size"]))
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def random_model(params, task: str, image_size: int, folder: Path) -> str:
    from blip.models.blip import Blip, BlipConfig
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer

    arch = params.active.model
    torch.manual_seed(0)
    model = Blip(BlipConfig(task=task, image_size=image_size, vision=arch.vision, text=arch.text,
                            embed_dim=arch.embed_dim, queue_size=arch.queue_size))
    save_pretrained(model, folder, build_tokenizer(params.tokenizer.vocab))
    return str(folder)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_pretrain(params, size: dict, data: list[str], workdir: Path) -> dict:
    """Steady pre-training samples/s through the real engine, and MFU from counted FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from blip.models.blip import Blip, BlipConfig
    from blip.tasks.pretrain.training import TRAIN
    from blip.train.engine import TrainJob, train

    job = TrainJob(name="gpu_check_pretrain", task=TRAIN, stage=params.active.pretrain, params=params, data=data,
                   out_dir=workdir / "pretrain", ckpt_dir=workdir / "pretrain_ckpt",
                   metrics_path=workdir / "pretrain.json")
    final = train(job)
    rate = final.get("final_samples_per_s")
    # FLOPs of one training step (forward + backward), counted on a small batch of the same model
    arch, b = params.active.model, 4
    model = Blip(BlipConfig(task="pretrain", image_size=size["pretrain_size"], vision=arch.vision, text=arch.text,
                            embed_dim=arch.embed_dim, queue_size=max(arch.queue_size // 64 * 64, 64))).to(size["device"])
    images = torch.randn(b, 3, size["pretrain_size"], size["pretrain_size"], device=size["device"])
    ids = torch.randint(1000, 2000, (b, params.model.text_len.pretrain), device=size["device"])
    mask = torch.ones_like(ids)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(size["device"], dtype=torch.bfloat16):
            losses = model(images, ids, mask, alpha=0.4, idx=torch.arange(b, device=size["device"]))
        sum(losses.values()).backward()
    flops_per_sample = counter.get_total_flops() / b
    name = torch.cuda.get_device_name() if size["device"] == "cuda" else ""
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"samples_per_s": rate, "steps": final.get("steps"), "batch": size["pretrain_batch"],
            "image_size": size["pretrain_size"], "flops_per_sample": flops_per_sample,
            "mfu": round(rate * flops_per_sample / peak, 4) if rate and peak else None, "peak_bf16": peak}


def step_capfilt(params, size: dict, data_dir: Path, workdir: Path) -> dict:
    """CapFilt's scoring function over every web shard, as each Ray worker of a cluster runs it (models loaded
    once, a decoder pool, each shard read once), without Ray: then one steady pass over a shard."""
    from blip.capfilt.scoring import RunSettings, decoder_for, load_member, score_web_shard
    from blip.data.web import web_shards
    from blip.launch import resolve_precision

    captioner = random_model(params, "captioner", size["capfilt_size"], workdir / "captioner")
    filt = random_model(params, "filter", size["capfilt_size"], workdir / "filter")
    device = torch.device(size["device"])
    run = RunSettings(cfg=params.capfilt, seed=0, round=1, ingest=params.ingest,
                      precision=resolve_precision("auto", device), loader_workers=size["loader_workers"])
    shards = web_shards(data_dir / "web")
    start = time.perf_counter()
    members = [load_member(captioner, device)], [load_member(filt, device)]
    decoder, _ = decoder_for(*members, run)
    images = 0
    with torch.inference_mode():
        for shard in shards:
            _, stats = score_web_shard(shard.url, *members, run, expected=shard.samples, decoder=decoder)
            images += stats.counts["images"]
        sync(size["device"])
        wall = time.perf_counter() - start
        start = time.perf_counter()
        _, stats = score_web_shard(shards[0].url, *members, run, expected=shards[0].samples, decoder=decoder)
        sync(size["device"])
    steady = time.perf_counter() - start
    decoder.close()
    return {"images": images, "image_size": size["capfilt_size"], "batch": size["capfilt_batch"],
            "precision": run.precision, "job_seconds": round(wall, 2), "job_images_per_s": round(images / wall, 2),
            "steady_images": stats.counts["web_total"],
            "steady_images_per_s": round(stats.counts["web_total"] / steady, 2)}


def step_caption_and_retrieval(params, size: dict, data_dir: Path, workdir: Path) -> dict:
    """Beam-search captioning images/s, and retrieval evaluation on `retrieval_pairs` pairs."""
    from blip.evaluate.common import EvalSet, load_eval_set
    from blip.evaluate.retrieval import evaluate_retrieval
    from blip.inference import load
    from blip.launch import autocast
    from blip.models.generate import GenerationSettings

    test = load_eval_set(data_dir / "human" / "test")
    out = {}
    captioner = load(workdir / "captioner", device=size["device"])
    images = (test.images * (size["caption_images"] // len(test.images) + 1))[:size["caption_images"]]
    settings = GenerationSettings("beam", num_beams=3, max_length=20, min_length=5)
    captioner.caption(images[:size["caption_batch"]], settings)  # warm-up
    sync(size["device"])
    start = time.perf_counter()
    for i in range(0, len(images), size["caption_batch"]):
        captioner.caption(images[i:i + size["caption_batch"]], settings)
    sync(size["device"])
    out["caption_beam3"] = {"images": len(images), "images_per_s": round(len(images) / (time.perf_counter() - start), 2),
                            "precision": captioner.precision}
    filt = load(workdir / "filter", device=size["device"])
    pairs = EvalSet(test.keys, test.images, [caps[:1] for caps in test.captions])  # one caption per image
    start = time.perf_counter()
    with autocast(filt.precision, filt.device):
        metrics = evaluate_retrieval(filt.model, filt.tokenizer, pairs, filt.transform, size["k_test"])
    sync(size["device"])
    out["retrieval"] = {"pairs": metrics["texts"], "k_test": size["k_test"],
                        "seconds": round(time.perf_counter() - start, 2), "precision": filt.precision}
    return out


def step_kill_and_resume(params_file: Path, data: list[str], workdir: Path, steps: int) -> dict:
    """A short training run killed after its step-3 checkpoint and resumed, against one never killed."""
    from safetensors.torch import load_file

    # a fresh process of its own: not a rank of this process's (single-process) DeepSpeed group
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {**{k: v for k, v in os.environ.items() if k not in launcher}, "PYTHONPATH": str(ROOT)}

    def cmd(name: str) -> list[str]:
        return [sys.executable, "-m", "blip.cli", "--params", str(params_file), "pretrain", "--data", *data,
                "--out", str(workdir / name), "--ckpt-dir", str(workdir / f"{name}_ckpt"), "--max-steps", str(steps),
                "--metrics", str(workdir / f"{name}.json"), "--plot", str(workdir / f"{name}.csv")]

    subprocess.run(cmd("whole"), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(cmd("killed"), env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (workdir / "killed_ckpt" / "latest").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed_mid_run = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd("killed"), env=env, check=True, capture_output=True)
    a = load_file(workdir / "whole" / "model.safetensors")
    b = load_file(workdir / "killed" / "model.safetensors")
    diffs = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    return {"killed_mid_run": killed_mid_run, "tensors": len(a), "tensors_equal": sum(v == 0 for v in diffs.values()),
            "max_abs_diff": max(diffs.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-sized", action="store_true", help="tiny, short, on the CPU (tests the kit anywhere)")
    ap.add_argument("--vocab", default=None, help="BERT vocab.txt (the GPU kit ships one)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/gpu_check_<mode>.json)")
    args = ap.parse_args()
    mode = "cpu" if args.cpu_sized else "gpu"
    size = SIZES[mode]
    if mode == "gpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --cpu-sized to run the check's steps on the CPU", file=sys.stderr)
        return 2
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "timm", "deepspeed", "webdataset", "blip-capfilt"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    report = {"mode": mode, "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                        "cpus": os.cpu_count(), "versions": versions,
                                        "device": torch.cuda.get_device_name() if mode == "gpu" else platform.processor()},
              "steps": {}}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kit_vocab = ROOT / "vocab.txt"  # the GPU kit ships bert-base-uncased's vocabulary beside the script
        params_file = check_params(size, work, args.vocab or (str(kit_vocab) if kit_vocab.is_file() else None))
        params = params_from_dict(yaml.safe_load(params_file.read_text()))
        from blip.data.karpathy import ingest_karpathy
        from blip.data.web import register_web
        from blip.world.generate import generate_world

        t = time.perf_counter()  # the world's data, as `prepare` makes it, its web set registered without Ray
        generate_world(params.world, params.seed, work / "data" / "world")
        world = work / "data" / "world"
        ingest_karpathy(world / "human" / "karpathy.json", world / "human", work / "data" / "human", params.ingest,
                        dataset="world")
        register_web(str(world / "web"), work / "data" / "web", on_ray=False)
        report["data_seconds"] = round(time.perf_counter() - t, 1)
        data = [str(work / "data" / "human" / "train"), str(work / "data" / "web")]
        steps = {"pretrain": lambda: step_pretrain(params, size, data, work),
                 "capfilt": lambda: step_capfilt(params, size, work / "data", work),
                 "caption_and_retrieval": lambda: step_caption_and_retrieval(params, size, work / "data", work),
                 "kill_and_resume": lambda: step_kill_and_resume(params_file, data, work, size["resume_steps"])}
        for name, step in steps.items():
            t = time.perf_counter()
            try:
                report["steps"][name] = {"ok": True, **step()}
            except Exception as e:  # noqa: BLE001 - a failed step is a finding; the others still run
                report["steps"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                         "traceback": traceback.format_exc()[-4000:]}
            report["steps"][name]["seconds"] = round(time.perf_counter() - t, 1)
            print(name, json.dumps(report["steps"][name])[:600], flush=True)
    report["seconds"] = round(time.time() - started, 1)
    out = Path(args.out or ROOT / "bench" / "results" / f"gpu_check_{mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"gpu_check: {report['seconds']} s -> {out}")
    return 0 if all(s["ok"] for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
