"""Baseline (pre-trained on the noisy data) against bootstrapped (pre-trained on CapFilt's data).

`compare` puts the evaluation figures of one chain side by side with CapFilt's statistics. The paper's own
comparison (its Table 12: the baseline's samples replicated to the bootstrapped set's per epoch, both for the
same steps) takes several seeds of whole chains, a DVC experiment queue (experiments/table12.py); its result file
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
    """What a comparison belongs to: the data, the built-in world and the preset (every seed alike), as JSON;
    the downstream tasks' and zero-shot video's data is not part of the chain that pre-trains and bootstraps."""
    from blip.tasks.registry import transfer_tasks

    data, world = to_dict(params.data), to_dict(params.world)
    for task in transfer_tasks():
        data.pop(task), world.pop(task)
    data.pop("video_retrieval"), data.pop("video_qa"), world.pop("video")
    return json.loads(json.dumps({"data": data, "world": world, "preset": params.preset}))


def compare(metrics_dir: Path, tasks: list[str] = ()) -> dict:
    """Baseline vs bootstrapped: the evaluation figures side by side, with CapFilt's statistics and the
    downstream `tasks`' scores (metrics/downstream/<task>.json)."""
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
                          "web_removed_share": c["web_removed_share"], "threshold": c["threshold"]}
    audited = metrics_dir / "audit.json"
    if audited.is_file() and json.loads(audited.read_text()).get("world"):  # the built-in world's truth
        out.setdefault("capfilt", {})["truth"] = json.loads(audited.read_text())["selection"]
    if tasks:
        out["downstream"] = {t: downstream_row(json.loads((metrics_dir / "downstream" / f"{t}.json").read_text()))
                             for t in tasks}
    return out


def downstream_row(result: dict) -> dict:
    """A transfer task's scores (`blip downstream`, `blip video`): each model's (VQA: per answer type too) and
    chance."""
    arms = [arm for arm in ("baseline", "bootstrapped") if arm in result]
    if result["task"] == "dialog":
        prior = result["chance"]["answer_prior"]
        parts = ("r1", "r5", "r10", "mean_rank", "ndcg")
        return {"metric": "MRR (%)", "size": f"{prior['rounds']} rounds, 100 candidates", "chance": prior["mrr"],
                "chance_is": f"a blind ranker: the training answers' frequency for the question's first words; "
                             f"a random ranking: {result['chance']['uniform']['mrr']}",
                "parts": {k: prior[k] for k in parts if k in prior},
                **{arm: {"score": result[arm]["mrr"], "parts": {k: result[arm][k] for k in parts if k in result[arm]}}
                   for arm in arms}}
    if result["task"] == "video_retrieval":
        clips = result[arms[0]]["clips"] if arms else 0
        chance = {"vid_r5": 500 / max(1, clips), "vid_r10": 1000 / max(1, clips), "vid_mdR": (clips + 1) / 2,
                  "txt_r1": 100 / max(1, clips)}
        return {"metric": "text-to-video R@1 (%), zero-shot", "size": f"{clips} clips, {result['frames']} frames",
                "chance": result["chance"]["vid_r1"], "chance_is": "1 / clips", "parts": chance,
                **{arm: {"score": result[arm]["vid_r1"],
                         "parts": {k: result[arm][k] for k in ("vid_r5", "vid_r10", "vid_mdR", "txt_r1")}}
                   for arm in arms}}
    if result["task"] == "video_qa":
        questions = result[arms[0]]["questions"] if arms else "?"
        return {"metric": "accuracy (%), zero-shot", "size": f"{questions} questions, {result['frames']} frames",
                "chance": result["chance"]["type_prior"],
                "chance_is": "each question type's most frequent test answer", "parts":
                    result["chance"]["type_prior_per_type"],
                **{arm: {"score": result[arm]["accuracy"], "parts": result[arm]["per_question_type"]} for arm in arms}}
    if result["task"] == "nlvr":
        return {"metric": "accuracy (%)", "size": f"{result['test_pairs']} pairs",
                "chance": result["chance"]["statement_prior"],
                "chance_is": f"each statement's most frequent training label; the majority class: "
                             f"{result['chance']['majority_class']}", "parts": {},
                **{arm: {"score": result[arm]["accuracy"], "parts": {}} for arm in ("baseline", "bootstrapped")
                   if arm in result}}
    prior = result["chance"]["prior"]
    return {"metric": "VQA accuracy (%)", "size": f"{result['test_questions']} questions", "chance": prior["overall"],
            "chance_is": "each question type's most frequent training answer", "parts": prior["per_answer_type"],
            **{arm: {"score": result[arm]["overall"], "parts": result[arm]["per_answer_type"]}
               for arm in ("baseline", "bootstrapped") if arm in result}}


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
    if result.get("downstream"):
        lines += ["", "## Downstream tasks (paper sec. 5) from both pre-trained models: fine-tuned, or zero-shot on "
                  "video", "",
                  "| task | metric | baseline | bootstrapped | chance |", "|---|---|---|---|---|"]
        for task, row in result["downstream"].items():
            arm = lambda a, part=None: "-" if a not in row else fmt(  # noqa: E731
                row[a]["score"] if part is None else row[a]["parts"].get(part))
            lines.append(f"| {task} ({row['size']}) | {row['metric']} | {arm('baseline')} | {arm('bootstrapped')} | "
                         f"{fmt(row['chance'])} ({row['chance_is']}) |")
            for part, chance in sorted(row["parts"].items()):
                lines.append(f"| {task}: {part} | | {arm('baseline', part)} | {arm('bootstrapped', part)} | "
                             f"{fmt(chance)} |")
    if seeds is not None and seeds.get("chain") == chain:
        lines += ["", f"## The paper's comparison (Table 12) over {len(seeds['per_experiment'])} seeds", "",
                  f"The baseline's samples replicated to the bootstrapped set's {seeds['bootstrapped_samples']} per "
                  f"epoch, both arms {seeds['steps_per_epoch']} steps per epoch; each seed a whole chain "
                  "(`make table12`).", "", seeds_table(seeds["per_experiment"], seeds["summary"]).rstrip("\n")]
    else:
        lines += ["", "The paper's comparison (its Table 12: the baseline's samples replicated to the bootstrapped "
                  "set's per epoch, the same steps) over seeds has not run on this data: `make table12`."]
    return "\n".join(lines) + "\n"
