"""Several rounds of bootstrapping, the paper's first "next step": round r runs CapFilt over the web
data with the captioner and filter fine-tuned from round r-1's retrained model (once they pass the
quality gates), gates the result with the bootstrapped data contract, pre-trains a new model on it, then fine-tunes and evaluates both
tasks exactly as the main chain does.

Round 1 is the main chain itself (dvc.yaml, capfilt ... finetune_*_retrain); this module runs rounds
2..R. Each step is the project's own stage command in a subprocess, so a later round goes through
the same code as round 1 and gets its own MLflow run (named round<r>-<step>).

    blip rounds --out rounds --metrics metrics/rounds.json     # R = params `rounds`
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# round 1's outputs, written by the main chain's stages
FIRST = {"pretrain": "models/retrain", "captioner": "models/captioner_retrain", "filter": "models/filter_retrain",
         "select": "metrics/select.json", "eval_captioner": "metrics/eval_bootstrapped_captioner.json",
         "eval_filter": "metrics/eval_bootstrapped_filter.json"}


class RoundFailed(RuntimeError):
    """A step of a round exited non-zero (a failed data contract stops the round before retraining)."""


@dataclass(frozen=True)
class Round:
    """Where round `r` writes everything: data, models, metrics, reports."""

    r: int
    root: Path

    def path(self, name: str) -> Path:
        return self.root / f"r{self.r}" / name

    @property
    def outputs(self) -> dict[str, Path]:
        return {"pretrain": self.path("models/pretrain"), "captioner": self.path("models/captioner"),
                "filter": self.path("models/filter"), "select": self.path("metrics/select.json"),
                "eval_captioner": self.path("metrics/eval_captioner.json"),
                "eval_filter": self.path("metrics/eval_filter.json")}


def round_steps(rnd: Round, previous: dict, params_file: str, continue_pretraining: bool) -> list[tuple[str, list[str]]]:
    """The commands of one round, in order, as (step name, argv)."""
    blip = [sys.executable, "-m", "blip.cli", "--params", params_file]
    out, name, data, scores = rnd.outputs, f"round{rnd.r}", str(rnd.path("data")), str(rnd.path("scores"))

    def train(stage: str, model: str, init: str, *extra: str) -> list[str]:
        return blip + [stage, "--name", f"{name}_{model}", "--init-from", init, "--out", str(out[model]),
                       "--metrics", str(rnd.path(f"metrics/{model}.json")),
                       "--plot", str(rnd.path(f"plots/{model}_loss.csv")), *extra]

    # a NEW model from scratch on the round's data, as round 1; or, for the ablation, the previous one continued
    pretrain = train("pretrain", "pretrain", str(previous["pretrain"]) if continue_pretraining else "", "--data", data)
    return [  # the models that bootstrap this round's data pass the gates first, as round 1's do
        ("gate_filter", blip + ["gate", "filter", "--model", str(previous["filter"]),
                                "--metrics", str(rnd.path("metrics/gate_filter.json"))]),
        ("gate_captioner", blip + ["gate", "captioner", "--model", str(previous["captioner"]),
                                   "--metrics", str(rnd.path("metrics/gate_captioner.json"))]),
        ("capfilt", blip + ["capfilt", "--captioner", str(previous["captioner"]), "--filter", str(previous["filter"]),
                            "--output", scores, "--metrics", str(rnd.path("metrics/capfilt.json")),
                            "--round", str(rnd.r), "--name", f"{name}-capfilt"]),
        ("select", blip + ["select", "--scores", scores, "--output", data, "--metrics", str(out["select"]),
                           "--report", str(rnd.path("reports/capfilt")), "--name", f"{name}-select"]),
        ("validate", [sys.executable, "-m", "data_contracts", "--params", params_file, "bootstrapped", data,
                      "--results", str(rnd.path("metrics/validate.json")),
                      "--docs", str(rnd.path("reports/contracts")), "--mlflow-run", f"{name}-validate"]),
        ("retrain", pretrain),
        ("finetune_captioner", train("finetune_captioner", "captioner", str(out["pretrain"]))),
        ("finetune_filter", train("finetune_filter", "filter", str(out["pretrain"]))),
        ("evaluate_captioner", blip + ["evaluate", "--model", str(out["captioner"]), "--metrics",
                                       str(out["eval_captioner"]), "--name", f"{name}-evaluate-captioner"]),
        ("evaluate_filter", blip + ["evaluate", "--model", str(out["filter"]), "--metrics",
                                    str(out["eval_filter"]), "--name", f"{name}-evaluate-filter"]),
    ]


def summarise(r: int, outputs: dict) -> dict:
    """One round's row: CapFilt's statistics and the retrained model's evaluation."""
    capfilt = json.loads(Path(outputs["select"]).read_text())
    cap = json.loads(Path(outputs["eval_captioner"]).read_text())
    ret = json.loads(Path(outputs["eval_filter"]).read_text())
    row = {"round": r, "web_removed_share": capfilt["web_removed_share"], "noise_ratio": capfilt["noise_ratio"],
           "CIDEr": cap["CIDEr"], "BLEU-4": cap["BLEU-4"], "txt_r1": ret["txt_r1"], "img_r1": ret["img_r1"],
           "r_mean": ret["r_mean"]}
    truth = capfilt.get("truth", {}).get("web", {}).get("noisy_texts")
    if truth:  # the built-in world records which web texts are noisy
        row.update(noisy_web_precision=truth["precision"], noisy_web_recall=truth["recall"])
    return row


def run_rounds(rounds: int, out_root: Path, params_file: str, continue_pretraining: bool) -> list[dict]:
    """Rounds 2..`rounds` after the main chain's round 1; a row per round, round 1 included."""
    rows, previous = [summarise(1, FIRST)], FIRST
    for r in range(2, rounds + 1):
        rnd = Round(r, out_root)
        for step, argv in round_steps(rnd, previous, params_file, continue_pretraining):
            print(f"round {r}: {step}", flush=True)
            code = subprocess.call(argv)
            if code != 0:
                raise RoundFailed(f"round {r} stopped at {step} (exit {code}): {' '.join(argv)}")
        rows.append(summarise(r, rnd.outputs))
        previous = rnd.outputs
    return rows


@dataclass(frozen=True)
class Registered:
    """A model the register stage registers and the evaluation it is promoted on."""

    folder: Path
    evaluation: Path


def round_models(r: int, out_root: Path) -> tuple[dict[str, Registered], Path, Path]:
    """Round `r`'s models for the registry: the captioner and filter that bootstrapped its data and the model
    pre-trained on that data; with the data folder and its selection statistics."""
    if r <= 1:
        return ({"captioner": Registered(Path("models/captioner"), Path("metrics/eval_baseline_captioner.json")),
                 "filter": Registered(Path("models/filter"), Path("metrics/eval_baseline_filter.json")),
                 "pretrained": Registered(Path(FIRST["pretrain"]), Path(FIRST["eval_filter"]))},
                Path("data/bootstrapped"), Path(FIRST["select"]))
    this = Round(r, out_root)
    previous = FIRST if r == 2 else Round(r - 1, out_root).outputs
    return ({"captioner": Registered(Path(previous["captioner"]), Path(previous["eval_captioner"])),
             "filter": Registered(Path(previous["filter"]), Path(previous["eval_filter"])),
             # the pre-trained model is judged by the filter fine-tuned from it, as in round 1
             "pretrained": Registered(this.outputs["pretrain"], this.outputs["eval_filter"])},
            this.path("data"), this.outputs["select"])


def rounds_table(rows: list[dict]) -> str:
    """A markdown table, a row per round."""
    cols = [("round", "round"), ("web_removed_share", "web removed"), ("noise_ratio", "noise ratio"),
            ("noisy_web_precision", "precision on noisy web"), ("CIDEr", "CIDEr"), ("txt_r1", "TR@1 (%)"),
            ("img_r1", "IR@1 (%)"), ("r_mean", "R mean (%)")]
    cols = [(k, h) for k, h in cols if any(k in row for row in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
