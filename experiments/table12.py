"""The paper's Table 12 on the embedded default, over seeds: does pre-training on the bootstrapped data beat
pre-training on the noisy data for as long? The baseline sees the noisy set with its samples replicated to the
bootstrapped set's samples per epoch, the new model the bootstrapped set, for the same number of steps.

    python experiments/table12.py --seeds 0 1 2     # queue one DVC experiment per seed, run the queue, tabulate
    python experiments/table12.py --tabulate        # tabulate the experiments already run

Both arms read `presets.<preset>.pretrain.steps_per_epoch`, set here to the bootstrapped set's samples per epoch
(from this workspace's metrics/select.json), so the baseline's resampled loader draws the noisy set's samples as
often as the bootstrapped set holds: every sample, web texts included, about samples/noisy times per epoch
(the paper replicates the web texts alone). The seed changes everything seeded: the world, the initialisation,
the sampling. Writes experiments/results/table12.json and reports/table12.md (every seed, mean and std).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.evaluate.compare import SEED_METRICS, chain_of, seeds_table  # noqa: E402
from blip.params import load_params  # noqa: E402
from flows.experiment import experiment_refs  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]


def steps_per_epoch(repo: Path) -> tuple[int, int]:
    """(the bootstrapped set's samples, optimizer steps per epoch at the active preset's pre-training batch)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    batch = params["presets"][params["preset"]]["pretrain"]["batch_size"]
    samples = json.loads((repo / "metrics/select.json").read_text())["samples"]
    return samples, samples // batch


def queue_experiment(repo: Path, name: str, overrides: dict) -> None:
    """Queue one DVC experiment of the chain up to `compare` (the comparison) with these params."""
    # the seeds compare pre-training: the downstream tasks (25 minutes more a chain) stay off
    sets = [arg for k, v in {**overrides, "downstream.tasks": "[]"}.items() for arg in ("-S", f"{k}={v}")]
    sets += ["-S", "~downstream.video.retrieval", "-S", "~downstream.video.qa"]  # zero-shot video: off too
    subprocess.run(DVC + ["exp", "run", "--queue", "--name", name, *sets, "compare"], cwd=repo, check=True)


def run_queue(repo: Path) -> None:
    """Start one queue worker and wait until nothing is queued or running."""
    # the worker runs the stages' `blip` commands: this environment's console scripts first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(DVC + ["queue", "start", "--jobs", "1"], cwd=repo, check=True, env=env)
    while True:
        time.sleep(30)
        status = subprocess.run(DVC + ["queue", "status"], cwd=repo, capture_output=True, text=True).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return


def experiment_metrics(repo: Path, prefix: str, path: str = "metrics/compare.json") -> dict[str, dict]:
    """A metrics file of every finished experiment whose name starts with `prefix`, by name."""
    found = {}
    for name, sha in experiment_refs(repo).items():
        if name.startswith(prefix):
            text = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=repo, capture_output=True, text=True)
            if text.returncode == 0:
                found[name] = json.loads(text.stdout)
    return dict(sorted(found.items()))


def tabulate(found: dict[str, dict]) -> tuple[dict, str]:
    """Every seed's row, and mean +- std of each arm and of their difference."""
    rows = {name: {arm: {k: r[arm][k] for k in SEED_METRICS} for arm in ("baseline", "bootstrapped")}
            for name, r in found.items()}
    summary = {}
    for key in SEED_METRICS:
        for arm in ("baseline", "bootstrapped", "delta"):
            values = [r["bootstrapped"][key] - r["baseline"][key] if arm == "delta" else r[arm][key]
                      for r in rows.values()]
            summary[f"{arm}.{key}"] = {"mean": statistics.mean(values),
                                       "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return {"per_experiment": rows, "summary": summary}, seeds_table(rows, summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tabulate", action="store_true", help="only tabulate the experiments already run")
    args = ap.parse_args()
    samples, steps = steps_per_epoch(ROOT)
    if not args.tabulate:
        preset = yaml.safe_load((ROOT / "params.yaml").read_text())["preset"]
        for seed in args.seeds:
            queue_experiment(ROOT, f"table12-seed{seed}",
                             {"seed": seed, f"presets.{preset}.pretrain.steps_per_epoch": steps})
        run_queue(ROOT)
    found = experiment_metrics(ROOT, "table12-")
    if not found:
        raise SystemExit("no table12 experiment has finished: see `dvc queue status` and `dvc queue logs`")
    table, markdown = tabulate(found)
    header = (f"Table 12 on the embedded default: {len(found)} seeds, both arms {steps} steps per epoch (the "
              f"bootstrapped set's {samples} samples at the preset's batch).\n\n")
    (ROOT / "reports/table12.md").write_text(header + markdown)
    out = ROOT / "experiments/results/table12.json"
    # the chain these seeds ran on: `blip compare` shows this table in reports/compare.md beside that chain only
    chain = chain_of(load_params(ROOT / "params.yaml"))
    out.write_text(json.dumps({"chain": chain, "steps_per_epoch": steps, "bootstrapped_samples": samples, **table},
                              indent=1) + "\n")
    print(header + markdown)


if __name__ == "__main__":
    main()
