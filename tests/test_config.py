import copy
import dataclasses
import re

import pytest

from blip.cli import main
from blip.params import load_params, params_from_dict
from tests.support import ROOT, raw_params


def _refused(edit) -> str:
    """The error message for params.yaml with one edit applied."""
    raw = copy.deepcopy(raw_params())
    edit(raw)
    with pytest.raises(ValueError) as e:
        params_from_dict(raw, "params.yaml")
    return str(e.value)


def test_params_yaml_loads_into_typed_sections():
    p = load_params(ROOT / "params.yaml")
    assert p.world.web.noise_mix.mismatched + p.world.web.noise_mix.partial + p.world.web.noise_mix.uninformative == 1
    for low, high in (p.loader.pretrain_crop_scale, p.loader.finetune_crop_scale):  # lists become tuples
        assert 0 < low <= high <= 1
    assert p.data.web_shards is None


def test_unknown_and_missing_keys_are_named():
    def edit(raw):
        raw["world"]["web"]["noise_fractoin"] = 0.5
        del raw["ingest"]["max_words"]

    message = _refused(edit)
    assert "world.web.noise_fractoin: unknown key" in message
    assert "ingest.max_words: missing" in message


@pytest.mark.parametrize("section, key, value, expected", [
    ("world.human", "train", "many", "world.human.train: Input should be a valid integer, got 'many'"),
    ("ingest", "shard_size", "7", "ingest.shard_size: Input should be a valid integer, got '7'"),  # no silent "7" -> 7
    ("ingest", "shard_size", -5, "ingest.shard_size: Input should be greater than 0, got -5"),
    ("ingest", "max_skip_fraction", 5, "ingest.max_skip_fraction: Input should be less than or equal to 1, got 5"),
    ("presets.tiny.pretrain", "batch_size", -1, "presets.tiny.pretrain.batch_size: Input should be greater than 0"),
    ("presets.tiny.pretrain", "lr", float("nan"), "presets.tiny.pretrain.lr: Input should be a finite number"),
    ("presets.tiny.pretrain", "lr", "5e-4", r"write 5.0e-4\), got '5e-4'"),
    ("presets.tiny.pretrain", "schedule", "linear", "schedule: Input should be 'step' or 'cosine'"),
    ("select", "threshold", 2.0, r"select: threshold 2.0 is outside the scores' range \[0, 1\]"),
    ("train", "bf16", 1, "train.bf16: Input should be a valid boolean, got 1"),
    ("train", "zero_stage", 3, "train.zero_stage: Input should be 0, 1 or 2, got 3"),
    ("capfilt", "method", "greedy", "capfilt.method: Input should be 'nucleus' or 'beam'"),
    ("capfilt", "min_length", 50, "capfilt: min_length, max_length: 50 is above 30"),
    ("inference", "device", "tpu", "inference.device: String should match pattern"),
    ("world.web.noise_mix", "partial", 0.5, "world.web.noise_mix: the three shares must sum to 1, got 1.2"),
    ("presets.tiny.model.vision", "heads", 5, "presets.tiny.model.vision: 5 heads do not divide the width 192"),
    ("presets.tiny.finetune_filter", "image_size", 100,
     "presets.tiny: finetune_filter.image_size 100 is not a multiple of the patch size 16"),
    ("contracts", "noise_ratio", [0.9, 0.1], "contracts: noise_ratio: 0.9 is above 0.1"),
    ("data", "web_shards", 5, "data.web_shards: a folder, a glob or a list of them, or null; got 5"),
])
def test_a_bad_value_is_refused_with_its_dotted_key(section, key, value, expected):
    def edit(raw):
        node = raw
        for part in section.split("."):
            node = node[part]
        node[key] = value

    message = _refused(edit)
    assert re.search(expected, message), message


def test_a_rule_that_scores_everything_zero_is_refused():
    def edit(raw):
        raw["select"].update(itm_weight=0.0, itc_weight=0.0)

    assert "select: itm_weight and itc_weight are both 0" in _refused(edit)


def test_the_shared_captioner_filter_ablation_runs_one_round_only():
    def edit(raw):
        raw["capfilt"]["models"], raw["rounds"] = "shared", 2

    assert "capfilt.models is 'shared' (the ablation) and rounds > 1" in _refused(edit)


def test_an_unknown_preset_is_refused():
    assert "preset 'huge' is not one of ['base', 'large', 'tiny']" in _refused(lambda raw: raw.update(preset="huge"))


def test_a_changed_copy_is_checked_too():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ValueError, match="top_percent"):
        dataclasses.replace(params.select, top_percent=150.0)


def test_web_shards_accepts_a_list():
    raw = copy.deepcopy(raw_params())
    raw["data"]["web_shards"] = ["a/00000.tar", "a/00001.tar"]
    assert params_from_dict(raw).data.web_shards == ["a/00000.tar", "a/00001.tar"]


def test_the_cli_names_the_bad_key_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("shard_size: 1000", "shard_size: -1000"))
    assert main(["--params", str(bad), "prepare", "--out", str(tmp_path / "data")]) != 0
    err = capsys.readouterr().err
    assert "ingest.shard_size: Input should be greater than 0, got -1000" in err and "Traceback" not in err
