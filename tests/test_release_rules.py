"""Behaviours that follow the reference release exactly: how ITM draws its negatives in pre-training
and in retrieval fine-tuning, how beam search ranks finished captions, and [PAD] after [SEP]."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from blip.models import blip as blip_module
from blip.models.beam import beam_search
from blip.models.generate import GenerationSettings, generate_ids, pad_after_sep
from blip.tokenizer import PAD_ID, SEP_ID, build_tokenizer, tokenize
from tests.support import CAPTIONS, tiny


def _features(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(F.normalize(torch.randn(n, 32, generator=g), dim=-1) for _ in range(4))


def _drawn_weights(monkeypatch, model, feats, idx=None) -> list[torch.Tensor]:
    """The weights `_draw_negatives` hands to torch.multinomial: [image per text, text per image]."""
    seen = []
    real = torch.multinomial

    def spy(weights, n):
        seen.append(weights.clone())
        return real(weights, n)

    monkeypatch.setattr(blip_module.torch, "multinomial", spy)
    model._draw_negatives(feats, idx, negatives_all_ranks=False)
    return seen


def test_pretraining_draws_against_the_batch_momentum_features(monkeypatch):
    model = tiny("pretrain")
    image, text, image_m, text_m = feats = _features(6, 0)
    temp = model.temperature().detach()
    w_t2i, w_i2t = _drawn_weights(monkeypatch, model, feats)
    # BLIP_Pretrain: softmax(online @ momentum / temp) + 1e-4, the pair itself zeroed
    expected_t2i = (F.softmax(text @ image_m.T / temp, dim=1) + 1e-4).fill_diagonal_(0)
    expected_i2t = (F.softmax(image @ text_m.T / temp, dim=1) + 1e-4).fill_diagonal_(0)
    assert torch.allclose(w_t2i, expected_t2i, atol=1e-7) and torch.allclose(w_i2t, expected_i2t, atol=1e-7)
    # not the online-against-online weights
    assert not torch.allclose(w_t2i, (F.softmax(text @ image.T / temp, dim=1) + 1e-4).fill_diagonal_(0), atol=1e-3)


def test_retrieval_draws_online_against_online_with_every_caption_of_the_image_excluded(monkeypatch):
    model = tiny("filter")
    image, text, _, _ = feats = _features(6, 1)
    idx = torch.tensor([7, 7, 3, 4, 4, 9])  # pairs 0-1 and 3-4 are captions of one image
    temp = model.temperature().detach()
    w_t2i, w_i2t = _drawn_weights(monkeypatch, model, feats, idx)
    same = idx.view(-1, 1) == idx.view(1, -1)
    # BLIP_Retrieval: no +1e-4 floor, so a caption of the same image can never be drawn as a negative
    assert torch.allclose(w_t2i, F.softmax(text @ image.T / temp, dim=1).masked_fill(same, 0), atol=1e-7)
    assert torch.allclose(w_i2t, F.softmax(image @ text.T / temp, dim=1).masked_fill(same, 0), atol=1e-7)
    assert (w_t2i[same] == 0).all() and (w_t2i[~same] > 0).all()


def test_pinned_negatives_make_itm_independent_of_the_random_state():
    tokenizer = build_tokenizer()
    model = tiny("pretrain").eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids, mask = tokenize(tokenizer, CAPTIONS[:4], 30)
    pinned = (torch.tensor([1, 0, 3, 2]), torch.tensor([2, 3, 0, 1]))

    def itm(seed, negatives):
        torch.manual_seed(seed)
        return copy.deepcopy(model)(images, ids, mask, negatives=negatives)["itm"]

    assert torch.equal(itm(0, pinned), itm(1, pinned))
    assert not torch.equal(itm(0, pinned), itm(0, (torch.tensor([1, 0, 3, 2]), torch.tensor([1, 0, 3, 2]))))
    with pytest.raises(ValueError, match="shape"):
        model(images, ids, mask, negatives=(torch.tensor([1, 0]), torch.tensor([2, 3])))


def test_a_batch_of_one_image_has_no_negative_and_is_refused():
    model = tiny("filter")
    with pytest.raises(ValueError, match="only captions of one image"):
        model._draw_negatives(_features(4, 2), torch.tensor([5, 5, 5, 5]), negatives_all_ranks=False)


# --------------------------------------------------------------------------- beam search on a hand-built model

EOS, PAD, FILLERS = 2, 0, list(range(9, 29))
PROMPT = torch.tensor([[1, 3]])  # [DEC]-like start + one prompt token
A, B, C, D = 4, 5, 6, 7


def _table_model(extra: dict[int, dict[int, float]] | None = None):
    """Next-token probabilities that depend on the last token only. After the prompt: A (then [SEP]),
    or B C D (then [SEP]); every other token is a filler with tiny probability."""
    vocab = 30
    probs = {3: {A: math.exp(-1.4), B: math.exp(-2.3)}, A: {EOS: math.exp(-0.1)},
             B: {C: math.exp(-0.1)}, C: {D: math.exp(-0.1)}, D: {EOS: math.exp(-0.1)}, **(extra or {})}
    table = torch.full((vocab, vocab), 1.0 / vocab)
    for last, nxt in probs.items():
        rest = (1 - sum(nxt.values())) / (vocab - 1 - len(nxt))  # spread over every other token but [PAD]
        table[last] = rest
        table[last, PAD] = 0
        for t, p in nxt.items():
            table[last, t] = p
    logits = table.clamp_min(1e-30).log()

    def next_logits(ids, reorder):
        return logits[ids[:, -1]]

    return next_logits


def test_beam_search_ranks_finished_captions_as_the_release():
    # log P(A [SEP]) = -1.5 and log P(B C D [SEP]) = -2.6. The release's transformers (4.15) divides by the
    # hypothesis length with the prompt and without [SEP]: A -1.5/3 = -0.50 beats B -2.6/5 = -0.52.
    # transformers 5 divides by the generated tokens with [SEP]: A -1.5/2 = -0.75 loses to B -2.6/4 = -0.65.
    assert -1.5 / 3 > -2.6 / 5 and -1.5 / 2 < -2.6 / 4
    out = beam_search(_table_model(), PROMPT, num_beams=2, max_length=8, min_length=3, eos_id=EOS, pad_id=PAD,
                      num_return=2)
    assert out.tolist() == [[1, 3, A, EOS, PAD, PAD], [1, 3, B, C, D, EOS]]


def test_beam_search_honours_min_and_max_length():
    # [SEP] barred before length 4: A cannot end, so B C D wins
    out = beam_search(_table_model(), PROMPT, num_beams=2, max_length=8, min_length=4, eos_id=EOS, pad_id=PAD)
    assert out.tolist() == [[1, 3, B, C, D, EOS]]
    # max_length 4 (prompt included) with [SEP] barred below 4: nothing finishes, the best beam is cut at 4
    out = beam_search(_table_model(), PROMPT, num_beams=2, max_length=4, min_length=4, eos_id=EOS, pad_id=PAD)
    assert out.shape == (1, 4) and EOS not in out.tolist()[0]
    with pytest.raises(ValueError, match="no room"):
        beam_search(_table_model(), PROMPT, num_beams=2, max_length=2, min_length=0, eos_id=EOS, pad_id=PAD)


def test_one_beam_is_greedy_decoding_and_ids_are_padded_after_sep():
    tokenizer = build_tokenizer()
    model = tiny("captioner").eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    beam = generate_ids(model, images, tokenizer, GenerationSettings("beam", num_beams=1, max_length=12, min_length=5))
    greedy = generate_ids(model, images, tokenizer, GenerationSettings("greedy", max_length=12, min_length=5))
    assert beam.tolist() == greedy.tolist()
    ids = torch.tensor([[1, 2, 7, SEP_ID, SEP_ID, SEP_ID], [1, 2, 7, 8, 9, SEP_ID]])
    assert pad_after_sep(ids, 2).tolist() == [[1, 2, 7, SEP_ID, PAD_ID, PAD_ID], [1, 2, 7, 8, 9, SEP_ID]]
