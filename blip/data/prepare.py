"""The `prepare` stage: the raw sources -> the human datasets, the web set's manifest, and statistics.

The sources are the user's files (params.data) or, for a source left unset, the built-in world's raw files,
which `blip prepare` writes first, as a data source of its own (blip/world): this module reads both alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from blip.config import DataConfig, Params
from blip.data.karpathy import ingest_karpathy
from blip.data.web import register_web
from blip.tokenizer import build_tokenizer


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where each source is read: the user's files, or the world's written for a source params leave unset."""
    human_karpathy: str
    human_images: str
    human_name: str
    web_shards: str
    world_for: tuple[str, ...] = ()  # the sources the built-in world stands in for: "human", "web"

    @classmethod
    def given(cls, data: DataConfig) -> "Sources":
        """The user's own files for both sources (params.data names them)."""
        if data.human_karpathy is None or data.web_shards is None:
            raise ValueError("params data.human_karpathy and data.web_shards must both be set to use your own data "
                             "alone; leave one unset and `blip prepare` writes the built-in world for it")
        return cls(str(data.human_karpathy), str(data.human_images), data.human_name, str(data.web_shards))


def check_sources(data: DataConfig) -> None:
    """Refuse a Karpathy JSON without its image root before anything is written."""
    if data.human_karpathy is not None and data.human_images is None:
        raise ValueError("data.human_images must name the image root of data.human_karpathy")


def prepare(params: Params, out_dir: str | Path, sources: Sources) -> dict:
    """Build out_dir/human/{train,val,test} (ingested) and out_dir/web (a manifest over the web shards, where they
    are); returns the stage's metrics.

    The web manifest points at the shards where they are, the user's in their bucket as the world's in its
    folder (recorded relative to the manifest when they lie in the workspace's world folder, so a moved
    workspace still finds them).
    """
    out_dir = Path(out_dir)
    human = ingest_karpathy(sources.human_karpathy, sources.human_images, out_dir / "human", params.ingest,
                            dataset=sources.human_name)
    web_manifest = register_web(sources.web_shards, out_dir / "web", relative_to_manifest="web" in sources.world_for)
    return {"human": {split: _summary(m) for split, m in human.items()},
            "web": {"samples": web_manifest["samples"], "shards": len(web_manifest["shards"]),
                    "bytes": web_manifest["bytes"], "counted_by": web_manifest["counted_by"]},
            "tokenizer_vocab_size": len(build_tokenizer(params.tokenizer.vocab))}


def _summary(manifest: dict) -> dict:
    return {k: manifest[k] for k in ("samples", "texts", "inputs_seen", "skipped_total", "skipped", "normalised")}
