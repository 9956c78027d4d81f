"""What a benchmark's JSON records of where it ran: the machine, its CPU model and the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (platform.processor() is empty on Linux)."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def where() -> dict:
    """{"machine": platform, CPUs, CPU model; "commit": HEAD's short hash (with '+changes' when the tree is dirty)}."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": cpu_model()},
            "commit": head.stdout.strip() + ("+changes" if dirty else "")}
