"""How good the filter and the captioner are at their jobs, judged against the built-in world's truth.

Only the world knows what each web text really is and what each scene holds; on other data there is
nothing to judge against and nothing is reported. Read from the score tables (one pass, three columns
but the texts) and the input shards' truth records, after scoring: the tables themselves never change.

- filter: how well its ITM probability separates clean web texts from noisy ones (ROC AUC, threshold
  free), and the precision and recall of "ITM < 0.5" as a detector of noisy texts (the calibrated
  threshold's figures are `select`'s);
- captioner: its synthetic captions judged claim by claim against their scenes (`world_judge`), and the
  share that is one of the templates' exact wordings (the strict test);
- targets: each figure against what models good at their jobs reach on a fully learnable world (TARGETS).
"""

from __future__ import annotations

import json

import numpy as np

from blip.data.ingest import Tally
from blip.data.parquet import read_table
from blip.data.web import read_web_shard
from blip.data.world import scene_from_json
from blip.data.world_judge import correctness
from blip.evaluate.common import roc_auc

# what a filter and a captioner that do their jobs reach on the world: the filter finds most noisy web texts
# and most of what it flags is noisy; most synthetic captions are true of their scene in every claim
TARGETS = {("filter", "noisy_precision_at_0.5"): 0.9, ("filter", "noisy_recall_at_0.5"): 0.9,
           ("captioner", "correct"): 0.5}


def _scenes(shards: list, max_member_bytes: int) -> dict:
    """(shard URL, key) -> the scene its truth record holds, for every sample that has one; read as CapFilt
    reads its inputs, so a broken shard or a bad member costs only its own samples."""
    scenes = {}
    for shard in shards:
        for key, members in read_web_shard(shard.url, Tally(), max_member_bytes, shard.samples):
            try:
                scenes[(shard.recorded, key)] = scene_from_json(json.loads(members["json"])["truth"]["scene"])
            except (KeyError, TypeError, ValueError):  # no truth record, or not a readable one
                continue
    return scenes


def world_quality(shards: list, tables: list[str], max_member_bytes: int) -> dict | None:
    """The filter's and the captioner's quality on the built-in world (`shards`: the job's input shards, each with
    its url and samples); None when the data carry no truth."""
    # real data carry no truth: one column of the first table says so, and nothing else is read
    first = read_table(tables[0], ["truth"])["truth"] if tables else None
    if first is None or first.null_count == len(first):
        return None
    columns = ["key", "shard", "source", "text", "itm", "truth"]
    scenes = _scenes(shards, max_member_bytes)
    clean, noisy, synthetic, strict = [], [], [], []
    for table in tables:  # one at a time: only the world's few thousand rows are ever kept
        rows = read_table(table, columns).to_pydict()
        for key, shard, source, text, itm, truth in zip(*(rows[c] for c in columns)):
            if source == "web" and truth is not None:
                (clean if truth == "clean" else noisy).append(float(np.mean(itm)))
            elif source == "synthetic" and (shard, key) in scenes:
                synthetic.append((scenes[(shard, key)], text))
                strict.append(truth == "true")
    clean_scores, noisy_scores = np.array(clean), np.array(noisy)
    flagged = int((noisy_scores < 0.5).sum())
    flagged_all = flagged + int((clean_scores < 0.5).sum())
    quality = {"filter": {"itm_auc_clean_vs_noisy": roc_auc(clean_scores, noisy_scores),
                          "noisy_precision_at_0.5": round(flagged / flagged_all, 4) if flagged_all else None,
                          "noisy_recall_at_0.5": round(flagged / len(noisy), 4) if noisy else None,
                          "web_texts": len(clean) + len(noisy)},
               "captioner": {**correctness(synthetic),
                             "strict_wording": round(sum(strict) / len(strict), 4) if strict else None}}
    return {**quality, "targets": against_targets(quality)}


def against_targets(quality: dict) -> dict:
    """Each targeted figure: its value, the target and whether it is met (a missing figure is not)."""
    out = {}
    for (model, figure), target in TARGETS.items():
        value = quality[model].get(figure)
        out[f"{model}.{figure}"] = {"value": value, "target": target, "met": value is not None and value >= target}
    return out
