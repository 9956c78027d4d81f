"""Quality gates: each fine-tuned model measured on held-out human pairs right after its training.

A filter that cannot tell a true caption from another image's, or a captioner no better than chance,
makes everything after it worthless: CapFilt then removes nearly every text (or none), and only the
bootstrapped contract notices, hours later. The gates cost seconds (the human val split, scored once)
and stop the chain where the cause is, with what was measured and what to try.

- filter: ITM AUC of true val pairs against the same captions on another image (a seeded shift, the
  pairs CapFilt calibrates on), and the share of true pairs kept at the threshold `select` will use
  (the calibrated one, or the fixed one);
- captioner: CIDEr of its beam-search captions on val over its chance level (the same captions scored
  against another image's references).

`gates.on_fail: warn` records a failure and goes on (a smoke run of the plumbing on one's own data).
"""

from __future__ import annotations

import numpy as np

from blip.config import Params

FILTER_ADVICE = ("Try, in this order: more fine-tuning steps (presets.{preset}.finetune_filter.epochs or "
                 "steps_per_epoch), a pretrained initialisation (presets.{preset}.model.vision_init and text_init, "
                 "read from local weights), a larger preset (preset=base) with more pre-training. Or, for a smoke "
                 "run of the plumbing only, gates.on_fail=warn.")
CAPTIONER_ADVICE = ("Try more fine-tuning steps (presets.{preset}.finetune_captioner.epochs or steps_per_epoch), "
                    "a pretrained initialisation (presets.{preset}.model.vision_init and text_init), or a larger "
                    "preset. Or, for a smoke run of the plumbing only, gates.on_fail=warn.")


def filter_quality(score: np.ndarray, label: np.ndarray, params: Params) -> dict:
    """AUC, and the threshold `select` would use with its precision and recall on these labelled pairs."""
    from blip.evaluate.common import roc_auc
    from blip.selection.rule import calibrate

    positive, negative = score[label == 1], score[label == 0]
    cfg = params.select
    if cfg.calibrate:
        found = calibrate(score, label, cfg.target_precision)
        threshold = found["threshold"] if found else None
    else:
        threshold = cfg.threshold
    kept = score >= threshold if threshold is not None else np.zeros_like(score, bool)
    return {"itm_auc": roc_auc(positive, negative), "threshold": threshold, "calibrated": cfg.calibrate,
            "recall": round(float(kept[label == 1].mean()), 4) if len(positive) else 0.0,
            "precision": round(float(label[kept].mean()), 4) if kept.any() else None,
            "true_pairs": int(len(positive)), "other_image_pairs": int(len(negative))}


def filter_problems(measured: dict, params: Params, where: str) -> list[str]:
    """What falls below the gates, each in a sentence with the measured value and its param."""
    g, problems = params.gates, []
    if measured["itm_auc"] is None or measured["itm_auc"] < g.filter_min_auc:
        problems.append(f"the filter's ITM AUC on {where} is {measured['itm_auc']} (true pairs against the same "
                        f"captions on another image; 0.5 is chance), below gates.filter_min_auc {g.filter_min_auc}")
    if measured["recall"] < g.min_recall:
        how = (f"the threshold calibrated to precision {params.select.target_precision}" if measured["calibrated"]
               else f"select.threshold {params.select.threshold}")
        at = "no threshold reaches it" if measured["threshold"] is None else f"{measured['threshold']:.4g}"
        problems.append(f"at {how} ({at}) the filter keeps {measured['recall']:.1%} of the true pairs of {where}, "
                        f"below gates.min_recall {g.min_recall}: CapFilt would remove nearly every text")
    return problems


def filter_gate(model: str, val: str, params: Params, device: str | None = None) -> dict:
    """Score the val pairs with the filter and judge it against `gates`."""
    from blip.capfilt.scoring import calibration_table, load_member
    from blip.launch import resolve_device, resolve_precision
    from blip.selection.rule import filter_matrix, scores

    where = resolve_device(device or params.inference.device, 0)
    precision = resolve_precision(params.inference.precision, where)
    table = calibration_table([load_member(model, where)], val, params.seed, params.ingest.max_words, precision)
    _, score = scores(filter_matrix(table["itm"], 1), filter_matrix(table["itc"], 1), params.select)
    measured = filter_quality(score, table["label"].to_numpy(), params)
    problems = filter_problems(measured, params, val)
    return {"gate": "filter", "model": model, "data": val, **measured, "passed": not problems,
            "problems": problems, "advice": FILTER_ADVICE.format(preset=params.preset) if problems else None}


def captioner_gate(model: str, val: str, params: Params, device: str | None = None) -> dict:
    """Caption the val images and compare their CIDEr with the chance level."""
    from blip.evaluate.model import evaluate_model

    metrics, _, _ = evaluate_model(model, val, params, device=device, caption_metrics=("CIDEr",))  # seconds
    cider, chance = metrics["CIDEr"], metrics["CIDEr_other_image"]
    ratio = cider / chance if chance > 0 else (float("inf") if cider > 0 else 0.0)
    floor = params.gates.captioner_min_cider_ratio
    problems = [] if ratio >= floor else [
        f"the captioner's CIDEr on {val} is {cider:.3f}, {ratio:.2f}x its chance level {chance:.3f} (the same "
        f"captions against another image's references), below gates.captioner_min_cider_ratio {floor}: its "
        "captions barely depend on the image"]
    return {"gate": "captioner", "model": model, "data": val, "CIDEr": cider, "CIDEr_chance": chance,
            "ratio": round(ratio, 4) if np.isfinite(ratio) else None, "passed": not problems, "problems": problems,
            "advice": CAPTIONER_ADVICE.format(preset=params.preset) if problems else None}


def explain(result: dict) -> str:
    """The gate's verdict for a person: what was measured, what failed, what to try."""
    if result["passed"]:
        return f"gate {result['gate']}: passed ({result['model']} on {result['data']})"
    return "\n".join([f"gate {result['gate']}: FAILED for {result['model']}:",
                      *(f"  - {p}" for p in result["problems"]), f"  {result['advice']}"])
