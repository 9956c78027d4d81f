"""Serve the pipeline's scheduled deployment from this process (the dev route; prefect.yaml is the
work-pool route). It appears in the Prefect UI, where it can also be triggered by hand.

The deployment carries its data parameters explicitly (null: the committed params.yaml's, the built-in
world by default): a scheduled run never inherits them from an earlier manual run.

    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/serve.py --web-shards /data/web \\
        --human-karpathy /data/coco/dataset_coco.json --human-images /data/coco --recipe flows/recipes/real-small.yaml
"""

from __future__ import annotations

import argparse
import os

from flows.pipeline import pipeline

CRON = os.environ.get("BLIP_PIPELINE_CRON", "0 2 * * *")  # nightly at 02:00


def deployment(web_shards: str | None = None, human_karpathy: str | None = None, human_images: str | None = None,
               recipe: str | None = None):
    """The scheduled deployment of the pipeline flow, with its data parameters written out."""
    data = {"web_shards": web_shards, "human_karpathy": human_karpathy, "human_images": human_images,
            "recipe": recipe}
    return pipeline.to_deployment(name="nightly", cron=CRON, tags=["blip", "capfilt"], parameters=data,
                                  description="the chain as one DVC experiment per run, nightly")


if __name__ == "__main__":
    from prefect import serve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--web-shards", "--human-karpathy", "--human-images", "--recipe"):
        ap.add_argument(flag, default=None)
    args = ap.parse_args()
    serve(deployment(args.web_shards, args.human_karpathy, args.human_images, args.recipe))
