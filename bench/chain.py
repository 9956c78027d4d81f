"""Wall time of the whole pipeline: `dvc repro` on a fresh clone of this repository's HEAD (nothing in
DVC's cache, so every stage runs), stage by stage, then a second `dvc repro` (should do nothing).

    python bench/chain.py                  # the embedded default, in a temporary folder
    python bench/chain.py -S rounds=2      # with param overrides (`dvc exp run -S` syntax, applied to params.yaml)

Writes bench/results/chain_cpu.json: seconds per stage (from DVC's "Running stage" lines to the next),
the total and the second run's time. Uses this environment's Python and tools (set-up is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def set_param(params: dict, assignment: str) -> None:
    """Apply one `section.key=value` override (the value parsed as YAML)."""
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = params
    for part in path:
        node = node[part]
    node[last] = yaml.safe_load(value)


def timed_repro(repo: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Run `dvc repro`; the total seconds and the seconds per stage (its output's tail if it fails)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stages: dict[str, float] = {}
    current, since, tail = None, start, []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if current:
                stages[current] = round(now - since, 1)
            current, since = line.split("'")[1], now
    code = proc.wait()
    end = time.perf_counter()
    if current:
        stages[current] = round(end - since, 1)
    if code:
        raise SystemExit(f"dvc repro failed (exit {code}):\n{''.join(tail)}")
    return round(end - start, 1), stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="param override, e.g. rounds=2")
    parser.add_argument("--out", default=str(ROOT / "bench/results/chain_cpu.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        if args.overrides:
            params = yaml.safe_load((repo / "params.yaml").read_text())
            for assignment in args.overrides:
                set_param(params, assignment)
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the environment's console scripts (blip, dvc) first on PATH, as `uv run` does
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        total, stages = timed_repro(repo, env)
        second, rerun = timed_repro(repo, env)

    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
              "commit": commit, "overrides": args.overrides, "seconds_total": total, "minutes_total": round(total / 60, 1),
              "seconds_per_stage": stages, "second_repro_seconds": second, "second_repro_ran": sorted(rerun)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
