"""The GPU check kit: built here, installed offline into a clean Python 3.12 that stands in for the GPU
machine's image (torch, torchvision, transformers and timm at that image's older versions, nothing
else of ours), and run end to end there in its CPU-sized mode."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

# what the GPU machines' image already holds that the check uses (their versions, as far as known)
IMAGE_PACKAGES = ["torch==2.11.0", "torchvision==0.26.0", "transformers==5.17.0", "timm<1.0.31", "pillow", "pyyaml",
                  "safetensors", "tqdm", "matplotlib", "msgpack", "ninja", "psutil", "py-cpuinfo", "packaging",
                  "einops", "nvidia-ml-py"]


def python312() -> str | None:
    for candidate in [shutil.which("python3.12"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_kit_installs_offline_on_python_312_and_its_check_runs(tmp_path):
    base = python312()
    if base is None:
        pytest.skip("no Python 3.12 on this machine to stand in for the GPU image")
    kit, image = tmp_path / "gpu-kit", tmp_path / "image"
    build = subprocess.run(["bash", "infra/gpu_kit.sh", str(kit)], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert size <= 60 * 2 ** 20, f"the kit is {size / 2 ** 20:.1f} MiB"
    try:
        subprocess.run([base, "-m", "venv", str(image)], check=True)
        py = str(image / "bin" / "python")
        # the image: made from the registry here, as the GPU machine came with it. uv from the base interpreter, as
        # infra/gpu_kit.sh runs it: it lays down the image's few GB of torch and CUDA libraries in 15 s, pip in 100
        uv = [os.path.join(sys.base_prefix, "bin", "python3"), "-m", "uv"]
        subprocess.run([*uv, "pip", "install", "-q", "--python", py, *IMAGE_PACKAGES], check=True)
        install = subprocess.run(["bash", str(kit / "install.sh")], env={**os.environ, "PYTHON": py,
                                 "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}, capture_output=True, text=True)
        assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
        assert "gpu kit installed" in install.stdout
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
        check = subprocess.run([py, "infra/gpu_check.py", "--cpu-sized", "--out", str(tmp_path / "check.json")],
                               cwd=kit, env=env, capture_output=True, text=True, timeout=900)
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
        report = json.loads((tmp_path / "check.json").read_text())
        assert report["machine"]["python"].startswith("3.12") and report["machine"]["versions"]["torch"] == "2.11.0"
        steps = report["steps"]
        assert steps["pretrain"]["samples_per_s"] > 0 and steps["pretrain"]["flops_per_sample"] > 0
        assert steps["capfilt"]["images"] == 64 and steps["capfilt"]["steady_images_per_s"] > 0
        assert steps["caption_and_retrieval"]["retrieval"]["pairs"] == 32
        resume = steps["kill_and_resume"]
        assert resume["killed_mid_run"] and resume["tensors_equal"] == resume["tensors"]
    finally:
        shutil.rmtree(image, ignore_errors=True)  # a few GB of torch and CUDA libraries
