"""`blip audit`: how right CapFilt was on the built-in world, from its truth joined to CapFilt's tables by key.

Only the world knows what each web text really is and what each scene holds, and it keeps that beside its
shards (generate.TRUTH); the score tables and the selection hold none of it. Run after `select`, on the
world alone (on a user's data there is no truth and the audit says so):

- filter: how well its ITM probability separates clean web texts from noisy ones (ROC AUC, threshold
  free), and the precision and recall of "ITM < 0.5" as a detector of noisy texts;
- captioner: its synthetic captions judged claim by claim against their scenes (`judge`), and the share that
  is one of the templates' exact wordings (the strict test);
- selection: what `select` kept and removed of each kind of web text and of true and false synthetic
  captions, and the clean share of the kept data against the web's;
- targets: each figure against what models good at their jobs reach on a fully learnable world (TARGETS).

The world is laptop-sized, so its truth and the per-row scores are held in memory; the tables are read one at
a time, three columns and the texts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from blip.capfilt.formats import SCORES_FORMAT
from blip.capfilt.report import detection, ratio
from blip.data import storage
from blip.data.parquet import read_table
from blip.data.selected import SELECTION_FORMAT
from blip.data.shards import read_manifest
from blip.evaluate.common import roc_auc
from blip.world.generate import RECORD, TRUTH
from blip.world.judge import correctness
from blip.world.scene import describes, scene_from_json

# what a filter and a captioner that do their jobs reach on the world: the filter finds most noisy web texts
# and most of what it flags is noisy; most synthetic captions are true of their scene in every claim
TARGETS = {("filter", "noisy_precision_at_0.5"): 0.9, ("filter", "noisy_recall_at_0.5"): 0.9,
           ("captioner", "correct"): 0.5}
WEB_KINDS = ("clean", "mismatched", "partial", "uninformative")


def kept_rows(selection_dir: str | Path) -> set[tuple[str, int]]:
    """(key, candidate) of every scored text `select` kept, from the bootstrapped set's selection tables."""
    parts = read_manifest(selection_dir, (SELECTION_FORMAT,))["parts"]
    kept = set()
    for p in parts:
        if p["kind"] == "web":
            rows = read_table(storage.join(selection_dir, p["selection"]["name"]), ["key", "candidate"]).to_pydict()
            kept.update(zip(rows["key"], rows["candidate"]))
    return kept


def audit(world_dir: str | Path, scores_dir: str | Path, selection_dir: str | Path) -> dict:
    """The world-quality figures of one CapFilt run and its selection; {"world": False} without the world's truth."""
    truth_path, record = Path(world_dir) / TRUTH, Path(world_dir) / RECORD
    # the world's truth judges only its own web set: a user's shards may reuse its keys (img2dataset's are alike)
    used_for = json.loads(record.read_text()).get("used_for", []) if record.is_file() else ["web"]
    if not truth_path.is_file() or "web" not in used_for:
        return {"world": False, "why": f"no {TRUTH} for the web set in {world_dir}: the web data are not the "
                                       "built-in world's"}
    truth = read_table(truth_path, ["key", "kind", "scene"]).to_pydict()
    kinds, scenes = dict(zip(truth["key"], truth["kind"])), dict(zip(truth["key"], truth["scene"]))
    kept = kept_rows(selection_dir)
    counts: Counter = Counter()
    clean, noisy, synthetic, strict = [], [], [], []
    for table in read_manifest(scores_dir, (SCORES_FORMAT,))["tables"]:
        rows = read_table(table["url"], ["key", "candidate", "source", "text", "itm"]).to_pydict()
        for key, candidate, source, text, itm in zip(*(rows[c] for c in ("key", "candidate", "source", "text", "itm"))):
            if key not in kinds:  # not one of the world's samples
                continue
            if source == "web":
                kind = kinds[key]
                (clean if kind == "clean" else noisy).append(float(np.mean(itm)))
            else:
                scene = scene_from_json(json.loads(scenes[key]))
                kind = "true" if describes(scene, text) else "false"
                synthetic.append((scene, text))
                strict.append(kind == "true")
            verdict = "kept" if (key, candidate) in kept else "removed"
            counts[f"{source}_{kind}_{verdict}"] += 1
            counts[f"{source}_{verdict}"] += 1
    clean_scores, noisy_scores = np.array(clean), np.array(noisy)
    flagged = int((noisy_scores < 0.5).sum())
    flagged_all = flagged + int((clean_scores < 0.5).sum())
    quality = {"filter": {"itm_auc_clean_vs_noisy": roc_auc(clean_scores, noisy_scores),
                          "noisy_precision_at_0.5": round(flagged / flagged_all, 4) if flagged_all else None,
                          "noisy_recall_at_0.5": round(flagged / len(noisy), 4) if noisy else None,
                          "web_texts": len(clean) + len(noisy)},
               "captioner": {**correctness(synthetic),
                             "strict_wording": round(sum(strict) / len(strict), 4) if strict else None}}
    return {"world": True, **quality, "targets": against_targets(quality), "selection": selection_truth(counts)}


def selection_truth(counts: Counter) -> dict:
    """What `select` kept of each kind of text ("<source>_<kind>_<kept|removed>" counts): its precision and
    recall as a detector of noisy web texts and of false synthetic captions, and the kept data's clean share."""
    c = lambda k: int(counts.get(k, 0))  # noqa: E731
    t = lambda src, kind, verdict: c(f"{src}_{kind}_{verdict}")  # noqa: E731
    noisy = [k for k in WEB_KINDS if k != "clean"]
    removed_noisy = sum(t("web", k, "removed") for k in noisy)
    total_noisy = removed_noisy + sum(t("web", k, "kept") for k in noisy)
    false_removed, true_removed = t("synthetic", "false", "removed"), t("synthetic", "true", "removed")
    false_total = false_removed + t("synthetic", "false", "kept")
    true_total = true_removed + t("synthetic", "true", "kept")
    web_total = c("web_kept") + c("web_removed")
    return {
        "web": {"noisy_texts": detection(removed_noisy, removed_noisy + t("web", "clean", "removed"), total_noisy),
                "removed_share_by_kind": {k: ratio(t("web", k, "removed"), t("web", k, "removed") + t("web", k, "kept"))
                                          for k in WEB_KINDS}},
        "synthetic": {"false_captions": detection(false_removed, false_removed + true_removed, false_total),
                      "true_share": ratio(true_total, true_total + false_total),
                      "true_kept_share": ratio(true_total - true_removed, true_total)},
        "kept_data_clean_share": {
            "web_before": ratio(t("web", "clean", "kept") + t("web", "clean", "removed"), web_total),
            "web_after": ratio(t("web", "clean", "kept"), c("web_kept")),
            "synthetic_after": ratio(true_total - true_removed, c("synthetic_kept"))},
    }


def against_targets(quality: dict) -> dict:
    """Each targeted figure: its value, the target and whether it is met (a missing figure is not)."""
    out = {}
    for (model, figure), target in TARGETS.items():
        value = quality[model].get(figure)
        out[f"{model}.{figure}"] = {"value": value, "target": target, "met": value is not None and value >= target}
    return out
