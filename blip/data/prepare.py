"""The `prepare` stage: raw sources (or the built-in world) -> human and web datasets + statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

from blip.config import Params
from blip.data.ingest import ingest_webdataset
from blip.data.karpathy import ingest_karpathy
from blip.data.world import generate_world
from blip.tokenizer import build_tokenizer


def prepare(params: Params, out_dir: str | Path) -> dict:
    """Build out_dir/human/{train,val,test} and out_dir/web; returns the stage's metrics.

    The built-in world, when a source comes from it, is written raw to out_dir/world first and ingested
    like any user's data. It is a pure function of the params, so the stage versions only what is
    ingested; with the user's own data for both sources no world is made (and an old one is removed).
    """
    out_dir = Path(out_dir)
    metrics: dict = {}
    data = params.data
    karpathy, images, name, web = data.human_karpathy, data.human_images, data.human_name, data.web_shards
    if karpathy is not None and images is None:
        raise ValueError("data.human_images must name the image root of data.human_karpathy")
    if karpathy is None or web is None:
        world = generate_world(params.world, params.seed, out_dir / "world")
        metrics["world"] = world
        if karpathy is None:
            karpathy, images, name = out_dir / "world/human/karpathy.json", out_dir / "world/human", "world"
        if web is None:
            web = str(out_dir / "world/web")
    else:
        shutil.rmtree(out_dir / "world", ignore_errors=True)
    human = ingest_karpathy(karpathy, images, out_dir / "human", params.ingest, dataset=name)
    web_manifest = ingest_webdataset(web, out_dir / "web", params.ingest, source="web")
    metrics["human"] = {split: _summary(m) for split, m in human.items()}
    metrics["web"] = _summary(web_manifest)
    metrics["tokenizer_vocab_size"] = len(build_tokenizer(params.tokenizer.vocab))
    return metrics


def _summary(manifest: dict) -> dict:
    return {k: manifest[k] for k in ("samples", "texts", "inputs_seen", "skipped_total", "skipped", "normalised")}
