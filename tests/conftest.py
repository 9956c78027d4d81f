"""Shared fixtures: the project's params, a small built-in world, and the shared real-captions set."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# `make test` runs two workers on two cores: each worker's torch, and every command it starts, computes on one
# thread, or the workers' thread pools oversubscribe the cores (a 29 s test took 236 s beside the other worker).
# Set before torch is first imported; a test that measures threads sets its own (test_models)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

from blip.config import Params  # noqa: E402
from blip.params import params_from_dict  # noqa: E402
from tests.support import REAL_CAPTIONS, free_port, raw_params, small_params  # noqa: E402

# pytest-xdist (--dist loadfile) hands out files by their number of tests, most first; among files of equal count,
# the longest go first. Handing out all the longest files first (--no-loadscope-reorder) measured slower: two
# multi-process chains side by side on two cores spin against each other (docs/testing.md)
LONGEST_FIRST = ("test_flows.py", "test_pipeline_dvc.py", "test_own_data.py", "test_train.py", "test_rounds.py",
                 "test_gpu_kit.py", "test_object_storage.py", "test_gates.py")


def pytest_collection_modifyitems(items: list) -> None:
    """Run the longest files first; every other test keeps its order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def ray_cluster(tmp_path_factory):
    """One local Ray cluster for the whole session, as `ray start --head` makes one on a cluster's head node:
    every command a test runs (in this process or a subprocess) joins it through RAY_ADDRESS in a second, instead
    of starting a Ray of its own (several seconds each). The laptop's own path, a Ray started inside the command,
    is tested on its own (test_capfilt)."""
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # ports of their own for the head's helper processes, whose defaults are fixed: two test workers (make test)
    # start a head each on one machine
    helpers = [arg for flag in ("--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                "--runtime-env-agent-port", "--metrics-export-port") for arg in (flag, str(free_port()))]
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--port", str(port), "--num-cpus", str(os.cpu_count() or 2), "--include-dashboard=false",
                             *helpers, "--disable-usage-stats", "--temp-dir", str(tmp_path_factory.mktemp("ray"))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    os.environ.update(RAY_ADDRESS=f"127.0.0.1:{port}", RAY_AUTH_MODE="token")
    from blip.cluster import ray_session

    deadline = time.time() + 120
    while True:  # the head is up when a driver can join it
        try:
            with ray_session():
                break
        except (ConnectionError, RuntimeError):
            assert time.time() < deadline and head.poll() is None, "the session's Ray head did not start"
            time.sleep(1)
    yield os.environ["RAY_ADDRESS"]
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops every process of its cluster
    try:
        head.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # what did not stop in time (its workers share its process group)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """CapFilt's default table folder (the local cache) is the session's own, never the user's ~/.cache."""
    old = os.environ.get("BLIP_CACHE")
    os.environ["BLIP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("BLIP_CACHE", None)
    else:
        os.environ["BLIP_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def isolated_mlflow(tmp_path_factory):
    """Every run a test makes goes to a throw-away sqlite store, never the repository's."""
    store = tmp_path_factory.mktemp("mlflow") / "mlruns.db"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="session")
def params() -> Params:
    return params_from_dict(raw_params())


@pytest.fixture(scope="session")
def small() -> Params:
    return small_params()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, small) -> Path:
    """A finished `prepare` output for the small world (data/human/..., data/web)."""
    from blip.data.prepare import prepare
    from blip.world.generate import write_sources

    out = tmp_path_factory.mktemp("prepared")
    prepare(small, out, write_sources(small, out / "world")[0])
    return out


@pytest.fixture(scope="session")
def real_captions() -> Path:
    if not (REAL_CAPTIONS / "karpathy_style.json").is_file():
        pytest.skip(f"the shared real-captions set is not at {REAL_CAPTIONS} (set BLIP_REAL_CAPTIONS); "
                    "it lives outside the repository for licence reasons")
    return REAL_CAPTIONS


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
