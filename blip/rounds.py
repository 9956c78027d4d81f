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
from pathlib import Path

from blip.layout import WORKSPACE, RoundOutputs, round_layout, round_outputs


class RoundFailed(RuntimeError):
    """A step of a round exited non-zero (a failed data contract stops the round before retraining)."""


def round_steps(r: int, rounds_root: Path, previous: RoundOutputs, params_file: str,
                continue_pretraining: bool) -> list[tuple[str, list[str]]]:
    """The commands of round `r`, in order, as (step name, argv)."""
    blip = [sys.executable, "-m", "blip.cli", "--params", params_file]
    here = round_layout(r, rounds_root)
    out, name = round_outputs(r, rounds_root), f"round{r}"
    data, scores = str(out.data), str(here.data("scores"))

    def train(stage: str, model: str, init: str, *extra: str) -> list[str]:
        return blip + [stage, "--name", f"{name}_{model}", "--init-from", init, "--out", str(getattr(out, model)),
                       "--metrics", str(here.metrics(model)), "--plot", str(here.plot(model)), *extra]

    # a NEW model from scratch on the round's data, as round 1; or, for the ablation, the previous one continued
    pretrain = train("pretrain", "pretrain", str(previous.pretrain) if continue_pretraining else "", "--data", data)
    return [  # the models that bootstrap this round's data pass the gates first, as round 1's do
        ("gate_filter", blip + ["gate", "filter", "--model", str(previous.filter),
                                "--metrics", str(here.metrics("gate_filter"))]),
        ("gate_captioner", blip + ["gate", "captioner", "--model", str(previous.captioner),
                                   "--metrics", str(here.metrics("gate_captioner"))]),
        ("capfilt", blip + ["capfilt", "--captioner", str(previous.captioner), "--filter", str(previous.filter),
                            "--output", scores, "--metrics", str(here.metrics("capfilt")),
                            "--round", str(r), "--name", f"{name}-capfilt"]),
        ("select", blip + ["select", "--scores", scores, "--output", data, "--metrics", str(out.select),
                           "--report", str(here.report("capfilt")), "--name", f"{name}-select"]),
        ("audit", blip + ["audit", "--world", str(WORKSPACE.data("world")), "--scores", scores, "--selection", data,
                          "--metrics", str(out.audit)]),
        ("validate", [sys.executable, "-m", "data_contracts", "--params", params_file, "bootstrapped", data,
                      "--results", str(here.metrics("validate")),
                      "--docs", str(here.report("contracts")), "--mlflow-run", f"{name}-validate"]),
        ("retrain", pretrain),
        ("finetune_captioner", train("finetune_captioner", "captioner", str(out.pretrain))),
        ("finetune_filter", train("finetune_filter", "filter", str(out.pretrain))),
        ("evaluate_captioner", blip + ["evaluate", "--model", str(out.captioner), "--metrics",
                                       str(out.eval_captioner), "--name", f"{name}-evaluate-captioner"]),
        ("evaluate_filter", blip + ["evaluate", "--model", str(out.filter), "--metrics",
                                    str(out.eval_filter), "--name", f"{name}-evaluate-filter"]),
    ]


def summarise(r: int, outputs: RoundOutputs) -> dict:
    """One round's row: CapFilt's statistics and the retrained model's evaluation."""
    capfilt = json.loads(outputs.select.read_text())
    cap = json.loads(outputs.eval_captioner.read_text())
    ret = json.loads(outputs.eval_filter.read_text())
    row = {"round": r, "web_removed_share": capfilt["web_removed_share"], "noise_ratio": capfilt["noise_ratio"],
           "CIDEr": cap["CIDEr"], "BLEU-4": cap["BLEU-4"], "txt_r1": ret["txt_r1"], "img_r1": ret["img_r1"],
           "r_mean": ret["r_mean"]}
    audit = json.loads(outputs.audit.read_text()) if outputs.audit.is_file() else {}
    if audit.get("world"):  # the built-in world knows which web texts are noisy
        truth = audit["selection"]["web"]["noisy_texts"]
        row.update(noisy_web_precision=truth["precision"], noisy_web_recall=truth["recall"])
    return row


def run_rounds(rounds: int, rounds_root: Path, params_file: str, continue_pretraining: bool) -> list[dict]:
    """Rounds 2..`rounds` after the main chain's round 1; a row per round, round 1 included."""
    rows = [summarise(1, round_outputs(1))]
    for r in range(2, rounds + 1):
        for step, argv in round_steps(r, rounds_root, round_outputs(r - 1, rounds_root), params_file,
                                      continue_pretraining):
            print(f"round {r}: {step}", flush=True)
            code = subprocess.call(argv)
            if code != 0:
                raise RoundFailed(f"round {r} stopped at {step} (exit {code}): {' '.join(argv)}")
        rows.append(summarise(r, round_outputs(r, rounds_root)))
    return rows


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
