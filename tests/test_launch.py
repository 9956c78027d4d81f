"""Rank, world and device from each launcher's environment, and the device rule's errors."""

from __future__ import annotations

import pytest
import torch

from blip.launch import Ranks, autocast, ranks_from_env, resolve_device, resolve_precision


@pytest.mark.parametrize("env, expected", [
    ({}, Ranks(0, 1, 0, "none")),
    ({"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job"}, Ranks(5, 16, 1, "torchrun")),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}, Ranks(3, 4, 3, "env")),  # DeepSpeed launcher, --procs
    ({"SLURM_PROCID": "9", "SLURM_NTASKS": "32", "SLURM_LOCALID": "1"}, Ranks(9, 32, 1, "slurm")),
])
def test_ranks_come_from_the_launchers_variables(env, expected):
    assert ranks_from_env(env) == expected


def test_torchrun_variables_win_over_an_enclosing_slurm_allocation():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert ranks_from_env(env).rank == 1


@pytest.mark.parametrize("env, message", [
    ({"RANK": "4", "WORLD_SIZE": "4"}, "outside a world of 4"),
    ({"RANK": "x", "WORLD_SIZE": "4"}, "RANK='x' is not an integer"),
    ({"SLURM_PROCID": "-1", "SLURM_NTASKS": "4"}, "must not be negative"),
])
def test_inconsistent_launcher_variables_are_refused(env, message):
    with pytest.raises(ValueError, match=message):
        ranks_from_env(env)


def test_device_rule_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available on this machine.*--device cpu"):
            resolve_device(spec)
    with pytest.raises(ValueError, match="auto \\| cpu \\| cuda \\| cuda:N"):
        resolve_device("gpu")


def test_device_rule_with_gpus_takes_the_ranks_local_gpu(monkeypatch):
    # no GPU here: CUDA's answers are stood in for; the rule itself is what is tested
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert resolve_device("auto", local_rank=5) == torch.device("cuda", 5)
    assert resolve_device("cuda", local_rank=9) == torch.device("cuda", 1)
    assert resolve_device("cuda:7") == torch.device("cuda", 7)
    with pytest.raises(ValueError, match="8 CUDA device\\(s\\), cuda:0 .. cuda:7"):
        resolve_device("cuda:8")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES: one GPU per rank
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 0)


def test_precision_is_bf16_on_gpus_and_fp32_on_cpus_unless_asked():
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))
    with autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cli_with_cuda_on_a_machine_without_it_fails_at_once_with_a_message(monkeypatch, capsys):
    from blip.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["score", "image.jpg", "a cat", "--model", "no/such/model", "--device", "cuda"])
    assert code == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err
