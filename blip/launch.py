"""Rank, world and device from whatever launched this process; we run no cluster manager of our own.

Training and evaluation across ranks run under a launcher, which tells each process who it is:

| launcher                                   | rank                     | world                     | local rank      |
|--------------------------------------------|--------------------------|---------------------------|-----------------|
| torchrun, the DeepSpeed launcher, `--procs` | RANK                     | WORLD_SIZE                | LOCAL_RANK      |
| Slurm tasks (`srun --ntasks`)              | SLURM_PROCID             | SLURM_NTASKS              | SLURM_LOCALID   |
| nothing                                    | 0                        | 1                         | 0               |

Per-shard work (CapFilt, select, registration, materialize) has no ranks: it runs as Ray tasks
(blip/cluster.py), and a Ray worker with a GPU sees that one GPU only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping

import torch

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
PRECISION_CHOICES = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Ranks:
    """Who this process is among the job's processes."""

    rank: int
    world: int
    local_rank: int     # the process's index on its machine: which local GPU it takes
    launcher: str


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; "
                         "it is set by the launcher: check how this process was started") from None
    if number < 0:
        raise ValueError(f"environment variable {name}={value!r} must not be negative")
    return number


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """This process's rank, world size and local rank, read from its launcher's variables."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env"
        ranks = Ranks(_int(env, "RANK"), _int(env, "WORLD_SIZE"),
                      _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0, launcher)
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        ranks = Ranks(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"),
                      _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0, "slurm")
    else:
        ranks = Ranks(0, 1, 0, "none")
    if not 0 <= ranks.rank < ranks.world:
        raise ValueError(f"rank {ranks.rank} is outside a world of {ranks.world} ({ranks.launcher} launcher "
                         "variables disagree)")
    return ranks


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The device a model runs on: `auto` takes this rank's local GPU when CUDA is present, else the CPU."""
    spec = spec.strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec not in ("auto", "cuda") and not spec.startswith("cuda:"):
        raise ValueError(f"device {spec!r} is not one of {DEVICE_CHOICES}")
    available = torch.cuda.is_available()
    if spec == "auto" and not available:
        return torch.device("cpu")
    if not available:
        raise ValueError(f"device {spec!r} was asked for, but CUDA is not available on this machine "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                         "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if spec in ("auto", "cuda"):
        # a launcher that gives each rank its own CUDA_VISIBLE_DEVICES leaves one device per rank: index 0
        return torch.device("cuda", local_rank % count)
    index = spec.split(":", 1)[1]
    if not index.isdigit() or int(index) >= count:
        raise ValueError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}")
    return torch.device("cuda", int(index))


def resolve_precision(spec: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on a GPU and fp32 on a CPU; `bf16` and `fp32` are taken as asked."""
    if spec not in PRECISION_CHOICES:
        raise ValueError(f"precision {spec!r} is not one of {' | '.join(PRECISION_CHOICES)}")
    if spec == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return spec


def autocast(precision: str, device: torch.device):
    """The context models run in: as they are (fp32) or under bf16 autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def join_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the launcher's process group, for work whose ranks exchange results (evaluation across ranks).

    Only launchers with a rendezvous (torchrun, the DeepSpeed launcher) can: plain `srun` tasks never meet.
    A world of one needs no group.
    """
    import torch.distributed as dist

    if ranks.world == 1:
        return
    if ranks.launcher not in ("torchrun", "env") or "MASTER_ADDR" not in os.environ:
        raise ValueError(f"this command's ranks exchange results, which needs a rendezvous; the {ranks.launcher} "
                         "launcher gives none: launch it with torchrun or the DeepSpeed launcher")
    if dist.is_initialized():  # a group this process already joined must be the launcher's, or results mix
        if dist.get_world_size() != ranks.world:
            raise ValueError(f"this process is already in a process group of {dist.get_world_size()}, but its "
                             f"launcher says {ranks.world} ranks: run the command in a process of its own")
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the rendezvous of a local run)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relaunch(procs: int) -> int | None:
    """Re-run this command under the DeepSpeed launcher with `procs` processes (None: run here, when one process is
    asked for or this already is one of the launched processes); the launcher's exit code otherwise."""
    if procs <= 1 or "WORLD_SIZE" in os.environ:
        return None
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(procs), "--no_local_rank",
           "--master_port", str(free_port()), "--module", "blip.cli", *sys.argv[1:]]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)
