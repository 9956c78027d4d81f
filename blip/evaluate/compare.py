"""Baseline (pre-trained on the noisy data) against bootstrapped (pre-trained on CapFilt's data).

`compare` puts the evaluation figures of one chain side by side with CapFilt's statistics. The paper's own
comparison (its Table 12: the baseline's samples replicated to the bootstrapped set's per epoch, both for the
same steps) takes several seeds of whole chains, a DVC experiment queue (bench/table12.py); its result file
records which chain it belongs to (data, world, preset), and `compare_table` shows it only beside that chain.
"""

from __future__ import annotations

import json
from pathlib import Path

from blip.config import Params, to_dict

COMPARED = {"captioner": ("CIDEr", "BLEU-4", "CIDEr_other_image"), "filter": ("txt_r1", "img_r1", "r_mean")}
NAMES = {"CIDEr": "CIDEr", "BLEU-4": "BLEU-4", "CIDEr_other_image": "CIDEr vs another image (chance)",
         "txt_r1": "TR@1 (%)", "img_r1": "IR@1 (%)", "r_mean": "retrieval R mean (%)"}
SEED_METRICS = ("CIDEr", "BLEU-4", "txt_r1", "img_r1", "r_mean")


def chain_of(params: Params) -> dict:
    """What a comparison belongs to: the data, the built-in world and the preset (every seed alike), as JSON."""
    return json.loads(json.dumps({"data": to_dict(params.data), "world": to_dict(params.world),
                                  "preset": params.preset}))


def compare(metrics_dir: Path) -> dict:
    """Baseline vs bootstrapped: the evaluation figures side by side, with CapFilt's statistics."""
    out: dict = {}
    for run in ("baseline", "bootstrapped"):
        row = {}
        for model, keys in COMPARED.items():
            m = json.loads((metrics_dir / f"eval_{run}_{model}.json").read_text())
            row.update({k: m.get(k) for k in keys})
        out[run] = row
    out["delta"] = {k: round(out["bootstrapped"][k] - out["baseline"][k], 4)
                    for k in out["baseline"] if isinstance(out["baseline"][k], (int, float))}
    selected = metrics_dir / "select.json"
    if selected.is_file():
        c = json.loads(selected.read_text())
        out["capfilt"] = {"web_kept": c["web"]["kept"], "web_total": c["web"]["total"],
                          "synthetic_kept": c["synthetic"]["kept"], "noise_ratio": c["noise_ratio"],
                          "web_removed_share": c["web_removed_share"], "threshold": c["threshold"],
                          "truth": c.get("truth")}
    return out


def seeds_table(per_experiment: dict[str, dict], summary: dict) -> str:
    """Table 12 over seeds: mean ± std of each arm and of their difference, then every seed's row."""
    lines = ["| metric | baseline, web replicated (mean ± std) | bootstrapped | difference | seeds where "
             "bootstrapped is better |", "|---|---|---|---|---|"]
    for key in SEED_METRICS:
        cell = lambda arm: (f"{summary[f'{arm}.{key}']['mean']:{'+' if arm == 'delta' else ''}.3f} ± "  # noqa: E731
                            f"{summary[f'{arm}.{key}']['std']:.3f}")
        wins = sum(r["bootstrapped"][key] > r["baseline"][key] for r in per_experiment.values())
        lines.append(f"| {NAMES[key]} | {cell('baseline')} | {cell('bootstrapped')} | {cell('delta')} | "
                     f"{wins} of {len(per_experiment)} |")
    lines += ["", "| experiment | " + " | ".join(f"{NAMES[k]} (baseline / bootstrapped)" for k in SEED_METRICS)
              + " |", "|---|" + "---|" * len(SEED_METRICS)]
    for name, r in per_experiment.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['baseline'][k]:.3f} / {r['bootstrapped'][k]:.3f}"
                                                for k in SEED_METRICS) + " |")
    return "\n".join(lines) + "\n"


def compare_table(result: dict, chain: dict, seeds: dict | None = None) -> str:
    """The comparison as markdown (the README's), and Table 12 over seeds when `seeds` ran on this `chain`."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"  # noqa: E731
    lines = ["| metric | baseline (noisy web) | bootstrapped (CapFilt) |", "|---|---|---|"]
    for k, name in NAMES.items():
        lines.append(f"| {name} | {fmt(result['baseline'][k])} | {fmt(result['bootstrapped'][k])} |")
    lines += ["", "One seed; each model pre-trained for epochs of its own data, so for its own number of steps."]
    if seeds is not None and seeds.get("chain") == chain:
        lines += ["", f"## The paper's comparison (Table 12) over {len(seeds['per_experiment'])} seeds", "",
                  f"The baseline's samples replicated to the bootstrapped set's {seeds['bootstrapped_samples']} per "
                  f"epoch, both arms {seeds['steps_per_epoch']} steps per epoch; each seed a whole chain "
                  "(`make table12`).", "", seeds_table(seeds["per_experiment"], seeds["summary"]).rstrip("\n")]
    else:
        lines += ["", "The paper's comparison (its Table 12: the baseline's samples replicated to the bootstrapped "
                  "set's per epoch, the same steps) over seeds has not run on this data: `make table12`."]
    return "\n".join(lines) + "\n"
