"""select: the kept texts are exactly what the score tables and the rule say (checked against a sort)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from blip.params import load_params
from blip.selection.rule import CutoffFilter, KthBest, calibrate, scores, sort_keys
from tests.support import FILTERS, ROOT, scores_folder


def _select(tmp_path, scores_dir, **rule):
    from blip.selection.job import SelectJob, run_select

    params = load_params(ROOT / "params.yaml")
    params = dataclasses.replace(params, tracking=dataclasses.replace(params.tracking, uri="off"),
                                 select=dataclasses.replace(params.select, calibrate=False, **rule))
    out = tmp_path / f"boot{len(list(tmp_path.iterdir()))}"
    run_select(SelectJob(params, scores=scores_dir, human=[], output=out), log=lambda *_: None)
    manifest = json.loads((out / "manifest.json").read_text())
    kept = set()
    for part in manifest["parts"]:
        for row in pq.read_table(out / part["selection"]["name"]).to_pylist():
            kept.add((row["key"], row["candidate"]))
    return kept, manifest, params.select


def _reference(scores_dir, cfg) -> set:
    """The rule by brute force: every row in memory, each cut a sort."""
    rows = []
    for pos_table, entry in enumerate(json.loads((scores_dir / "manifest.json").read_text())["tables"]):
        t = pq.read_table(entry["url"]).to_pylist()
        for r in t:
            per = [cfg.itm_weight * a + cfg.itc_weight * b for a, b in zip(r["itm"], r["itc"])]
            score = float(np.float32(np.mean(per)))
            rows.append({**r, "score": score, "per": per, "pos": len(rows)})
    if cfg.filter_combine == "vote":
        alive = [r for r in rows if sum(p >= cfg.threshold for p in r["per"]) * 2 > FILTERS]
    else:
        alive = [r for r in rows if r["score"] >= cfg.threshold]
    if cfg.top_percent is not None:
        best = sorted(rows, key=lambda r: (-r["score"], r["pos"]))[:math.ceil(cfg.top_percent / 100 * len(rows))]
        top = {r["pos"] for r in best}
        alive = [r for r in alive if r["pos"] in top]
    if cfg.max_texts_per_image is not None:
        by_image: dict = {}
        for r in alive:
            by_image.setdefault(r["key"], []).append(r)
        alive = [r for group in by_image.values()
                 for r in sorted(group, key=lambda r: (-r["score"], r["candidate"]))[:cfg.max_texts_per_image]]
    web = sorted([r for r in alive if r["source"] == "web"], key=lambda r: (-r["score"], r["pos"]))
    syn = sorted([r for r in alive if r["source"] == "synthetic"], key=lambda r: (-r["score"], r["pos"]))
    w = len(web) if cfg.max_web is None else min(len(web), cfg.max_web)
    s = len(syn) if cfg.max_synthetic is None else min(len(syn), cfg.max_synthetic)
    if cfg.web_share is not None:
        if w / (w + s) > cfg.web_share:
            w = math.floor(cfg.web_share / (1 - cfg.web_share) * s)
        else:
            s = math.floor((1 - cfg.web_share) / cfg.web_share * w)
    return {(r["key"], r["candidate"]) for r in web[:w] + syn[:s]}


RULES = {
    "threshold": dict(threshold=0.5),
    "vote": dict(threshold=0.5, filter_combine="vote"),
    "itm_plus_itc": dict(threshold=0.6, itc_weight=0.5),
    "top_percent": dict(threshold=0.0, top_percent=30.0),
    "one_text_per_image": dict(threshold=0.2, max_texts_per_image=1),
    "caps": dict(threshold=0.1, max_web=17, max_synthetic=23),
    "mix": dict(threshold=0.3, web_share=0.25),
    "everything": dict(threshold=0.1, top_percent=55.0, max_texts_per_image=2, max_web=30, web_share=0.4),
}


@pytest.mark.parametrize("name", RULES)
def test_selected_set_is_exactly_what_the_rule_says(tmp_path, name):
    scores_dir = scores_folder(tmp_path / "scores")
    kept, manifest, cfg = _select(tmp_path, scores_dir, **RULES[name])
    assert kept == _reference(scores_dir, cfg) and kept
    counts = manifest["selection"]["counts"]
    assert counts["web_kept"] + counts["synthetic_kept"] == len(kept) == manifest["samples"]
    assert manifest["selection"]["rule"]["threshold"] == RULES[name]["threshold"]


def test_calibrated_threshold_is_the_lowest_reaching_the_target():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2], np.float32)
    label = np.array([1, 1, 0, 1, 0, 1, 0])
    assert calibrate(score, label, 0.75) == {"threshold": float(np.float32(0.6)), "precision": 0.75, "recall": 0.75}
    assert calibrate(score, label, 1.0)["threshold"] == float(np.float32(0.8))
    assert calibrate(np.array([0.5, 0.4], np.float32), np.array([0, 0]), 0.5) is None
    # tied pairs are decided together: the true one of the two at 0.7 alone would reach precision 1
    tied = np.array([0.9, 0.7, 0.7], np.float32), np.array([1, 1, 0])
    assert calibrate(*tied, 0.75)["threshold"] == float(np.float32(0.9))
    assert calibrate(*tied, 0.6)["threshold"] == float(np.float32(0.7))


def test_kth_best_over_chunks_keeps_exactly_k_with_ties_in_order():
    rng = np.random.default_rng(1)
    chunks = [rng.integers(0, 50, 1000).astype(np.float32) / 7 - 3 for _ in range(5)]  # negatives, many ties
    everything = np.concatenate(chunks)
    for k in (0, 1, 777, 2500, 4999, 5000, 6000):
        best = KthBest(k)
        for c in chunks:
            best.add_pass1(sort_keys(c))
        if best.needs_pass2():
            for c in chunks:
                best.add_pass2(sort_keys(c))
        keep = CutoffFilter(best.cutoff())
        kept = np.concatenate([keep.keep(sort_keys(c), np.ones(len(c), bool)) for c in chunks])
        expected = np.zeros(len(everything), bool)
        expected[np.lexsort((np.arange(len(everything)), -everything))[:k]] = True
        assert (kept == expected).all(), k


def test_changing_the_rule_reads_the_same_tables(tmp_path):
    scores_dir = scores_folder(tmp_path / "scores")
    before = {p.name: p.stat().st_mtime_ns for p in scores_dir.iterdir()}
    strict, _, _ = _select(tmp_path, scores_dir, threshold=0.7)
    loose, _, _ = _select(tmp_path, scores_dir, threshold=0.3)
    assert strict < loose  # a lower threshold keeps a superset
    assert {p.name: p.stat().st_mtime_ns for p in scores_dir.iterdir()} == before


def test_scores_match_the_rule_definition():
    itm = np.array([[0.2, 0.4]])
    itc = np.array([[0.5, -0.5]])
    cfg = dataclasses.replace(load_params(ROOT / "params.yaml").select, itm_weight=1.0, itc_weight=0.5)
    per_filter, score = scores(itm, itc, cfg)
    assert per_filter[0].tolist() == pytest.approx([0.45, 0.15])
    assert score.dtype == np.float32 and score[0] == np.float32(0.3)
