"""One training engine, on DeepSpeed, for every task; CPU (gloo) or GPU (nccl).

    python -m blip.cli pretrain                                  # one process
    deepspeed --num_gpus 8 --no_local_rank --module blip.cli pretrain    # 8 GPUs (or CPU processes)
    deepspeed --hostfile infra/hostfile ... --module blip.cli pretrain   # several nodes

The data stream is resampled (epoch-less shards) and every random choice is seeded by position:
samples and augmentations by (seed, epoch, key), the step's own randomness (ITM negatives, dropout)
by (seed, micro-step, rank). So a run resumed from a checkpoint replays exactly the batches and
random draws of an uninterrupted one and ends with the same weights (CPU, same params).
Momentum encoders and queues live in the module (saved with it) but never in the optimizer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from webdataset.utils import make_seed

from blip.config import Params, StageConfig, to_dict
from blip.data.loader import build_loader
from blip.data.selected import training_data
from blip.data.transforms import build_transform
from blip.launch import free_port
from blip.models.blip import Blip, BlipConfig, build_model as build_task_model
from blip.models.checkpoints import init_task_model, init_text_from_bert, save_pretrained
from blip.models.vit import load_imagenet_weights, set_fused_attention
from blip.tokenizer import build_tokenizer
from blip.tracking import Tracker, data_hashes, git_commit
from blip.train.schedules import alpha_at, learning_rate
from blip.train.task import StepContext, TrainTask

@dataclass
class TrainJob:
    """What one stage trains: a task model on some datasets, from scratch or from a model."""

    name: str                      # stage name: pretrain | finetune_captioner | finetune_filter | ...
    task: TrainTask                # what it trains: a task's model and batch inputs (blip/tasks/<task>/task.py)
    stage: StageConfig
    params: Params
    data: list[str]                # dataset folders (shards + manifest)
    out_dir: Path                  # the final model folder
    ckpt_dir: Path                 # resumable DeepSpeed checkpoints
    init_from: str | None = None   # a model to start from (fine-tuning); None = from scratch
    metrics_path: Path | None = None
    plot_path: Path | None = None
    max_steps: int | None = None   # stop after this many optimizer steps (tests, smoke runs)
    extra_tags: dict = field(default_factory=dict)
    freeze_vision: bool = False    # the ViT stays as it starts (finetune_dialog / finetune_nlvr.freeze_vision)


# what a launcher sets for each rank; a run in a plain process sets them for itself, for its own duration
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int, torch.device]]:
    """torch.distributed through DeepSpeed (gloo on CPU) for one training run: (rank, world, device).

    Under a launcher, the launcher's group. In a plain process (`blip pretrain` with one process, a notebook, a
    test), a world of one of its own, through the launcher's variables set for the run's duration only: a command
    this process starts later must not take itself for a launched rank and rendezvous on this run's port. The
    group itself stays for the process's life (DeepSpeed keeps its groups; a later run here reuses it)."""
    import deepspeed
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    own = "RANK" not in os.environ
    saved = {name: os.environ.get(name) for name in LAUNCH_VARS} if own else {}
    if own:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())))
    cuda = torch.cuda.is_available()
    if not cuda and os.environ["WORLD_SIZE"] == "1":
        # DeepSpeed's shared-memory all-reduce speeds up several CPU processes; alone, it is only a C++
        # build (about two minutes the first time on a machine) and a 5 s load per stage. Marked
        # incompatible, DeepSpeed skips it and uses gloo
        deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        for name, value in saved.items():  # a launched rank's variables are the launcher's: left as they are
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_model(job: TrainJob) -> Blip:
    """From scratch (same seed on every rank, so queues agree) or from `job.init_from`."""
    m = job.params.model
    arch = job.params.active.model
    overrides = dict(momentum=m.momentum, temp=m.temp, temp_min=arch.temp_min,
                     itm_random_negatives=arch.itm_random_negatives,
                     label_smoothing=m.label_smoothing, prompt=m.prompt,
                     mean=job.params.loader.mean, std=job.params.loader.std)
    overrides.update(job.task.config(job.params))
    torch.manual_seed(job.params.seed)
    task = job.task.model
    if job.init_from:
        return init_task_model(job.init_from, task, job.stage.image_size, **overrides)
    model = build_task_model(BlipConfig(task=task, image_size=job.stage.image_size, vision=arch.vision,
                                        text=arch.text, embed_dim=arch.embed_dim, queue_size=arch.queue_size,
                                        **overrides))
    # BLIP starts pre-training from an ImageNet ViT and BERT; only the fusion layers start random
    if arch.vision_init:
        load_imagenet_weights(model.visual_encoder, arch.vision_init)
    if arch.text_init:
        init_text_from_bert(model, arch.text_init)
    model.copy_params()
    return model


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def deepspeed_config(job: TrainJob, bf16: bool, world: int) -> dict:
    """The engine's DeepSpeed settings; ZeRO applies only with several processes (one has nothing to shard)."""
    t = job.params.train
    # a single process's ZeRO "partition" is everything, but its gradient flattening still costs
    # 8-16% of a tiny-preset CPU step: stage 0 gives the same updates without it
    return {"train_micro_batch_size_per_gpu": job.stage.batch_size,
            "gradient_accumulation_steps": job.stage.grad_accum,
            "gradient_clipping": t.grad_clip,
            "zero_optimization": {"stage": t.zero_stage if world > 1 else 0},
            "bf16": {"enabled": bf16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False}


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fingerprint(job: TrainJob, world: int) -> str:
    """What a checkpoint must match to be resumed: config, architecture, data, start model, world size."""
    import hashlib

    init = Path(job.init_from) / "model.safetensors" if job.init_from else None
    parts = {"stage": to_dict(job.stage), "arch": to_dict(job.params.active.model), "model": to_dict(job.params.model),
             "train": to_dict(job.params.train), "loader": to_dict(job.params.loader), "seed": job.params.seed,
             "task": job.task.name, "world": world, "data": data_hashes(job.data), "freeze_vision": job.freeze_vision,
             "init": hashlib.sha256(init.read_bytes()).hexdigest() if init and init.is_file() else job.init_from}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _resumable_tag(ckpt_dir: Path, expected: str, rank: int) -> str | None:
    """The latest checkpoint's tag if it was written by this same job; a stale folder is cleared."""
    latest = ckpt_dir / "latest"
    if not latest.is_file():
        return None
    stamp = ckpt_dir / "fingerprint"
    if stamp.is_file() and stamp.read_text().strip() == expected:
        return latest.read_text().strip()
    dist.barrier()  # every rank has looked before rank 0 clears it
    if rank == 0:
        print(f"{ckpt_dir}: checkpoints of another configuration or data; starting afresh", flush=True)
        shutil.rmtree(ckpt_dir)
    dist.barrier()
    return None


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    tags = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir())
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def train(job: TrainJob) -> dict:
    """Run (or resume) one training stage; returns its final metrics. All ranks call it."""
    with process_group() as (rank, world, device):
        metrics = _train(job, rank, world, device)
        if world > 1 and device.type == "cpu":
            release_shared_memory(rank)
        return metrics


def release_shared_memory(rank: int) -> None:
    """Remove this rank's buffer of DeepSpeed's shared-memory all-reduce (CPU ranks on one machine) once every
    rank is done with the collectives: DeepSpeed never unlinks it, so each run of two CPU processes left 132 MB in
    /dev/shm, RAM held until a reboot. The ranks' mappings stay valid until they exit."""
    dist.barrier()
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_{os.environ['MASTER_PORT']}_{rank}"
    Path("/dev/shm", name).unlink(missing_ok=True)


def _train(job: TrainJob, rank: int, world: int, device: torch.device) -> dict:
    import deepspeed

    p, stage = job.params, job.stage
    # bf16 on a GPU: DeepSpeed's (bf16 weights, fp32 master copy). On a CPU: autocast of the forward pass
    # (fp32 weights), where the CPU has bf16 instructions (1.1-1.3x per tiny-preset step there)
    bf16 = p.train.bf16 and device.type == "cuda"
    cpu_autocast = p.train.bf16 and device.type == "cpu" and cpu_has_bf16()
    precision = "bf16" if bf16 else "bf16-autocast" if cpu_autocast else "fp32"
    model = build_model(job)
    if cpu_autocast:
        # the CPU flash-attention kernel's bf16 backward is slow at ViT sequence lengths (a tiny-preset filter
        # step: 0.25 s fused, 0.19 s plain; at fp32 the two are even): the ViTs use plain attention
        set_fused_attention(model, False)
    if p.train.grad_checkpointing:
        model.set_grad_checkpointing(True)
    # foreach: one kernel per operation over all tensors (torch picks the per-tensor loop on a CPU by default)
    if job.freeze_vision:
        model.visual_encoder.requires_grad_(False)  # its features stay as they start (see params.yaml)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=stage.lr, weight_decay=stage.weight_decay,
                                  foreach=True)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=deepspeed_config(job, bf16, world))
    module: Blip = engine.module
    for _, momentum in module.momentum_pairs():
        momentum.float()  # DeepSpeed's bf16 cast every parameter; the EMA must stay fp32
    for buf in module.buffers():  # DeepSpeed broadcasts parameters only; queues must agree too
        dist.broadcast(buf, 0)

    tokenizer = build_tokenizer(p.tokenizer.vocab)
    context = StepContext(tokenizer, p, stage, device, module.cfg.prompt)
    data = training_data(job.data, p.ingest)
    samples = job.task.count(job.data) if job.task.count else data.samples
    global_batch = stage.batch_size * world * stage.grad_accum
    steps_per_epoch = steps_for(samples, stage, world)
    micro_per_epoch = steps_per_epoch * stage.grad_accum
    total_steps = steps_per_epoch * stage.epochs
    if job.max_steps:
        total_steps = min(total_steps, job.max_steps)
    transform = build_transform(job.task.transform, stage.image_size, p.loader)

    start_micro, history = 0, []
    stamp = fingerprint(job, world)
    tag = _resumable_tag(job.ckpt_dir, stamp, rank)
    if tag:
        _, client = engine.load_checkpoint(str(job.ckpt_dir), tag=tag)
        start_micro, history = client["next_micro_step"], client.get("history", [])

    tracker = Tracker(p.tracking.uri, p.tracking.experiment, job.name, enabled=rank == 0)
    tracker.params({"stage": job.name, "preset": p.preset, "seed": p.seed, "world_size": world,
                    job.name: to_dict(stage), "model": to_dict(p.model), "train": to_dict(p.train),
                    "architecture": to_dict(p.active.model), "init_from": job.init_from or "scratch",
                    "data": ",".join(job.data), "resumed_from": tag or "none", "precision": precision})
    tracker.tags({"stage": job.name, "task": job.task.name, "git_commit": git_commit(),
                  **data_hashes(job.data), **job.extra_tags})
    if rank == 0:
        print(f"[{job.name}] {job.task.name}, {samples} samples, {world} process(es), global batch {global_batch}, "
              f"{steps_per_epoch} steps/epoch x {stage.epochs} epochs, {precision}"
              + (f", resuming at micro-step {start_micro} ({tag})" if tag else ""), flush=True)

    engine.train()
    micro = start_micro
    window_start, window_samples = time.time(), 0
    status = "FAILED"
    try:
        while micro < total_steps * stage.grad_accum:
            epoch, in_epoch = divmod(micro, micro_per_epoch)
            loader, handle = build_loader(data.shards, transform, stage.batch_size, train=True, seed=p.seed,
                                          num_workers=p.train.num_workers, max_words=p.ingest.max_words,
                                          resampled=True, batches_per_epoch=micro_per_epoch,
                                          shuffle_buffer=p.loader.shuffle_buffer,
                                          shuffle_initial=p.loader.shuffle_initial, skip_batches=in_epoch,
                                          joiner=data.joiner, expand=job.task.expand)
            handle.set(epoch)
            for batch in loader:
                step = micro // stage.grad_accum  # optimizer step this micro-batch belongs to
                torch.manual_seed(make_seed(p.seed, micro, rank))
                lr = learning_rate(step, steps_per_epoch, stage)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                alpha = alpha_at(step, steps_per_epoch, p.model.alpha, stage.alpha_ramp_epochs)
                inputs = job.task.inputs(batch, replace(context, alpha=alpha))
                images = batch.images.to(device, torch.bfloat16 if bf16 else torch.float32)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_autocast):
                    losses = engine(images, **inputs)
                engine.backward(sum(losses.values()))
                boundary = engine.is_gradient_accumulation_boundary()
                engine.step()
                micro += 1
                window_samples += len(batch.keys) * world
                if boundary:
                    module.momentum_update()  # once per optimizer step, not per micro-batch
                    done = micro // stage.grad_accum
                    if done % p.train.log_every == 0 or done == total_steps:
                        values = torch.stack([v.detach().float() for v in losses.values()])
                        dist.all_reduce(values)
                        row = {k: (v / world).item() for k, v in zip(losses, values)}
                        rate = window_samples / max(1e-9, time.time() - window_start)
                        row.update(step=done, epoch=epoch, lr=lr, samples_per_s=rate, memory_mb=_memory_mb(device))
                        history.append(row)
                        tracker.metrics({f"train/{k}": v for k, v in row.items() if k not in ("step", "epoch")},
                                        step=done)
                        if rank == 0:
                            eta = (total_steps - done) * global_batch / max(rate, 1e-9)
                            print(f"[{job.name}] epoch {epoch + 1}/{stage.epochs} step {done}/{total_steps} "
                                  + " ".join(f"{k} {row[k]:.3f}" for k in losses)
                                  + f" lr {lr:.2e} {rate:.1f} samples/s eta {eta / 60:.1f} min", flush=True)
                        window_start, window_samples = time.time(), 0
                    if done % p.train.checkpoint_every == 0 or done == total_steps:
                        engine.save_checkpoint(str(job.ckpt_dir), tag=f"step{done:08d}",
                                               client_state={"next_micro_step": micro, "history": history})
                        if rank == 0:
                            (job.ckpt_dir / "fingerprint").write_text(stamp + "\n")
                            _prune_checkpoints(job.ckpt_dir, p.train.keep_checkpoints)
                    if done >= total_steps:
                        break
        final = {f"final_{k}": v for k, v in history[-1].items() if k not in ("step", "epoch")} if history else {}
        final.update(steps=total_steps, samples_seen=total_steps * global_batch)
        if rank == 0:
            save_pretrained(module, job.out_dir, tokenizer,
                            extra={"stage": job.name, "trained_steps": total_steps, "data": job.data,
                                   "init_from": job.init_from})
            _write_outputs(job, history, final, tracker)
        tracker.metrics({k: v for k, v in final.items() if isinstance(v, (int, float))})
        status = "FINISHED"
        dist.barrier()
        return final
    finally:
        tracker.end(status)


def _write_outputs(job: TrainJob, history: list[dict], final: dict, tracker: Tracker) -> None:
    """Metrics JSON and loss-curve CSV (for DVC), the curve as PNG and the resolved config (for MLflow)."""
    if job.metrics_path:
        job.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        job.metrics_path.write_text(json.dumps(final, indent=1, sort_keys=True) + "\n")
        tracker.artifact(job.metrics_path)
    if job.plot_path and history:
        job.plot_path.parent.mkdir(parents=True, exist_ok=True)
        keys = [k for k in history[0] if k not in ("epoch",)]
        lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" for k in keys) for row in history]
        job.plot_path.write_text("\n".join(lines) + "\n")
        png = job.plot_path.with_suffix(".png")
        _plot(history, png, job.name)
        tracker.artifact(png, "plots")
        tracker.artifact(job.plot_path, "plots")
    tracker.dict_artifact({"stage": to_dict(job.stage), "params": to_dict(job.params), "data": job.data,
                           "init_from": job.init_from, "argv": sys.argv}, "resolved_config.json")


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in history]
    for k in history[0]:
        if k not in ("step", "epoch", "lr", "samples_per_s", "memory_mb"):  # the rest are the task's losses
            ax.plot(steps, [r[k] for r in history], label=k)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def steps_for(samples: int, stage: StageConfig, world: int) -> int:
    """Optimizer steps per epoch for a dataset size (the engine's rule, for planning)."""
    return stage.steps_per_epoch or max(1, math.floor(samples / (stage.batch_size * world * stage.grad_accum)))
