"""What a new CapFilt threshold costs on the embedded default: through `select` alone, against a
scoring re-run (what every threshold change cost when scoring and choosing were one step).

Run in the project, after `dvc repro` has finished and its results are committed (nothing stale):

    python bench/threshold_change.py [--repeats 3]

Each repeat is a `dvc exp run select` with its own threshold (so DVC's run cache never answers):
- select only:  `-S select.threshold=t` re-runs `select`, never the models;
- re-scoring:   the same plus a changed `capfilt.batch_size`, which makes DVC re-run `capfilt` first.
After each run the workspace is put back (params.yaml, dvc.lock, metrics and reports from git, outputs
from the DVC cache) and the experiment removed. Writes bench/results/threshold_change.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.data.shards import atomic_write_json  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]
RESTORED = ["params.yaml", "dvc.lock", "metrics", "reports", "plots"]


def sh(args: list[str]) -> str:
    """Run a command in the project; its output, or exit with it on failure."""
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def restore() -> None:
    """The committed state: tracked files from git, stage outputs from the DVC cache."""
    sh(["git", "checkout", "--", *RESTORED])
    sh(DVC + ["checkout", "--force", "--quiet"])


def timed_experiment(name: str, settings: list[str]) -> tuple[float, list[str]]:
    """Seconds of one `dvc exp run select` with these -S settings, and the stages it ran."""
    args = DVC + ["exp", "run", "select", "--name", name]
    for s in settings:
        args += ["-S", s]
    start = time.perf_counter()
    out = sh(args)
    seconds = time.perf_counter() - start
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
    restore()
    sh(DVC + ["exp", "remove", name])
    return seconds, ran


def main() -> None:
    """Time both ways of changing the threshold, alternating, and write the medians."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "threshold_change.json"))
    args = ap.parse_args()
    if "Data and pipelines are up to date" not in sh(DVC + ["status"]):
        sys.exit("something is stale: run `dvc repro` (and commit) first")
    if sh(["git", "status", "--porcelain", "--", *RESTORED]).strip():
        sys.exit("params.yaml, dvc.lock, metrics/, reports/ or plots/ have uncommitted changes: commit them first")
    runs: dict[str, list[dict]] = {"select_only": [], "rescoring": []}
    for i in range(args.repeats):
        threshold = f"select.threshold={0.30 + 0.02 * i:.2f}"
        for way, extra in (("select_only", []), ("rescoring", [f"capfilt.batch_size={63 - i}"])):
            seconds, ran = timed_experiment(f"bench-{way}-{i}", ["select.calibrate=false", threshold, *extra])
            runs[way].append({"seconds": round(seconds, 1), "stages": ran})
            print(f"{way} #{i}: {seconds:.1f} s, ran {ran}", flush=True)
    medians = {way: statistics.median(r["seconds"] for r in rs) for way, rs in runs.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    out = {"machine": {"cpu": cpu, "python": platform.python_version()}, "repeats": args.repeats, "runs": runs,
           "median_s": medians, "ratio_rescoring_to_select": round(medians["rescoring"] / medians["select_only"], 1)}
    atomic_write_json(Path(args.out), out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
