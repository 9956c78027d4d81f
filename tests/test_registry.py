"""The MLflow model registry through a real `mlflow server` on 127.0.0.1, started by infra/."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.support import ROOT

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("services")
    port = _free_port()
    env = {**os.environ, "MLFLOW_PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "infra/start_local.sh"), "mlflow", str(state)], env=env, check=True,
                   timeout=300)
    uri = f"http://127.0.0.1:{port}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    subprocess.run(["bash", str(ROOT / "infra/stop_local.sh"), str(state)], check=False)
    os.environ["MLFLOW_TRACKING_URI"] = old or ""


@pytest.fixture(scope="module")
def filter_model(tmp_path_factory) -> str:
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    folder = tmp_path_factory.mktemp("registry") / "filter"
    save_pretrained(tiny("pretrain"), folder, build_tokenizer())
    return str(folder)


def _register(uri: str, folder: str, r_mean: float) -> dict:
    import mlflow

    from blip.registry import log_and_register, promote

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")
    with mlflow.start_run():
        version = log_and_register(folder, "blip-test-filter", {"git_commit": "abc"}, {"r_mean": r_mean})
    return promote("blip-test-filter", version, "r_mean")


def test_better_becomes_champion_worse_challenger_manual_promotion_respected(server, filter_model):
    from mlflow import MlflowClient

    first = _register(server, filter_model, 10.0)
    assert first["alias"] == "champion"
    better = _register(server, filter_model, 20.0)
    assert better["alias"] == "champion" and "beats" in better["reason"]
    worse = _register(server, filter_model, 15.0)
    assert worse["alias"] == "challenger" and "does not beat" in worse["reason"]
    client = MlflowClient(server)
    assert client.get_model_version_by_alias("blip-test-filter", "champion").version == better["version"]
    tags = client.get_model_version("blip-test-filter", worse["version"]).tags
    assert tags["promotion_decision"] == "challenger" and tags["metric.r_mean"] == "15.0"
    assert tags["git_commit"] == "abc"

    # a person promotes version 1 in the UI; the next run is judged against that champion
    client.set_registered_model_alias("blip-test-filter", "champion", first["version"])
    after = _register(server, filter_model, 12.0)
    assert after["alias"] == "champion" and f"champion v{first['version']}" in after["reason"]


def test_registered_model_serves_captions_and_scores(server, filter_model):
    import mlflow

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buf, format="JPEG")
    image = base64.b64encode(buf.getvalue()).decode()
    model = mlflow.pyfunc.load_model("models:/blip-test-filter@champion")
    scores = model.predict(pd.DataFrame({"image": [image, image], "text": ["a red square", "a blue star"]}))
    assert list(scores.columns) == ["text", "itm", "itc", "error"] and scores["itm"].between(0, 1).all()
    assert scores["error"].isna().all()
    # the release's BLIP_ITM demo feeds [CLS] to ITM: another first token, another ITM score, the same ITC
    cls = model.predict(pd.DataFrame({"image": [image, image], "text": ["a red square", "a blue star"]}),
                        params={"itm_token": "cls"})
    assert (cls["itm"] != scores["itm"]).all() and (cls["itc"] == scores["itc"]).all()
    captions = model.predict(pd.DataFrame({"image": [image]}))
    assert isinstance(captions["caption"][0], str)


def test_a_registered_vqa_model_answers_questions_row_by_row(server, tmp_path):
    import mlflow

    from blip.models.checkpoints import save_pretrained
    from blip.registry import log_and_register
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    folder = tmp_path / "vqa"
    save_pretrained(tiny("vqa"), folder, build_tokenizer())
    (folder / "answer_list.json").write_text(json.dumps(["red", "blue", "yes", "no", "2"]))
    mlflow.set_experiment("registry-test")
    with mlflow.start_run():
        version = log_and_register(str(folder), "blip-test-vqa", {}, {"overall": 50.0})
    model = mlflow.pyfunc.load_model(f"models:/blip-test-vqa/{version}")
    image = _red_jpeg()
    out = model.predict(pd.DataFrame({"image": [image, image, "not base64!", image],
                                      "question": ["what colour is it", "how many", "what colour is it", ""]}))
    assert list(out.columns) == ["question", "answer", "error"]
    assert set(out["answer"][:2]) <= {"red", "blue", "yes", "no", "2"} and out["error"][:2].isna().all()
    assert "not base64" in out["error"][2] and "no question" in out["error"][3]
    assert out["answer"][2:].isna().all()


def test_a_registered_nlvr_model_verifies_statements_about_image_pairs(server, tmp_path):
    import mlflow

    from blip.models.checkpoints import save_pretrained
    from blip.registry import log_and_register
    from blip.tokenizer import build_tokenizer
    from tests.support import tiny

    folder = tmp_path / "nlvr"
    save_pretrained(tiny("nlvr"), folder, build_tokenizer())
    mlflow.set_experiment("registry-test")
    with mlflow.start_run():
        version = log_and_register(str(folder), "blip-test-nlvr", {}, {"accuracy": 60.0})
    model = mlflow.pyfunc.load_model(f"models:/blip-test-nlvr/{version}")
    image = _red_jpeg()
    out = model.predict(pd.DataFrame({"image": [image, image, image], "image2": [image, "not base64!", image],
                                      "text": ["both images are red", "both images are red", None]}))
    assert list(out.columns) == ["text", "true", "probability", "error"]
    assert out["true"][0] in (True, False) and 0 <= out["probability"][0] <= 1 and pd.isna(out["error"][0])
    assert "not base64" in out["error"][1] and "no text" in out["error"][2]


def _red_jpeg(size=(40, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_served_model_answers_every_row_over_http(server, filter_model, tmp_path):
    import json
    import time
    import urllib.request

    port = _free_port()
    # the server runs uvicorn from this environment's scripts
    env = {**os.environ, "MLFLOW_TRACKING_URI": server,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    serve = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                              "models:/blip-test-filter@champion", "--env-manager", "local", "-h", "127.0.0.1",
                              "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("w"))

    def post(frame: dict, params: dict | None = None) -> list[dict]:
        body = json.dumps({"dataframe_split": frame, **({"params": params} if params else {})}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.loads(reply.read())["predictions"]

    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except OSError:
                assert time.time() < deadline and serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
        # 400M pixels in a 60 kB PNG: past twice PIL's limit, a decompression bomb
        bomb = io.BytesIO()
        Image.new("1", (20000, 20000)).save(bomb, format="PNG")
        good = _red_jpeg()
        rows = [[good, "a red square"], ["not base64!", "a red square"], [base64.b64encode(b"text").decode(), "x"],
                [None, "a red square"], [good, None], [good, ""], ["", "a red square"], [good, "a blue star"],
                [base64.b64encode(bomb.getvalue()).decode(), "a red square"]]
        scores = post({"columns": ["image", "text"], "data": rows})
        assert len(scores) == len(rows)
        # a row without error answers null, or NaN where pandas' JSON writes missing values so
        errors = [None if r["error"] != r["error"] else r["error"] for r in scores]
        assert errors[0] is None and errors[7] is None and 0 <= scores[0]["itm"] <= 1
        assert "not base64" in errors[1] and "not a usable image" in errors[2] and "no image" in errors[3]
        assert "no text" in errors[4] and "no text" in errors[5] and "no image" in errors[6]
        assert "DecompressionBomb" in errors[8]
        captions = post({"columns": ["image"], "data": [[good], ["%%%"], [good]]})
        assert [isinstance(c["error"], str) for c in captions] == [False, True, False]
        assert isinstance(captions[0]["caption"], str)
        assert post({"columns": ["text"], "data": [["a red square"]]})[0]["error"] == "no 'image' column in the request"
        assert post({"columns": ["image", "text"], "data": []}) == []
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_each_rounds_models_for_the_registry():
    from blip.registry import round_models

    models, data, _ = round_models(1, Path("rounds"))
    assert models["captioner"].folder == Path("models/captioner")
    assert models["pretrained"].folder == Path("models/retrain") and data == Path("data/bootstrapped")
    # round 3 bootstrapped its data with round 2's fine-tuned models and pre-trained a new model on it
    models, data, selection = round_models(3, Path("rounds"))
    assert models["captioner"].folder == Path("rounds/r2/models/captioner")
    assert models["filter"].evaluation == Path("rounds/r2/metrics/eval_filter.json")
    assert models["pretrained"].folder == Path("rounds/r3/models/pretrain")
    assert data == Path("rounds/r3/data/bootstrapped") and selection == Path("rounds/r3/metrics/select.json")


def test_round_ones_captioner_and_filter_register_before_its_retraining(server, filter_model, tmp_path, monkeypatch,
                                                                        capsys):
    import shutil

    from blip.cli import main

    monkeypatch.chdir(tmp_path)
    for kind, metric in (("captioner", {"CIDEr": 0.5}), ("filter", {"r_mean": 30.0})):
        shutil.copytree(filter_model, f"models/{kind}")
        Path("metrics").mkdir(exist_ok=True)
        Path(f"metrics/eval_baseline_{kind}.json").write_text(json.dumps(metric))
    params = ["--params", str(ROOT / "params.yaml")]
    assert main([*params, "register", "--round", "1", "--only", "captioner", "filter", "--metrics", "r1.json"]) == 0
    decisions = json.loads(Path("r1.json").read_text())
    assert decisions["round"] == 1
    assert [(d["name"], d["alias"]) for d in decisions["decisions"]] == [("blip-captioner", "champion"),
                                                                         ("blip-filter", "champion")]
    # what is not there yet is named, with how to get it
    assert main([*params, "register", "--round", "1", "--only", "pretrained"]) == 2
    assert "round 1's pretrained (models/retrain) does not exist" in capsys.readouterr().err
    assert main([*params, "register", "--round", "3"]) == 2
    assert "params `rounds` >= 3" in capsys.readouterr().err
