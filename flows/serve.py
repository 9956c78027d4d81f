"""Serve the pipeline's scheduled deployment from this process (the dev route; prefect.yaml is the
work-pool route). It appears in the Prefect UI, where it can also be triggered by hand.

    PREFECT_API_URL=http://127.0.0.1:4200/api python flows/serve.py
"""

from __future__ import annotations

import os

from flows.pipeline import pipeline

CRON = os.environ.get("BLIP_PIPELINE_CRON", "0 2 * * *")  # nightly at 02:00


def deployment():
    """The scheduled deployment of the pipeline flow (parameters default to params.yaml's)."""
    return pipeline.to_deployment(name="nightly", cron=CRON, tags=["blip", "capfilt"],
                                  description="prepare -> ... -> register through DVC, nightly")


if __name__ == "__main__":
    from prefect import serve

    serve(deployment())
