"""A new user's first run on their own data, as the README's "Your own data" section says: real photos
with human captions (a Karpathy JSON) and noisy web pairs (img2dataset shards), through the Prefect flow
with the smoke recipe. The shared real-photo set when present; photos this test draws otherwise."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.support import REAL_CAPTIONS, experiments, flow_run_of, git_repo, pipeline_checkout, small_training_params

pytestmark = pytest.mark.slow
SPLITS = {"train": 90, "val": 30, "test": 30}  # a slice of the real set: the path, not the models, is tested


def _drawn_photos(root: Path) -> list[dict]:
    """Photo-like JPEGs (gradients, shapes, noise) with five captions each, in the real set's list form."""
    rng = random.Random(0)
    colours = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 160, 60), "yellow": (220, 200, 40)}
    rows = []
    (root / "images").mkdir(parents=True)
    for i in range(sum(SPLITS.values())):
        name, fill = rng.choice(list(colours.items()))
        shape = rng.choice(["circle", "square"])
        w, h = rng.choice([(320, 240), (240, 320), (300, 300)])
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=fill)
        img.save(root / "images" / f"{i:05d}.jpg", quality=85)
        rows.append({"image": f"images/{i:05d}.jpg", "caption": [f"a {name} {shape} in a photo"] * 5})
    return rows


def build_own_data(rows: list[dict], images: Path, out: Path, noise: float = 0.4, seed: int = 1) -> dict:
    """Karpathy JSON (the human set) and one web shard of the train rows, `noise` of them mis-captioned."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "karpathy.json").write_text(json.dumps(rows))
    train = [r for r in rows if r["split"] == "train"]
    rng = random.Random(seed)
    (out / "web").mkdir()
    wrong = 0
    with tarfile.open(out / "web/00000.tar", "w") as tar:
        for i, row in enumerate(train):
            swap = rng.random() < noise
            wrong += swap
            caption = train[(i + 1) % len(train)]["caption"][0] if swap else row["caption"][0]
            for ext, data in (("jpg", (images / row["image"]).read_bytes()), ("txt", caption.encode()),
                              ("json", json.dumps({"url": f"https://example.com/{i}.jpg"}).encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (out / "web/00000_stats.json").write_text(json.dumps({"successes": len(train)}))
    return {"data.human_karpathy": str(out / "karpathy.json"), "data.human_images": str(images),
            "data.web_shards": str(out / "web"), "web_pairs": len(train), "mis_captioned": wrong}


def own_data(root: Path) -> dict:
    """The user's data (experiments/real_data.py measures the same scenario): a Karpathy JSON, and the train images as web pairs, 40%
    given another image's caption."""
    if (REAL_CAPTIONS / "karpathy_style.json").is_file():
        rows, images = json.loads((REAL_CAPTIONS / "karpathy_style.json").read_text()), REAL_CAPTIONS
        rows = [r for s, n in SPLITS.items() for r in [r for r in rows if r["split"] == s][:n]]
    else:
        images = root / "photos"
        drawn = _drawn_photos(images)
        rows = [{**r, "split": s} for s, n in SPLITS.items() for r in [drawn.pop(0) for _ in range(n)]]
    return build_own_data(rows, images, root / "mine")


@pytest.mark.timeout(1500)
def test_own_data_through_the_prefect_flow_with_the_smoke_recipe(prefect_api, tmp_path, monkeypatch):  # noqa: F811
    from prefect.client.orchestration import get_client

    from flows.pipeline import main

    repo = pipeline_checkout(tmp_path)
    # the project's params with the reduced model of the other stage tests: the path, not the models, is tested
    (repo / "params.yaml").write_text(small_training_params(tmp_path).read_text())
    git_repo(repo)
    data = own_data(tmp_path)
    before = (repo / "params.yaml").read_bytes()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlruns.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # the README's command, word for word but for the paths, and without the transfer tasks (each has a stage test
    # of its own; here they would run on the built-in world's data anyway)
    code = main(["--recipe", "flows/recipes/smoke.yaml", "--set", f"data.human_karpathy={data['data.human_karpathy']}",
                 "--set", f"data.human_images={data['data.human_images']}",
                 "--set", f"data.web_shards={data['data.web_shards']}", "--repo", str(repo),
                 "--set", "downstream.tasks=[]", "--set", "~downstream.video.retrieval=", "--set", "~downstream.video.qa="])
    assert code == 0
    assert (repo / "params.yaml").read_bytes() == before
    (name, experiment), = experiments(repo).items()
    assert experiment["params"]["data"]["web_shards"] == data["data.web_shards"]
    assert experiment["params"]["gates"]["on_fail"] == "warn"

    def read(path: str) -> dict:  # a file of the experiment, as `dvc exp apply` would bring it
        return json.loads(subprocess.run(["git", "show", f"{experiment['rev']}:{path}"], cwd=repo,
                                         capture_output=True, text=True, check=True).stdout)

    prepared = read("metrics/prepare.json")
    assert "world" not in prepared and prepared["web"]["samples"] == SPLITS["train"]
    assert {s: prepared["human"][s]["samples"] for s in SPLITS} == SPLITS
    assert read("metrics/validate_bootstrapped.json")["success"] is True
    assert read("metrics/audit.json")["world"] is False  # a user's data carry no truth: nothing to judge
    # the chain ran to its end: both models retrained, fine-tuned, evaluated and compared
    compare = read("metrics/compare.json")
    assert set(compare) >= {"baseline", "bootstrapped", "delta", "capfilt"} and "truth" not in compare["capfilt"]
    assert {d["name"] for d in read("metrics/register.json")["decisions"]} == {
        "blip-captioner", "blip-filter", "blip-pretrained"}
    run = flow_run_of(name)
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts() if a.flow_run_id == run.id}
    assert {"compare", "capfilt", "contracts", "gates", "mlflow-run", "capfilt-examples"} <= keys
