"""Bad model files and bad inputs to `blip caption` / `blip score`: one message naming the file and what
to do, never a traceback; among many images, a bad one is skipped and counted."""

import json

import pytest
import torch
from PIL import Image

from blip.cli import main
from blip.models.checkpoints import CheckpointError, load_model, save_pretrained
from blip.tokenizer import build_tokenizer
from tests.support import tiny


class Payload:
    """Stands for any pickled object in a downloaded checkpoint."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    save_pretrained(tiny("pretrain"), root / "model", build_tokenizer())
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "red.jpg")
    return root


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_pth_with_pickled_objects_is_refused_without_advice_to_unpickle(folder, tmp_path, capsys):
    torch.save({"model": {"x": Payload()}}, tmp_path / "payload.pth")
    err = _error(capsys, ["caption", str(folder / "red.jpg"), "--model", str(tmp_path / "payload.pth")])
    assert "payload.pth: holds pickled Python objects" in err and "weights_only=False" not in err


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable torch checkpoint"),
    (b"PK\x03\x04 truncated", "may be truncated"),
])
def test_an_empty_or_truncated_pth_is_named(tmp_path, content, message):
    (tmp_path / "bad.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match=f"bad.pth: .*{message}"):
        load_model(tmp_path / "bad.pth")


def test_a_pth_holding_a_list_or_missing_keys_is_named(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth: not a state dict of tensors"):
        load_model(tmp_path / "list.pth")
    state = {k: v for k, v in tiny("captioner").state_dict().items() if "patch_embed" not in k}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial.pth: no 'visual_encoder.patch_embed.proj.weight'.*complete"):
        load_model(tmp_path / "partial.pth", vision_heads=4, text_heads=4)


@pytest.mark.parametrize("size", [0, 100])
def test_an_empty_or_truncated_safetensors_is_named(folder, tmp_path, size):
    import shutil

    shutil.copytree(folder / "model", tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file.*download it again"):
        load_model(tmp_path / "model")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["text"].update(hidden=10**9), r"text_encoder.embeddings.word_embeddings.weight: weights \(30524, 64\)"),
    (lambda c: c["vision"].update(heads=0), "vision.heads: Input should be greater than 0, got 0"),
    (lambda c: c["text"].update(heads=3), "text: 3 heads do not divide the width 64"),
    (lambda c: c.update(temp=-1), "temp must be positive, got -1"),
    (lambda c: c["vision"].update(width="64"), "vision.width: Input should be a valid integer"),
    (lambda c: c.update(task="captioner "),
     "task 'captioner ' is not a known model's"),
    (lambda c: c["vision"].update(depth=3), "vision.depth is 3, the weights have 2"),
])
def test_a_config_is_checked_against_types_bounds_and_weights_before_allocating(folder, tmp_path, edit, message):
    import shutil

    shutil.copytree(folder / "model", tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    cfg = json.loads(config.read_text())
    edit(cfg)
    config.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "model")  # a 10^9 hidden size would ask for terabytes: refused first


def test_a_config_that_is_not_json_is_named(folder, tmp_path):
    import shutil

    shutil.copytree(folder / "model", tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_model(tmp_path / "model")


def test_caption_skips_bad_files_and_captions_the_rest(folder, tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes((folder / "red.jpg").read_bytes()[:200])
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 100 x 100 is over it: a stand-in for a pixel bomb
    paths = [str(folder / "red.jpg"), str(tmp_path), str(tmp_path / "notes.jpg"), str(tmp_path / "cut.jpg"),
             str(tmp_path / "bomb.png"), str(folder / "red.jpg")]
    assert main(["caption", *paths, "--model", str(folder / "model"), "--max-length", "8"]) == 1
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.strip().splitlines()] == [paths[0], paths[5]]
    assert f"skipped {tmp_path}: a directory, not an image" in err
    assert "notes.jpg: not a usable image (UnidentifiedImageError" in err and "cut.jpg: not a usable image" in err
    assert "bomb.png: not a usable image (DecompressionBomb" in err
    assert "captioned 2 of 6 files, skipped 4" in err and "Traceback" not in err
    assert "none of the 2 files is a usable image" in _error(
        capsys, ["caption", paths[2], paths[3], "--model", str(folder / "model")])


def test_score_refuses_an_empty_text_and_a_bad_image(folder, tmp_path, capsys):
    model = str(folder / "model")
    assert "text 2 ('  ') is empty" in _error(capsys, ["score", str(folder / "red.jpg"), "a red square", "  ",
                                                       "--model", model])
    (tmp_path / "notes.jpg").write_text("not an image")
    assert "notes.jpg: not a usable image" in _error(capsys, ["score", str(tmp_path / "notes.jpg"), "a red square",
                                                              "--model", model])
