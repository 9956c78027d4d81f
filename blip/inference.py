"""Using a model: one call to load any supported weights, then caption, score and embed PIL images.

    from blip.inference import load
    blip = load("models/captioner")            # our folder, a release .pth, a HF Blip folder or hub id
    blip.caption([Image.open("cat.jpg")])       # [["a cat sitting on a couch"]]
    blip.score(Image.open("cat.jpg"), ["a cat", "a dog"])   # ITM probabilities and ITC similarities

A transfer task's model loads the same way; its own uses live in its folder (blip/tasks/vqa/answer.py's
`ask`, blip/tasks/nlvr/verify.py's `verify_pair`).

`score(..., itm_token="cls")` feeds [CLS] instead of [ENC] to the ITM pass, as the release's BLIP_ITM
demo does (its retrieval training and evaluation use [ENC], our default); the two give different scores.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from blip.launch import autocast, ranks_from_env, resolve_device, resolve_precision
from blip.models.blip import Blip, ITMToken
from blip.models.checkpoints import load_model, load_tokenizer_for
from blip.models.generate import GenerationSettings, generate
from blip.tokenizer import tokenize


@dataclass
class BlipInference:
    model: Blip
    tokenizer: object
    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    folder: Path | None = None  # the model folder it was loaded from (a task keeps its own files there)

    @cached_property
    def transform(self) -> T.Compose:
        c = self.model.cfg
        return T.Compose([T.Resize((c.image_size, c.image_size), interpolation=InterpolationMode.BICUBIC),
                          T.ToTensor(), T.Normalize(c.mean, c.std)])

    def images(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> the model's normalised input batch."""
        return torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)

    def text_inputs(self, texts: list[str], max_len: int = 35) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (input_ids, attention_mask) on the model's device."""
        ids, mask = tokenize(self.tokenizer, texts, max_len)
        return ids.to(self.device), mask.to(self.device)

    def _need(self, role: str) -> None:
        has = self.model.cfg.has_encoder if role == "encoder" else self.model.cfg.has_decoder
        if not has:
            raise ValueError(f"this is a {self.model.cfg.task} model: it has no text {role} "
                             f"({'score/embed need a filter or pre-trained model' if role == 'encoder' else 'captions need a captioner or pre-trained model'})")

    @torch.no_grad()
    def caption(self, images: list[Image.Image], settings: GenerationSettings = GenerationSettings()) -> list[list[str]]:
        """Captions per image (beam search by default; nucleus sampling with method='nucleus')."""
        self._need("decoder")
        with autocast(self.precision, self.device):
            return generate(self.model, self.images(images), self.tokenizer, settings)

    @torch.no_grad()
    def score(self, image: Image.Image, texts: list[str], itm_token: ITMToken = "enc") -> list[dict]:
        """For each text: the ITM match probability ([ENC] or [CLS] first) and the ITC cosine similarity."""
        self._need("encoder")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {i + 1} ({text!r}) is empty: give each text some words to score")
        pixels = self.images([image]).expand(len(texts), -1, -1, -1)
        ids, mask = self.text_inputs(texts)
        with autocast(self.precision, self.device):
            itm = self.model.itm_score(pixels, ids, mask, itm_token).float()
            itc = self.model.itc_similarity(pixels[:1], ids, mask)[0].float()
        return [{"text": t, "itm": float(p), "itc": float(s)} for t, p, s in zip(texts, itm, itc)]

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """Normalised ITC image features (N, embed_dim)."""
        self._need("encoder")
        return self.model.image_feat(self.model.image_embeds(self.images(images)))

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Normalised ITC text features (N, embed_dim)."""
        self._need("encoder")
        return self.model.text_feat(*self.text_inputs(texts))

    @torch.no_grad()
    def multimodal_features(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """The image-grounded encoder's [ENC] output per (image, text) pair (N, hidden)."""
        self._need("encoder")
        ids, mask = self.text_inputs(texts)
        ids[:, 0] = self.tokenizer.convert_tokens_to_ids("[ENC]")
        embeds = self.model.image_embeds(self.images(images))
        out = self.model.text_encoder(ids, attention_mask=mask, encoder_hidden_states=embeds)
        return out.last_hidden_state[:, 0]


def decode_image(source: bytes | str | Path) -> Image.Image:
    """An RGB picture, upright by its EXIF, from encoded bytes or a file; ValueError saying why it is not
    usable (not an image, truncated, a directory, past PIL's pixel limit: a decompression bomb)."""
    import warnings

    from PIL import ImageOps

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # refused, not just warned about: a picture past the pixel limit can exhaust memory
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, ValueError) as e:
        if not isinstance(source, bytes) and Path(source).is_dir():
            raise ValueError("a directory, not an image") from e
        raise ValueError(f"not a usable image ({type(e).__name__}: {e})") from e


def load(source: str | Path | Mapping, image_size: int | None = None, device: str = "auto", precision: str = "auto",
         vision_heads: int | None = None, text_heads: int | None = None) -> BlipInference:
    """Load weights of any supported kind (a path, or a release state dict in memory), ready for inference
    (eval mode) on `device` (auto | cpu | cuda | cuda:N; auto: this rank's GPU when CUDA is present) in
    `precision` (auto: bf16 on a GPU, else fp32). Head counts: for release weights of unreleased widths."""
    where = resolve_device(device, ranks_from_env().local_rank)
    model = load_model(source, image_size, vision_heads, text_heads).to(where).eval()
    tokenizer = load_tokenizer_for(None if isinstance(source, Mapping) else source)
    folder = None if isinstance(source, Mapping) or not Path(source).is_dir() else Path(source)
    return BlipInference(model, tokenizer, where, resolve_precision(precision, where), folder)
