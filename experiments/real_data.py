"""Time and quality of the chain on real photos, by recipe: the figures of the README's "Your own data".

    python experiments/real_data.py --photos DIR --recipe flows/recipes/real-small.yaml --out experiments/results/real_small.json
    python experiments/real_data.py --photos DIR --set preset=base --set ... --stop-after gate_filter   # timing only

DIR holds a real-photo set in the list form of Karpathy JSON (`karpathy_style.json`: image, five captions,
split). The user's data is built from it as the README's scenario: the Karpathy JSON as the human set,
and every training image as a web pair, 40% of them given another image's caption (one img2dataset
shard). The chain runs as one DVC experiment (flows/experiment.py) in a clone of this repository's
HEAD; the result records seconds per stage and what the models measured: the gates (filter ITM AUC and
recall on val, captioner CIDEr against chance), CapFilt's counts and the test-split comparison, each as
its stage logged it to MLflow: a run that a gate or a contract stopped still reports what it measured.
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
sys.path.insert(0, str(ROOT))

from flows.experiment import experiment_rev, failure_summary, run_experiment  # noqa: E402
from tests.test_own_data import build_own_data  # noqa: E402  (the scenario the test runs)


def timed_experiment(repo: Path, name: str, settings: dict, targets: list[str], env: dict) -> tuple[int, dict, list]:
    """Run the experiment; (exit code, seconds per stage from DVC's "Running stage" lines, output lines)."""
    stages: dict[str, float] = {}
    state = {"current": None, "since": time.perf_counter()}

    def log(line: str) -> None:
        print(line, flush=True)
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if state["current"]:
                stages[state["current"]] = round(now - state["since"], 1)
            state.update(current=line.split("'")[1], since=now)

    code, lines = run_experiment(repo, name, settings, targets, env, log)
    if state["current"]:
        stages[state["current"]] = round(time.perf_counter() - state["since"], 1)
    return code, stages, lines


def measured(tracking_uri: str) -> dict[str, dict]:
    """Each stage's figures as its MLflow run logged them (there even when a later stage stopped the run)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["blip-capfilt"], order_by=["start_time ASC"])
    out = {}
    for _, run in runs.iterrows():
        name = run.get("tags.mlflow.runName")
        metrics = {k[len("metrics."):]: round(float(v), 4) for k, v in run.items()
                   if k.startswith("metrics.") and v == v and not k.startswith("metrics.loss")}
        if name and metrics:
            out[name] = metrics
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True, help="folder with karpathy_style.json and its images")
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--stop-after", action="append", default=[], help="a stage to run up to (timing runs)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    photos = Path(args.photos).resolve()
    settings = yaml.safe_load((ROOT / args.recipe).read_text()) if args.recipe else {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        data = build_own_data(json.loads((photos / "karpathy_style.json").read_text()), photos, Path(tmp) / "mine")
        settings.update({k: v for k, v in data.items() if k.startswith("data.")})
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlruns.db"
        start = time.perf_counter()
        code, stages, lines = timed_experiment(repo, "real-data", settings, args.stop_after, env)
        total = round(time.perf_counter() - start, 1)
        figures = measured(env["MLFLOW_TRACKING_URI"])
        result = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
            "recipe": args.recipe, "settings": {k: v for k, v in settings.items() if not k.startswith("data.")},
            "web_pairs": data["web_pairs"], "mis_captioned": data["mis_captioned"], "exit_code": code,
            "seconds_total": total, "minutes_total": round(total / 60, 1), "seconds_per_stage": stages,
            "experiment_saved": code == 0 and experiment_rev(repo, "real-data") is not None,
            "failure": None if code == 0 else failure_summary(lines).splitlines(),
            "figures": {k: v for k, v in figures.items() if not k.startswith("register")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("exit_code", "minutes_total", "seconds_per_stage", "failure")}, indent=1))


if __name__ == "__main__":
    main()
