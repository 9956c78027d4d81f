"""VQA from the baseline against VQA from the bootstrapped model, over fine-tuning seeds.

    python bench/vqa_seeds.py --seeds 0 1 2
    python bench/vqa_seeds.py --seeds 1 2 --with-stage   # seed params.seed from the DVC stage's metrics

Both pre-trained models stay this workspace's (models/pretrain, models/retrain); each seed re-runs the VQA
fine-tuning and scoring of both (`blip downstream vqa`) with params `seed` set to it, so the spread is the
fine-tuning's alone, not the pre-training's (that takes whole chains: bench/table12.py). Tracking is off
(nothing is registered). Writes bench/results/vqa_seeds.json: every seed's accuracies and the mean ± std of
each arm and of their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, work: Path) -> dict:
    """One seed's `blip downstream vqa` from both models; its metrics JSON."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seed"] = seed
    (work / f"params_{seed}.yaml").write_text(yaml.safe_dump(params))
    metrics = work / f"vqa_{seed}.json"
    cmd = [sys.executable, "-m", "blip.cli", "--params", str(work / f"params_{seed}.yaml"), "downstream", "vqa",
           "--from", "baseline=models/pretrain", "bootstrapped=models/retrain", "--data", "data/vqa",
           "--models", str(work / f"models_{seed}"), "--metrics", str(metrics)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": "off"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "std": round(statistics.stdev(values), 2) if len(values) > 1
            else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--with-stage", action="store_true",
                        help="add the stage's own result (metrics/downstream/vqa.json) as seed params.seed")
    args = parser.parse_args()
    rows, start = {}, time.time()
    if args.with_stage:
        seed = yaml.safe_load((ROOT / "params.yaml").read_text())["seed"]
        result = json.loads((ROOT / "metrics/downstream/vqa.json").read_text())
        rows[seed] = {arm: result[arm]["overall"] for arm in ("baseline", "bootstrapped")}
        rows[seed]["chance"] = result["chance"]["prior"]["overall"]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            result = run_seed(seed, Path(tmp))
            rows[seed] = {arm: result[arm]["overall"] for arm in ("baseline", "bootstrapped")}
            rows[seed]["chance"] = result["chance"]["prior"]["overall"]
            print(f"seed {seed}: {rows[seed]}", flush=True)
    out = {"seeds": rows, "minutes": round((time.time() - start) / 60, 1),
           **{arm: summary([r[arm] for r in rows.values()]) for arm in ("baseline", "bootstrapped")},
           "difference": summary([r["bootstrapped"] - r["baseline"] for r in rows.values()]),
           "bootstrapped_better": sum(r["bootstrapped"] > r["baseline"] for r in rows.values())}
    path = ROOT / "bench/results/vqa_seeds.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
