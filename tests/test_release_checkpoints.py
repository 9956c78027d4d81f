"""Loading the reference release's weights: every size the tensors show is read from them, head counts
are given or the released models', anything else is refused with a message; BLIP_ITM-style dicts load
for inference; ITM's first token can be [CLS] as in the release's demo."""

import dataclasses

import pytest
import torch
from PIL import Image

from blip.cli import main
from blip.inference import BlipInference, load
from blip.models.checkpoints import CheckpointError, init_task_model, load_model, load_release, save_pretrained
from blip.tokenizer import build_tokenizer, tokenize
from tests.support import CAPTIONS, TEXT, VISION, tiny

TEXTS = CAPTIONS[:4]


def _state(model) -> dict[str, torch.Tensor]:
    """A release-style state dict (0-dim temperature, position ids) of one of our models."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["text_encoder.embeddings.position_ids"] = torch.arange(model.cfg.text.positions).unsqueeze(0)
    if "temp" in state:
        state["temp"] = state["temp"].reshape(())
    return state


@pytest.fixture(scope="module")
def inputs():
    ids, mask = tokenize(build_tokenizer(), TEXTS, 30)
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ids, mask


def test_text_position_rows_are_read_from_the_weights(inputs):
    model = tiny("filter", text=dataclasses.replace(TEXT, positions=40)).eval()
    loaded = load_release(_state(model), vision_heads=4, text_heads=4).eval()
    assert loaded.cfg.text.positions == 40 and loaded.cfg.vocab_size == model.cfg.vocab_size
    assert torch.equal(loaded.itm_score(*inputs), model.itm_score(*inputs))


def test_a_width_no_released_model_has_needs_its_head_count():
    state = _state(tiny("filter"))  # 64 wide: the head count cannot be known
    with pytest.raises(CheckpointError, match=r"64 wide, which no released BLIP model is.*vision_heads=N"):
        load_release(state)
    with pytest.raises(CheckpointError, match=r"text transformer.*text_heads=N"):
        load_release(state, vision_heads=4)
    with pytest.raises(CheckpointError, match="3 heads do not divide the vision transformer's width 64"):
        load_release(state, vision_heads=3, text_heads=4)
    assert load_release(state, vision_heads=4, text_heads=4).cfg.vision.heads == 4


def test_released_widths_take_the_released_head_counts(inputs):
    # ViT-B and BERT-base widths (one layer each, a small vocabulary): 12 heads each, as every released model
    model = tiny("captioner", dataclasses.replace(VISION, width=768, heads=12, depth=1, mlp_ratio=0.25),
                 dataclasses.replace(TEXT, hidden=768, heads=12, layers=1), vocab_size=64).eval()
    loaded = load_release(_state(model)).eval()
    assert (loaded.cfg.vision.heads, loaded.cfg.text.heads, loaded.cfg.vocab_size) == (12, 12, 64)
    images = inputs[0]
    assert torch.equal(loaded.image_embeds(images), model.image_embeds(images))


def test_gaps_and_foreign_dicts_are_refused():
    state = _state(tiny("captioner"))
    gap = {k: v for k, v in state.items() if not k.startswith("visual_encoder.blocks.0.")}
    with pytest.raises(CheckpointError, match=r"layers \[0\] of 'visual_encoder.blocks.\*' are missing"):
        load_release(gap, vision_heads=4, text_heads=4)
    with pytest.raises(CheckpointError, match="is this a BLIP checkpoint"):
        load_release({"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_release({"model": state, "optimizer": {"lr": 1e-4}}["optimizer"])


def test_a_blip_itm_style_dict_loads_from_memory_for_inference_and_refuses_to_train(tmp_path, inputs):
    full = tiny("filter").eval()
    # BLIP_ITM: encoders, projections and ITM head; no momentum encoders, queues or temperature
    itm_only = {k: v for k, v in _state(full).items()
                if not k.split(".")[0].endswith("_m") and k not in ("image_queue", "text_queue", "idx_queue",
                                                                    "queue_ptr", "temp")}
    model = load_model(itm_only, vision_heads=4, text_heads=4).eval()
    assert model.cfg.task == "filter" and model.cfg.inference_only and not hasattr(model, "visual_encoder_m")
    assert torch.equal(model.itm_score(*inputs), full.itm_score(*inputs))
    assert torch.equal(model.itc_similarity(*inputs), full.itc_similarity(*inputs))
    with pytest.raises(ValueError, match="inference only.*cannot be trained"):
        model.train()(*inputs)
    # it keeps that state through our folder, and cannot start a fine-tuning
    save_pretrained(model, tmp_path / "itm")
    assert load_model(tmp_path / "itm").cfg.inference_only
    with pytest.raises(CheckpointError, match="cannot start a filter model"):
        init_task_model(tmp_path / "itm", "filter", 32)
    blip = load(itm_only, device="cpu", vision_heads=4, text_heads=4)
    assert isinstance(blip, BlipInference) and len(blip.score(Image.new("RGB", (32, 32)), TEXTS)) == 4


def test_itm_can_feed_cls_first_as_the_release_demo(tmp_path, capsys):
    save_pretrained(tiny("filter"), tmp_path / "filter", build_tokenizer())
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.jpg")
    blip = load(tmp_path / "filter", device="cpu")
    image = Image.open(tmp_path / "red.jpg")
    enc, cls = blip.score(image, TEXTS), blip.score(image, TEXTS, itm_token="cls")
    assert all(a["itm"] != b["itm"] and a["itc"] == b["itc"] for a, b in zip(enc, cls))
    assert main(["score", str(tmp_path / "red.jpg"), TEXTS[0], "--model", str(tmp_path / "filter"),
                 "--device", "cpu", "--itm-token", "cls"]) == 0
    assert capsys.readouterr().out.startswith(f"itm={cls[0]['itm']:.4f}\titc={cls[0]['itc']:.4f}")
