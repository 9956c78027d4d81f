"""The Ray cluster that per-shard work runs on: a local `ray.init()` on a laptop, the user's cluster otherwise.

We run no cluster protocol of our own. A command that has per-shard work (CapFilt's scoring, registering
web shards, select's passes over the score tables, materializing a selection) joins a Ray cluster for
its duration: the one named by RAY_ADDRESS (a Slurm allocation started with infra/ray-slurm.sbatch, a
KubeRay RayJob, `ray start --head`), else a local one started inside the command and stopped after it.
Ray schedules the tasks, retries those whose worker died, and moves the small results back; the data
itself goes straight between the workers and storage (storage.py).

    with ray_session():
        results = map_ordered(count_rows, urls)       # one Ray task per item, results in item order
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

# the driver's settings that workers need to reach the same storage, tracking server and caches; on a
# cluster the nodes may have their own, and these travel with the job (Ray's runtime_env)
PASSED_ON = ("AWS_", "FSSPEC_", "GOOGLE_", "AZURE_", "BLIP_", "HF_", "MLFLOW_TRACKING_URI", "TRANSFORMERS_OFFLINE")


def passed_on_env() -> dict[str, str]:
    """The driver's environment variables that every Ray worker gets too."""
    return {k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)}


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Join the cluster named by RAY_ADDRESS, or start a local one; one started here is stopped on exit.
    Inside an already joined session (a test, a notebook) that session is used as it is."""
    # Before Ray's first import (it reads this then): a command started under `uv run` (`uv run dvc repro`, `make
    # test`) would otherwise have Ray ship the whole workspace to every worker and start each one through `uv run`
    # in that copy, which re-resolves the project (and fails offline). Our workers use the driver's interpreter,
    # which on a cluster is the image's; a user who wants Ray's uv integration sets the variable to 1.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network here; nothing is reported anywhere
    import ray

    if ray.is_initialized():
        yield
        return
    # without RAY_ADDRESS, a new local instance ("local"): never whatever cluster /tmp/ray last recorded, which
    # may be another user's, or gone (ray.init() would wait on it)
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": passed_on_env()},
             logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def cluster_nodes() -> int:
    """How many nodes the joined cluster has (alive ones)."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def map_ordered(fn: Callable, items: Sequence, *, max_in_flight: int | None = None, options: dict | None = None,
                on_result: Callable[[int, Any], None] | None = None, keep: bool = True) -> list:
    """`fn(item)` for every item as a Ray task (retried by Ray when its worker dies); the results in item order.

    At most `max_in_flight` tasks are submitted at once (default: twice the cluster's CPUs), so a job of 100k
    shards neither floods the scheduler nor holds 100k results' futures; `on_result(i, result)` is called as
    each finishes, in whatever order they finish. With `keep=False` the results are only passed to `on_result`
    (a sum that grows as they come, not a list of 100k histograms).
    """
    import ray

    remote = ray.remote(fn).options(**{"max_retries": 3, **(options or {})})
    limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    results: list = [None] * len(items) if keep else []
    pending: dict = {}
    queue = iter(range(len(items)))
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < limit:
            i = next(queue, None)
            if i is None:
                exhausted = True
                break
            pending[remote.remote(items[i])] = i
        if not pending:
            break
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            result = ray.get(ref)
            if keep:
                results[i] = result
            if on_result is not None:
                on_result(i, result)
    return results
