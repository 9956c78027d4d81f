"""The `prepare` stage: raw sources (or the built-in world) -> the human datasets, the web set's manifest,
and statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

from blip.config import Params
from blip.data.karpathy import ingest_karpathy
from blip.data.shards import atomic_write_json
from blip.data.web import register_web
from blip.data.world import generate_world
from blip.tokenizer import build_tokenizer

WORLD_RECORD = "world.json"  # what out_dir/world holds: the built-in world's raw files, or nothing


def prepare(params: Params, out_dir: str | Path) -> dict:
    """Build out_dir/human/{train,val,test} (ingested) and out_dir/web (a manifest over the web shards, where they
    are); returns the stage's metrics.

    The built-in world, when a source comes from it, is written raw to out_dir/world first: its web shards stay
    there and the web manifest points at them, as it points at a user's shards in their bucket. The world is a
    pure function of the params, so DVC keeps it out of its cache (dvc.yaml) and rewrites it where it is missing.
    With the user's own data for both sources no world is made (an old one is removed).
    """
    out_dir = Path(out_dir)
    metrics: dict = {}
    data = params.data
    karpathy, images, name, web = data.human_karpathy, data.human_images, data.human_name, data.web_shards
    if karpathy is not None and images is None:
        raise ValueError("data.human_images must name the image root of data.human_karpathy")
    shutil.rmtree(out_dir / "world", ignore_errors=True)
    used = []
    if karpathy is None or web is None:
        metrics["world"] = generate_world(params.world, params.seed, out_dir / "world")
        if karpathy is None:
            karpathy, images, name = out_dir / "world/human/karpathy.json", out_dir / "world/human", "world"
            used.append("human")
        if web is None:
            web = str(out_dir / "world/web")
            used.append("web")
    (out_dir / "world").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "world" / WORLD_RECORD, {"used_for": used})
    human = ingest_karpathy(karpathy, images, out_dir / "human", params.ingest, dataset=name)
    web_manifest = register_web(web, out_dir / "web", relative_to_manifest="web" in used)
    metrics["human"] = {split: _summary(m) for split, m in human.items()}
    metrics["web"] = {"samples": web_manifest["samples"], "shards": len(web_manifest["shards"]),
                      "bytes": web_manifest["bytes"], "counted_by": web_manifest["counted_by"]}
    metrics["tokenizer_vocab_size"] = len(build_tokenizer(params.tokenizer.vocab))
    return metrics


def _summary(manifest: dict) -> dict:
    return {k: manifest[k] for k in ("samples", "texts", "inputs_seen", "skipped_total", "skipped", "normalised")}
