"""The real DVC, in a temporary git repository, over the chain on a reduced preset.

A filter that keeps everything (threshold 0) makes the bootstrapped contract fail: `dvc repro` stops
there and retraining never runs. A working threshold re-runs `select` but not `capfilt` (the scores are
kept); the contract then passes, the audit judges the selection, and a second `dvc repro` does nothing.
The chain's end (retraining, evaluation, the comparison, the registry) runs through DVC in the own-data
flow test (tests/test_own_data.py), and later rounds start from a finished round in tests/test_rounds.py.
"""

import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.support import ROOT, commit_all, dvc_repo, pipeline_checkout, raw_params, run_checked, small_training_params

pytestmark = pytest.mark.slow


def small_world(raw: dict) -> dict:
    """The built-in world at 12/4/4 human and 20 web images of 64 px."""
    raw["world"].update(image_size=64, human={"train": 12, "val": 4, "test": 4},
                        web={**raw["world"]["web"], "images": 20, "shard_size": 10})
    return raw


@pytest.mark.timeout(1500)  # eleven stages, three training runs
def test_dvc_chain_stops_at_a_failed_contract_then_reselects_without_rescoring(tmp_path):
    repo = pipeline_checkout(tmp_path)
    raw = yaml.safe_load(small_training_params(tmp_path).read_text())
    raw["world"]["human"] = {"train": 24, "val": 8, "test": 8}
    raw["world"]["web"].update(images=48, shard_size=24)
    raw["world"]["image_size"] = 64
    # the chain without the transfer tasks: each has a stage test of its own (tests/test_vqa.py, ...), and their
    # stages' wiring is checked below without running them
    raw["downstream"].update(tasks=[], video={})
    raw["ingest"]["shard_size"] = 24
    raw["train"].update(procs=1, log_every=2, checkpoint_every=100)
    # keeps every text: a broken filter
    raw["capfilt"].update(batch_size=16, max_length=10)
    raw["select"].update(threshold=0.0, calibrate=False)
    raw["contracts"]["image_sample"] = 20
    # models of 8 steps are near chance: the gates record it and the chain goes on (test_gates stops one)
    raw["gates"]["on_fail"] = "warn"
    dvc_repo(repo, raw)

    dvc = [sys.executable, "-m", "dvc"]
    failed = run_checked(dvc + ["repro"], repo, ok=False)
    assert "Running stage 'gate_filter'" in failed and "gates.on_fail=warn: going on" in failed
    assert {json.loads((repo / f"metrics/gate_{m}.json").read_text())["gate"] for m in ("filter", "captioner")} == {
        "filter", "captioner"}
    assert "Running stage 'capfilt'" in failed and "Running stage 'select'" in failed
    assert "Running stage 'validate_bootstrapped'" in failed
    assert "web_removed_share" in failed  # the failed expectation is named in the output
    assert "Running stage 'retrain'" not in failed and not (repo / "models/retrain").exists()
    report = json.loads((repo / "metrics/validate_bootstrapped.json").read_text())
    assert report["success"] is False

    # a working filter threshold; the contract's share bounds are opened up because the few-step
    # models here score near chance (test_contracts covers the bounds themselves)
    # a new threshold re-runs select only: the models' scores are kept
    manifest = json.loads((repo / "data/scores/manifest.json").read_text())
    # the tables are filed under the job's fingerprint outside the workspace (the session's cache here), so a re-run
    # in another folder finds them; DVC versions the manifest that names them
    assert all(t["url"].startswith(os.environ["BLIP_CACHE"]) and manifest["fingerprint"] in t["url"]
               for t in manifest["tables"])
    scores = {t["url"]: Path(t["url"]).stat().st_mtime_ns for t in manifest["tables"]}
    raw["select"]["threshold"] = 0.3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    selected_only = run_checked(dvc + ["repro", "select"], repo)
    assert "Running stage 'select'" in selected_only and "Running stage 'capfilt'" not in selected_only
    assert "Running stage 'pretrain'" not in selected_only
    assert {u: Path(u).stat().st_mtime_ns for u in scores} == scores
    # the selected set is exactly the scored texts at or above the new threshold (one filter, ITM alone)
    expected = {(r["key"], r["candidate"]) for t in manifest["tables"]
                for r in pq.read_table(t["url"]).to_pylist() if r["itm"][0] >= 0.3}
    parts = json.loads((repo / "data/bootstrapped/manifest.json").read_text())["parts"]
    selected = {(r["key"], r["candidate"]) for p in parts if p["kind"] == "web"
                for r in pq.read_table(repo / "data/bootstrapped" / p["selection"]["name"]).to_pylist()}
    assert selected == expected and expected

    # bounds the few-step models can meet: the contract passes, and the audit judges CapFilt against the world's truth
    raw["contracts"].update(synthetic_share=[0.0, 1.0], web_removed_share=[0.0, 1.0], noise_ratio=[0.0, 1.0])
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    passed = run_checked(dvc + ["repro", "validate_bootstrapped", "audit"], repo)
    assert "Running stage 'validate_bootstrapped'" in passed and "Running stage 'validate_web'" in passed
    # the contracts' change re-checks the data and nothing else: the training stages depend on the markers of the
    # data that passed, which stay the same bytes, not on the contracts' figures
    assert not [s for s in ("pretrain", "finetune_filter", "finetune_captioner", "capfilt", "select")
                if f"Running stage '{s}'" in passed], passed
    assert (repo / "metrics/validate_web.passed").read_text().startswith("web data/web ")
    assert {u: Path(u).stat().st_mtime_ns for u in scores} == scores
    assert json.loads((repo / "metrics/validate_bootstrapped.json").read_text())["success"] is True
    # on the built-in world the audit joined the truth by key: every web text the selection dropped is counted
    audit = json.loads((repo / "metrics/audit.json").read_text())
    web = json.loads((repo / "metrics/select.json").read_text())["web"]
    assert audit["world"] is True and audit["selection"]["web"]["noisy_texts"]["removed"] == web["total"] - web["kept"]
    assert "Running stage" not in run_checked(dvc + ["repro", "validate_bootstrapped", "audit"], repo)  # nothing to do
    # each stage depends on the params it reads: the filter's step count leaves pre-training and the captioner cached
    raw["presets"]["tiny"]["finetune_filter"]["epochs"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    stale = {line[:-1] for line in run_checked(dvc + ["status"], repo).splitlines() if line.endswith(":") and line[0] != "\t"}
    assert "finetune_filter" in stale and not stale & {"prepare", "pretrain", "finetune_captioner", "gate_captioner"}, stale
    # the transfer tasks' stages, wired to both pre-trained models (a dry run: their own tests run them)
    raw["downstream"].update(tasks=["vqa"], video={"qa": {"baseline": "models/vqa/baseline", "frames": 2, "k_test": 8,
                                                            "bootstrapped": "models/vqa/bootstrapped"}})
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    listing = ("import json; from dvc.repo import Repo\n"
               "with Repo('.') as r: print(json.dumps({s.addressing: ' '.join(s.cmd.split()) for s in r.index.stages}))")
    commands = json.loads(run_checked([sys.executable, "-c", listing], repo).strip().splitlines()[-1])
    assert commands["downstream_data@vqa"] == "blip downstream-data vqa --out data/vqa --metrics metrics/vqa_data.json"
    assert "baseline=models/pretrain bootstrapped=models/retrain" in commands["downstream@vqa"]
    assert "video@qa" in commands and "downstream@nlvr" not in commands
    dag = run_checked(dvc + ["dag", "--dot", "compare"], repo)
    assert all(f'"{s}"' in dag for s in ("downstream_data@vqa", "downstream@vqa", "video_data@qa", "video@qa")), dag


def test_prepare_stage_with_your_own_data_makes_no_world(tmp_path):
    repo = pipeline_checkout(tmp_path)
    raw = small_world(raw_params())
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    # the user's data: a Karpathy JSON with its images, and img2dataset shards (made here by the world)
    run_checked([sys.executable, "-m", "blip.cli", "world", "--out", "own"], repo)
    raw["data"].update(human_karpathy="own/human/karpathy.json", human_images="own/human", human_name="mine",
                       web_shards="own/web")
    dvc_repo(repo, raw, "own data")
    run_checked([sys.executable, "-m", "dvc", "repro", "prepare"], repo)
    # no world made: its folder holds only the record that says so
    assert [p.name for p in (repo / "data" / "world").iterdir()] == ["world.json"]
    metrics = json.loads((repo / "metrics" / "prepare.json").read_text())
    assert "world" not in metrics and metrics["human"]["train"]["samples"] == 12 and metrics["web"]["samples"] == 20
    # the user's shards registered where they are: the manifest names them, nothing was copied into data/web
    web = json.loads((repo / "data/web/manifest.json").read_text())
    assert [Path(s["url"]) for s in web["shards"]] == sorted((repo / "own/web").glob("*.tar"))
    assert [p.name for p in (repo / "data/web").iterdir()] == ["manifest.json"]
    assert "Data and pipelines are up to date" in run_checked([sys.executable, "-m", "dvc", "status", "prepare"], repo)


def test_the_default_remote_lets_a_fresh_clone_pull_instead_of_recompute(tmp_path):
    repo = pipeline_checkout(tmp_path)
    dvc_repo(repo, small_world(raw_params()), dvc_config=(ROOT / ".dvc/config").read_text())  # the project's own
    run_checked([sys.executable, "-m", "dvc", "repro", "prepare"], repo)
    commit_all(repo, "prepared")
    assert "pushed" in run_checked([sys.executable, "-m", "dvc", "push"], repo)
    assert (tmp_path / "blip-dvc-remote").is_dir()  # beside the checkout

    clone = tmp_path / "clone"
    run_checked(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run_checked([sys.executable, "-m", "dvc", "pull", "prepare"], clone)  # what was pushed: prepare's outputs
    assert (clone / "data/web/manifest.json").read_bytes() == (repo / "data/web/manifest.json").read_bytes()
    assert (clone / "data/human/train/manifest.json").is_file()
    # the world's raw files are never in DVC's cache (nor pushed): only they are missing, and `dvc repro` writes
    # them again, to the same bytes, so the versioned outputs stand and nothing after prepare re-runs
    status = run_checked([sys.executable, "-m", "dvc", "status", "prepare"], clone)
    assert "deleted:            data/world" in status and "data/web" not in status, status
    run_checked([sys.executable, "-m", "dvc", "repro", "prepare"], clone)
    assert (clone / "data/web/manifest.json").read_bytes() == (repo / "data/web/manifest.json").read_bytes()
    assert "Data and pipelines are up to date" in run_checked([sys.executable, "-m", "dvc", "status", "prepare"], clone)
