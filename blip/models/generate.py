"""Caption generation on our decoder: beam search ranked as the release ranks it (blip.models.beam),
sampling and greedy decoding through transformers' GenerationMixin.

The image is encoded once; its tokens enter the decoder as `encoder_hidden_states`, and each layer's
cross-attention keys/values are projected once per image, up front, and reused at every step (the
reference release recomputes them over all image tokens at every step). Decoding starts from `[DEC]` +
the prompt, stops at [SEP], and the prompt is stripped from the text, as the release. After [SEP]
the ids are padded with [PAD], as the release's transformers pads them (transformers 5 repeats [SEP]).

- beam search: 3 beams, no repetition penalty, length penalty 1.0 (captioning evaluation);
- nucleus sampling: top-k 50 then top-p 0.9, repetition penalty 1.1 (CapFilt's synthetic captions).
Lengths count the prompt, as the release passes them (so max 20 leaves 16 tokens after the prompt).

Keyed sampling (CapFilt): given a seed per image, each row's draw at each step is the Gumbel-max of its
nucleus with noise hashed from (row seed, step, token id) in integer arithmetic. The sample has the
same distribution as torch's multinomial, but depends only on its own image's seed: not on the batch it
shares, the batch size, the process, or the device's random number generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessor

from blip.models.beam import beam_search
from blip.tokenizer import DEC_ID, PAD_ID, SEP_ID


@dataclass(frozen=True)
class GenerationSettings:
    method: Literal["beam", "nucleus", "greedy"] = "beam"
    num_beams: int = 3
    max_length: int = 20
    min_length: int = 5
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float | None = None  # None: 1.0 for beam/greedy, 1.1 for nucleus (the release)
    num_captions: int = 1  # captions per image (nucleus: independent samples; beam: the best beams)

    def generate_kwargs(self) -> dict:
        """transformers' generate() arguments for nucleus sampling or greedy decoding."""
        penalty = self.repetition_penalty
        if self.method == "nucleus":
            return dict(do_sample=True, top_p=self.top_p, top_k=self.top_k, num_beams=1,
                        repetition_penalty=1.1 if penalty is None else penalty,
                        num_return_sequences=self.num_captions)
        if self.method == "greedy":
            return dict(do_sample=False, num_beams=1, repetition_penalty=1.0 if penalty is None else penalty)
        raise ValueError(f"method {self.method!r} does not run through transformers' generate()")


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 torch stores it."""
    return c - (1 << 64) if c >= 1 << 63 else c


_M1, _M2, _GOLDEN = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB), _signed(0x9E3779B97F4A7C15)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch shifts signed integers arithmetically)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic): equal bits on every device."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def keyed_gumbel(row_seeds: torch.Tensor, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise (float64) for tokens (R, k), a pure function of (row seed, step, token id)."""
    base = mix64(row_seeds * _GOLDEN + step)
    bits = _shr(mix64(base.unsqueeze(1) + tokens * _GOLDEN), 11)  # 53 random bits
    u = (bits.double() + 0.5) * 2.0 ** -53
    return -torch.log(-torch.log(u))


class KeyedSampler(LogitsProcessor):
    """Draw each row's next token from its nucleus (top-k, then top-p within it, by transformers' rule) by
    Gumbel-max with keyed noise; returns scores whose argmax is the draw, so greedy decoding takes it.

    The nucleus is cut among the k best tokens only: transformers' top-p warper sorts the whole
    vocabulary at every step, which was the larger part of a CapFilt batch's decoding time on a CPU.
    """

    def __init__(self, row_seeds: torch.Tensor, top_k: int, top_p: float = 1.0):
        self.row_seeds, self.top_k, self.top_p = row_seeds, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.shape[-1]) if self.top_k > 0 else scores.shape[-1]
        values, tokens = scores.topk(k, dim=-1)  # best first; barred tokens are -inf and stay so
        if self.top_p < 1.0:
            # transformers' TopPLogitsWarper on the k values: ascending, drop the tokens whose cumulative
            # probability stays within 1 - top_p, always keep the most likely
            ascending = values.flip(-1)
            drop = ascending.softmax(-1).cumsum(-1) <= 1 - self.top_p
            drop[..., -1] = False
            values = values.masked_fill(drop.flip(-1), float("-inf"))
        noisy = values.double() + keyed_gumbel(self.row_seeds, input_ids.shape[1], tokens)
        pick = tokens.gather(-1, noisy.argmax(-1, keepdim=True))
        return torch.full_like(scores, float("-inf")).scatter_(-1, pick, 0.0)


def prompt_ids(tokenizer, prompt: str, batch: int, device: torch.device) -> torch.Tensor:
    """[DEC] + prompt tokens (no trailing [SEP]), repeated for the batch."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids[:, :-1]
    ids[:, 0] = DEC_ID
    return ids.repeat(batch, 1).to(device)


class ImageKVCache(EncoderDecoderCache):
    """Decoder cache whose cross-attention keys/values are computed once per image, up front.

    Beam search reorders rows only among the beams of one image, and those rows hold the same image
    keys/values, so reordering the cross-attention part would copy memory for nothing: it is skipped.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def image_kv_cache(decoder, image_embeds: torch.Tensor, rows_per_image: int) -> ImageKVCache:
    """Project the image tokens to each layer's cross-attention keys/values once, then copy per row."""
    cross = DynamicCache(config=decoder.config)
    b, n, _ = image_embeds.shape
    for i, layer in enumerate(decoder.bert.encoder.layer):
        attn = layer.crossattention.self
        k = attn.key(image_embeds).view(b, n, -1, attn.attention_head_size).transpose(1, 2)
        v = attn.value(image_embeds).view(b, n, -1, attn.attention_head_size).transpose(1, 2)
        cross.update(k.repeat_interleave(rows_per_image, 0), v.repeat_interleave(rows_per_image, 0), i)
    return ImageKVCache(DynamicCache(config=decoder.config), cross)


def keyed_kwargs(settings: GenerationSettings, seeds: torch.Tensor) -> dict:
    """generate() arguments for keyed nucleus sampling, one row per (image, caption) already expanded."""
    k = settings.num_captions
    row_seeds = seeds.to(torch.int64).repeat_interleave(k) * 1_000_003 + torch.arange(k, device=seeds.device).repeat(len(seeds))
    penalty = 1.1 if settings.repetition_penalty is None else settings.repetition_penalty
    return dict(do_sample=False, num_beams=1, repetition_penalty=penalty,
                logits_processor=[KeyedSampler(row_seeds, settings.top_k, settings.top_p)])


def pad_after_sep(ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """[PAD] in every position after a row's first generated [SEP]."""
    generated = ids[:, prompt_len:]
    after = (generated == SEP_ID).int().cumsum(1) - (generated == SEP_ID).int() > 0
    return torch.cat([ids[:, :prompt_len], generated.masked_fill(after, PAD_ID)], dim=1)


def beam_ids(model, image_embeds: torch.Tensor, input_ids: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """Beam search on the decoder over any cross-attended states (image tokens; VQA: question states, unmasked
    as the release), its self-attention cache reordered with the beams."""
    decoder, rows = model.text_decoder, settings.num_beams
    cache = image_kv_cache(decoder, image_embeds, rows)
    embeds = image_embeds.repeat_interleave(rows, 0)
    image_mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)

    def next_logits(ids: torch.Tensor, reorder: torch.Tensor | None) -> torch.Tensor:
        if reorder is not None:
            cache.reorder_cache(reorder)
        new = ids if reorder is None else ids[:, -1:]  # the cache holds every earlier position
        return decoder(input_ids=new, attention_mask=torch.ones_like(ids), past_key_values=cache,
                       encoder_hidden_states=embeds, encoder_attention_mask=image_mask, use_cache=True,
                       logits_to_keep=1).logits[:, -1]

    penalty = 1.0 if settings.repetition_penalty is None else settings.repetition_penalty
    return beam_search(next_logits, input_ids, settings.num_beams, settings.max_length, settings.min_length,
                       eos_id=SEP_ID, pad_id=PAD_ID, length_penalty=1.0, repetition_penalty=penalty,
                       num_return=settings.num_captions)


@torch.no_grad()
def generate_ids(model, images: torch.Tensor, tokenizer, settings: GenerationSettings,
                 prompt: str | None = None, seeds: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids (B * num_captions, L) for a batch of images, prompt included, [PAD] after [SEP];
    `seeds` (one int per image) switches nucleus sampling to keyed sampling."""
    if seeds is not None and settings.method != "nucleus":
        raise ValueError("per-image seeds apply to nucleus sampling only")
    prompt = model.cfg.prompt if prompt is None else prompt
    image_embeds = model.image_embeds(images)
    input_ids = prompt_ids(tokenizer, prompt, len(images), images.device)
    if settings.method == "beam":
        return beam_ids(model, image_embeds, input_ids, settings)
    if seeds is None:
        kwargs = settings.generate_kwargs()
        # generate() expands every input to this many rows per image (samples)
        rows = kwargs.get("num_return_sequences", 1)
        cache = image_kv_cache(model.text_decoder, image_embeds, rows)
    else:
        kwargs = keyed_kwargs(settings, seeds)
        # greedy decoding keeps one row per input: expand to a row per (image, caption) here
        cache = image_kv_cache(model.text_decoder, image_embeds, settings.num_captions)
        input_ids = input_ids.repeat_interleave(settings.num_captions, 0)
        image_embeds = image_embeds.repeat_interleave(settings.num_captions, 0)
    ids = model.text_decoder.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), past_key_values=cache,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=images.device),
        eos_token_id=SEP_ID, pad_token_id=PAD_ID, bos_token_id=DEC_ID,
        max_length=settings.max_length, min_length=settings.min_length, **kwargs)
    return pad_after_sep(ids, input_ids.shape[1])


def decode_captions(tokenizer, ids: torch.Tensor, prompt: str) -> list[str]:
    """Token ids to text, special tokens and the prompt removed."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t[len(prompt):].strip() if t.startswith(prompt.strip()) else t.strip() for t in texts]


@torch.no_grad()
def generate(model, images: torch.Tensor, tokenizer, settings: GenerationSettings = GenerationSettings(),
             prompt: str | None = None, seeds: torch.Tensor | None = None) -> list[list[str]]:
    """Captions for each image: a list of `settings.num_captions` strings per image."""
    prompt = model.cfg.prompt if prompt is None else prompt
    texts = decode_captions(tokenizer, generate_ids(model, images, tokenizer, settings, prompt, seeds), prompt)
    k = settings.num_captions if settings.method != "greedy" else 1
    return [texts[i * k:(i + 1) * k] for i in range(len(images))]
