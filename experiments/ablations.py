"""The paper's CapFilt ablations on the embedded default, as a DVC experiment queue started by one command.

    python experiments/ablations.py              # queue every ablation, run the queue, tabulate against the default
    python experiments/ablations.py --tabulate   # tabulate the experiments already run

Each ablation is the whole chain with one setting changed, compared with the chain as committed (this
workspace's metrics/compare.json, same seed), on the bootstrapped model's captioning and retrieval and on
CapFilt's noise ratio. The replicated-web baseline (Table 12) has its own queue over seeds, experiments/table12.py:
its means close the table. Writes
experiments/results/ablations.json and reports/ablations.md: each row with the paper's direction next to ours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.table12 import ROOT, experiment_metrics, queue_experiment, run_queue  # noqa: E402

# name -> (params changed, what the paper compares, the paper's finding: the default "better" or "not worse")
ABLATIONS = {
    "ablation-beam": ({"capfilt.method": "beam"}, "Table 2: nucleus sampling against beam search for the "
                      "synthetic captions", "nucleus is better: noisier, but more diverse captions"),
    "ablation-shared": ({"capfilt.models": "shared"}, "Table 4: a captioner and filter decoupled against one "
                        "model sharing their parameters", "decoupled is better; sharing removes fewer synthetic "
                        "captions (noise ratio 8% against 25%): the filter passes its own captions"),
    "ablation-continue": ({"retrain.init_from": "models/pretrain"}, "Table 13: continue training the old model "
                          "against a new model on the bootstrapped data", "a new model is not worse"),
}
METRICS = [("CIDEr", "CIDEr"), ("r_mean", "retrieval R mean (%)")]


def rows(default: dict, found: dict[str, dict]) -> list[dict]:
    """One row per finished ablation: the default's and the ablation's bootstrapped model, CapFilt's noise
    ratio (the share of synthetic captions the filter removed), and our direction."""
    out = []
    for name, result in found.items():
        overrides, what, paper = ABLATIONS[name]
        ours = {k: (default["bootstrapped"][k], result["bootstrapped"][k]) for k, _ in METRICS}
        holds = all(d >= a for d, a in ours.values())
        out.append({"ablation": name, "changed": overrides, "compares": what, "paper": paper,
                    "default_vs_ablation": ours,
                    "noise_ratio": (default["capfilt"]["noise_ratio"], result["capfilt"]["noise_ratio"]),
                    "ours": "the default is better or equal on both" if holds else "the ablation is better on "
                            + ", ".join(k for k, (d, a) in ours.items() if a > d)})
    return out


def table12_row(result: dict) -> str:
    """Table 12's row from experiments/table12.py's result: the means over seeds, bootstrapped against the baseline."""
    s, n = result["summary"], len(result["per_experiment"])
    cells = " | ".join(f"{s[f'bootstrapped.{k}']['mean']:.3f} / {s[f'baseline.{k}']['mean']:.3f}" for k, _ in METRICS)
    delta = ", ".join(f"{k} {s[f'delta.{k}']['mean']:+.3f} ± {s[f'delta.{k}']['std']:.3f}" for k, _ in METRICS)
    return (f"| table12 ({n} seeds, means) | Table 12: the bootstrapped data against the noisy data with its "
            f"samples replicated to as many per epoch | the bootstrapped data is better | {cells} | - | "
            f"differences over seeds: {delta} |")


def markdown(table: list[dict], table12: dict | None = None) -> str:
    """The ablation table, the paper's direction beside ours; Table 12's means last, and the seeds' spread."""
    lines = ["| ablation | compares | paper | " + " | ".join(f"{label}: default / ablation" for _, label in METRICS)
             + " | noise ratio: default / ablation | ours |", "|---|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for r in table:
        cells = " | ".join(f"{d:.3f} / {a:.3f}" for d, a in r["default_vs_ablation"].values())
        noise = " / ".join(f"{v:.1%}" for v in r["noise_ratio"])
        lines.append(f"| {r['ablation']} | {r['compares']} | {r['paper']} | {cells} | {noise} | {r['ours']} |")
    if table12:
        lines.append(table12_row(table12))
        spread = ", ".join(f"{k} ± {table12['summary'][f'baseline.{k}']['std']:.3f}" for k, _ in METRICS)
        lines += ["", f"Each ablation is one seed against the default's seed 0; the same chain's spread over seeds "
                  f"(Table 12's baseline arm) is {spread}: a smaller difference is not a finding."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tabulate", action="store_true", help="only tabulate the experiments already run")
    args = ap.parse_args()
    if not args.tabulate:
        for name, (overrides, _, _) in ABLATIONS.items():
            queue_experiment(ROOT, name, overrides)
        run_queue(ROOT)
    found = {k: v for k, v in experiment_metrics(ROOT, "ablation-").items() if k in ABLATIONS}
    if not found:
        raise SystemExit("no ablation has finished: see `dvc queue status` and `dvc queue logs`")
    table = rows(json.loads((ROOT / "metrics/compare.json").read_text()), found)
    seeds = ROOT / "experiments/results/table12.json"
    text = markdown(table, json.loads(seeds.read_text()) if seeds.is_file() else None)
    (ROOT / "reports/ablations.md").write_text(text)
    (ROOT / "experiments/results/ablations.json").write_text(json.dumps(table, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
