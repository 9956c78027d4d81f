import copy

import pytest

from blip.config import load_params, params_from_dict
from tests.conftest import ROOT, raw_params


def test_params_yaml_loads_into_typed_sections():
    p = load_params(ROOT / "params.yaml")
    assert p.world.web.noise_mix.mismatched + p.world.web.noise_mix.partial + p.world.web.noise_mix.uninformative == 1
    for low, high in (p.loader.pretrain_crop_scale, p.loader.finetune_crop_scale):  # lists become tuples
        assert 0 < low <= high <= 1
    assert p.data.web_shards is None


def test_unknown_key_is_named():
    raw = copy.deepcopy(raw_params())
    raw["world"]["web"]["noise_fractoin"] = 0.5
    with pytest.raises(ValueError, match=r"world\.web.*unknown keys \['noise_fractoin'\]"):
        params_from_dict(raw)


def test_missing_key_is_named():
    raw = copy.deepcopy(raw_params())
    del raw["ingest"]["max_words"]
    with pytest.raises(ValueError, match=r"ingest.*missing keys \['max_words'\]"):
        params_from_dict(raw)


def test_wrong_type_is_named():
    raw = copy.deepcopy(raw_params())
    raw["world"]["human"]["train"] = "many"
    with pytest.raises(ValueError, match=r"world\.human\.train"):
        params_from_dict(raw)


def test_web_shards_accepts_a_list():
    raw = copy.deepcopy(raw_params())
    raw["data"]["web_shards"] = ["a/00000.tar", "a/00001.tar"]
    assert params_from_dict(raw).data.web_shards == ["a/00000.tar", "a/00001.tar"]
