"""Peak memory of ingestion against the dataset's size: it must not grow with the number of images.

Writes a synthetic Karpathy set (dataset_coco.json form: one row per image, five sentences, splits
90/5/5, one JPEG file per image) and a synthetic img2dataset web set (tar shards of 1000 samples:
jpg, txt, json) at each size, then ingests the Karpathy set and registers the web set (counted and
hashed in place: nothing is copied) each in a fresh process, and records that process's peak RSS and
wall time. Images are drawn from a pool of distinct JPEGs (128 px, ~1.5 KB), so writing the input stays
cheap; Karpathy ingestion decodes and checks every one.

    python bench/ingest_memory.py                       # 10k and 100k images of each kind
    python bench/ingest_memory.py --sizes 1000 5000     # a quick run

Writes bench/results/ingest_memory.json: per kind and size, peak RSS (MB), seconds, samples written.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POOL = 500  # distinct JPEGs the inputs cycle through


def _pool() -> list[bytes]:
    from PIL import Image, ImageDraw

    images = []
    for i in range(POOL):
        img = Image.new("RGB", (128, 128), (i % 251, (7 * i) % 253, (13 * i) % 255))
        ImageDraw.Draw(img).rectangle([i % 60, (3 * i) % 60, 60 + i % 60, 60 + (3 * i) % 60], fill=(255 - i % 251, 90, 20))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=90)
        images.append(out.getvalue())
    return images


def write_karpathy(folder: Path, n: int, pool: list[bytes]) -> Path:
    """n images under folder/images and folder/dataset.json in Karpathy's form."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        (folder / "images" / f"{i:07d}.jpg").write_bytes(pool[i % POOL])
        split = "val" if i % 20 == 0 else "test" if i % 20 == 1 else "train"
        rows.append({"filepath": "images", "filename": f"{i:07d}.jpg", "split": split, "cocoid": i,
                     "sentences": [{"raw": f"a shape of colour {i % 251} number {k} in picture {i}"} for k in range(5)]})
    path = folder / "dataset.json"
    path.write_text(json.dumps({"images": rows, "dataset": "synthetic"}))
    return path


def write_web(folder: Path, n: int, pool: list[bytes]) -> Path:
    """n samples in img2dataset shards of 1000 under folder."""
    folder.mkdir(parents=True)
    for start in range(0, n, 1000):
        with tarfile.open(folder / f"{start // 1000:05d}.tar", "w") as tar:
            for i in range(start, min(n, start + 1000)):
                meta = json.dumps({"url": f"https://example.com/{i}.jpg", "caption": f"web picture {i}"}).encode()
                for ext, data in (("jpg", pool[i % POOL]), ("txt", f"web picture {i}".encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def child(kind: str, source: str, images: str, out: str) -> None:
    """Ingest in this process and print its peak RSS (the parent's own memory is not counted)."""
    from blip.data.karpathy import ingest_karpathy
    from blip.data.web import register_web
    from blip.params import load_params

    cfg = load_params(ROOT / "params.yaml").ingest
    start = time.perf_counter()
    if kind == "karpathy":
        samples = sum(m["samples"] for m in ingest_karpathy(source, images, out, cfg, dataset="synthetic").values())
    else:
        # the web set is registered, not copied: each shard counted from its tar headers (no _stats.json here)
        # and hashed, one after another in this process (on_ray=False: the memory measured is this process's)
        samples = register_web(source, out, on_ray=False)["samples"]
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"samples": samples, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default=str(ROOT / "bench/results/ingest_memory.json"))
    ap.add_argument("--child", nargs=4, metavar=("KIND", "SOURCE", "IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    pool = _pool()
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            tmp = Path(tmp)
            inputs = {"karpathy": (write_karpathy(tmp / "human", n, pool), tmp / "human"),
                      "web": (write_web(tmp / "web", n, pool), "-")}
            for kind, (source, images) in inputs.items():
                cmd = [sys.executable, __file__, "--child", kind, str(source), str(images), str(tmp / f"out-{kind}")]
                line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                results.append({"kind": kind, "images": n, **json.loads(line)})
                print(results[-1], flush=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
              "pool_jpeg_bytes": sum(map(len, pool)) // POOL, "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
