"""CapFilt's scoring on Ray: object-store bytes read per shard, and throughput on 1 and 2 Ray workers.

1. Reads. The web shards sit in an S3-API server (moto's, in this process, behind a byte counter on
   every GET). `blip capfilt` scores them with 0 and with 3 image-decoding processes per worker; the
   bytes each shard object served, over its size, should be 1 whatever the decoding processes (each
   decoding worker used to read the whole shard: 3 workers, 3x).
2. Throughput. The same job, from local shards, on 1 Ray worker with 2 CPU threads and on 2 Ray workers
   with 1 thread each (this machine's two cores either way), three times each, alternating; the
   scoring phase's images/s (models loaded, shards streaming) and the whole command's wall time, as
   medians, and their ratio.

Random tiny-preset models (the embedded default's architecture): speed does not depend on the weights.

    python bench/capfilt_ray.py       # -> bench/results/capfilt_ray.json
"""

from __future__ import annotations

import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import where  # noqa: E402

IMAGES, SHARD_SIZE = 480, 60  # eight shards at the world's 96 px
REPEATS = 3


class CountingApp:
    """A WSGI wrapper that adds up the bytes each object served to GET requests."""

    def __init__(self, app):
        self.app, self.served, self.lock = app, Counter(), threading.Lock()

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET":
            return body
        path = unquote(environ.get("PATH_INFO", ""))

        def counted():
            for chunk in body:
                with self.lock:
                    self.served[path] += len(chunk)
                yield chunk
        return counted()


def s3_server() -> tuple[str, CountingApp]:
    """moto's S3-API server on 127.0.0.1, every GET counted."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", app


def models(folder: Path, params) -> tuple[str, str]:
    """Random captioner and filter of the tiny preset's architecture."""
    import torch

    from blip.models.blip import Blip, BlipConfig
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer

    arch, out = params.active.model, []
    for task in ("captioner", "filter"):
        torch.manual_seed(0)
        save_pretrained(Blip(BlipConfig(task=task, image_size=params.world.image_size, vision=arch.vision,
                                        text=arch.text, embed_dim=arch.embed_dim, queue_size=arch.queue_size)),
                        folder / task, build_tokenizer())
        out.append(str(folder / task))
    return out[0], out[1]


def run(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.time()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.time() - start


def main() -> int:
    from blip.params import params_from_dict

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["world"].update(human={"train": 16, "val": 8, "test": 8},
                        web={**raw["world"]["web"], "images": IMAGES, "shard_size": SHARD_SIZE})
    raw["tracking"]["uri"] = "off"
    results: dict = {"images": IMAGES, "shards": IMAGES // SHARD_SIZE, "image_size": raw["world"]["image_size"]}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}  # a local Ray each run
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params_file = tmp / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        blip = [sys.executable, "-m", "blip.cli", "--params", str(params_file)]
        run(blip + ["prepare", "--out", str(tmp / "data"), "--metrics", str(tmp / "prepare.json")], env, tmp)
        captioner, filt = models(tmp / "models", params_from_dict(raw))
        # the world's shards are a user's shards: its truth is a table beside them, never in the samples
        run(blip + ["ingest", "web", "--shards", str(tmp / "data/world/web"), "--out", str(tmp / "web")], env, tmp)

        # 1. bytes read per shard, from an S3-API server
        endpoint, app = s3_server()
        s3env = {**env, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
        os.environ.update({k: s3env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                  "AWS_ENDPOINT_URL")})
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        fs.put(str(tmp / "plain") + "/", "bench/web/", recursive=True)
        sizes = {f"/bench/web/{p.name}": p.stat().st_size for p in (tmp / "plain").glob("*.tar")}
        run(blip + ["ingest", "web", "--shards", "s3://bench/web", "--out", "s3://bench/manifest"], s3env, tmp)
        results["reads"] = {}
        for decoders in (0, 3):
            raw["inference"]["loader_workers"] = decoders
            params_file.write_text(yaml.safe_dump(raw))
            before = Counter(app.served)
            run(blip + ["capfilt", "--captioner", captioner, "--filter", filt, "--input", "s3://bench/manifest",
                        "--calibrate-on", str(tmp / "data/human/val"), "--output", f"s3://bench/scores{decoders}",
                        "--metrics", str(tmp / f"reads{decoders}.json")], s3env, tmp)
            ratios = [(app.served[k] - before[k]) / size for k, size in sizes.items()]
            results["reads"][f"decoding_processes_{decoders}"] = {
                "bytes_read_over_shard_size": {"min": round(min(ratios), 4),
                                               "median": round(statistics.median(ratios), 4),
                                               "max": round(max(ratios), 4)}}
            print("reads", decoders, results["reads"][f"decoding_processes_{decoders}"], flush=True)
        raw["inference"]["loader_workers"] = 0

        # 2. throughput on 1 and 2 Ray workers, local shards
        runs: dict = {"1_worker_2_threads": [], "2_workers_1_thread": []}
        for repeat in range(REPEATS):
            for name, (workers, cpus) in (("1_worker_2_threads", (1, 2)), ("2_workers_1_thread", (2, 1))):
                raw["capfilt"].update(workers=workers, cpus_per_worker=cpus)
                params_file.write_text(yaml.safe_dump(raw))
                tables = tmp / f"tables-{name}-{repeat}"
                wall = run(blip + ["capfilt", "--captioner", captioner, "--filter", filt, "--input", str(tmp / "web"),
                                   "--calibrate-on", str(tmp / "data/human/val"), "--output", str(tmp / "scores"),
                                   "--tables", str(tables), "--metrics", str(tmp / "m.json")], env, tmp)
                metrics = json.loads((tmp / "m.json").read_text())
                runs[name].append({"scored_images_per_s": metrics["scored_images_per_s"], "wall_s": round(wall, 1)})
                print(name, repeat, runs[name][-1], flush=True)
        medians = {name: {k: statistics.median(r[k] for r in rs) for k in ("scored_images_per_s", "wall_s")}
                   for name, rs in runs.items()}
        results["throughput"] = {"runs": runs, "medians": medians, "ratio_2_workers_over_1": {
            "scored_images_per_s": round(medians["2_workers_1_thread"]["scored_images_per_s"]
                                         / medians["1_worker_2_threads"]["scored_images_per_s"], 3),
            "wall_s": round(medians["2_workers_1_thread"]["wall_s"] / medians["1_worker_2_threads"]["wall_s"], 3)}}
    results.update(where())
    out = ROOT / "bench" / "results" / "capfilt_ray.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({"reads": results["reads"], "ratio": results["throughput"]["ratio_2_workers_over_1"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
