"""BLIP's MED model: the shared parts, and the three models of CapFilt built from them.

    pretrain   ViT + text encoder + text decoder (sharing all but self-attention): ITC + ITM + LM
    captioner  ViT + text decoder: LM on "a picture of " + caption, prompt tokens not predicted
    filter     ViT + text encoder: ITC + ITM (the retrieval model CapFilt filters with)

A transfer task's model (VQA, NLVR, dialog, ...) subclasses `Blip` in its own folder under blip/tasks/:
it adds its head and its forward, and says how it starts from another model's weights
(`adapt_state`, `fresh_weights`, `STARTS_FROM`). It registers its class with `register_model`, so a
saved model folder (whose config.json names the task) loads as the right class.

ITC keeps momentum encoders (EMA of the online ones, never seen by the optimizer) and queues of their
features, and mixes the momentum model's soft similarities into the targets (weight alpha). ITM
classifies matched vs unmatched pairs on the [ENC] output, with one hard negative text per image and
one hard negative image per text sampled from contrastive similarities, by each release model's rule:

    pretrain   online features against the batch's momentum features, softmax + 1e-4, the pair itself
               excluded (BLIP_Pretrain)
    filter     online against online features (every rank's with `negatives_all_ranks`), no floor, every
               caption of the same image excluded (BLIP_Retrieval)

One deliberate difference: in retrieval ITC every queued caption of the same image is a positive
target. The release builds those targets and then overwrites them with the diagonal; we keep them, as
its ITC comment intends. Parameter names follow the release (visual_encoder, text_encoder,
text_decoder, vision_proj, ..., *_m, image_queue), so its checkpoints load by name.

A filter loaded from a BLIP_ITM-style checkpoint (no momentum encoders, no queues) is built with
`inference_only`: it scores and retrieves, and refuses to train.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.blip.modeling_blip_text import BlipTextLayer

from blip.config import TextArch, VisionArch
from blip.models.med import build_text_decoder, build_text_encoder, share_all_but_self_attention, text_config
from blip.models.vit import create_vit, set_grad_checkpointing
from blip.tokenizer import CLS_ID, DEC_ID, ENC_ID, PAD_ID, VOCAB_SIZE

# the first token of ITM's image-grounded pass: [ENC] as the release trains and evaluates retrieval,
# [CLS] as its BLIP_ITM demo feeds it
ITMToken = Literal["enc", "cls"]
_FIRST_TOKEN = {"enc": ENC_ID, "cls": CLS_ID}


@dataclasses.dataclass
class BlipConfig:
    """Everything needed to rebuild a model; stored as config.json next to its weights."""

    task: str  # the registered model class's task (MODEL_CLASSES)
    image_size: int
    vision: VisionArch
    text: TextArch
    embed_dim: int = 256
    queue_size: int = 57600
    momentum: float = 0.995
    temp: float = 0.07
    temp_min: float = 0.001  # the learnable temperature is clamped to [temp_min, 0.5]
    itm_random_negatives: float = 0.0  # share of ITM negatives drawn uniformly instead of by similarity
    label_smoothing: float = 0.1
    prompt: str = "a picture of "
    vision_ln_eps: float = 1e-6
    tie_lm_head: bool = True
    vocab_size: int = VOCAB_SIZE
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    inference_only: bool = False  # no momentum encoders or queues (a BLIP_ITM-style filter): cannot train
    num_classes: int = 2  # a classifier head's classes (NLVR: true/false, or 3 in its pre-training)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BlipConfig":
        d = dict(d)
        d["vision"], d["text"] = VisionArch(**d["vision"]), TextArch(**d["text"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    @property
    def has_encoder(self) -> bool:
        """The text encoder with ITC and ITM (retrieval, filtering)."""
        return self.task in ("pretrain", "filter")

    @property
    def has_decoder(self) -> bool:
        """The image-grounded decoder (captioning)."""
        return self.task in ("pretrain", "captioner")


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (no gradient); identity on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(_all_gather_list(x))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x):
        return torch.cat(_all_gather_list(x))

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def _all_gather_list(x: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return out


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class Blip(nn.Module):
    """The MED model of pre-training, the captioner or the filter; see the module docstring."""

    TASKS: ClassVar[tuple[str, ...]] = ("pretrain", "captioner", "filter")  # the config tasks this class builds
    # the tasks a model of this class may be fine-tuned from (besides its own); None: any
    STARTS_FROM: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, cfg: BlipConfig):
        super().__init__()
        if cfg.task not in type(self).TASKS:
            raise ValueError(f"a {type(self).__name__} builds tasks {type(self).TASKS}, got {cfg.task!r}")
        self.cfg = cfg
        width = cfg.vision.width
        tcfg = text_config(cfg.text, width, cfg.label_smoothing, cfg.tie_lm_head, cfg.vocab_size)
        self.visual_encoder = create_vit(cfg.vision, cfg.image_size, cfg.vision_ln_eps)
        if cfg.has_encoder:
            self.text_encoder = build_text_encoder(tcfg)
            self.vision_proj = nn.Linear(width, cfg.embed_dim)
            self.text_proj = nn.Linear(cfg.text.hidden, cfg.embed_dim)
            self.itm_head = nn.Linear(cfg.text.hidden, 2)
            # shape (1,), not a 0-dim scalar as in the release: DeepSpeed broadcasts parameters as bytes
            self.temp = nn.Parameter(torch.full((1,), cfg.temp))
        if cfg.has_encoder and not cfg.inference_only:
            # momentum encoders: EMA copies, excluded from the optimizer (requires_grad=False)
            self.visual_encoder_m = create_vit(cfg.vision, cfg.image_size, cfg.vision_ln_eps)
            self.vision_proj_m = nn.Linear(width, cfg.embed_dim)
            self.text_encoder_m = build_text_encoder(tcfg)
            self.text_proj_m = nn.Linear(cfg.text.hidden, cfg.embed_dim)
            self.copy_params()
            self.register_buffer("image_queue", F.normalize(torch.randn(cfg.embed_dim, cfg.queue_size), dim=0))
            self.register_buffer("text_queue", F.normalize(torch.randn(cfg.embed_dim, cfg.queue_size), dim=0))
            # which image each queued feature came from (-100: nothing yet); retrieval uses it to
            # treat every caption of the same image as a positive
            self.register_buffer("idx_queue", torch.full((1, cfg.queue_size), -100, dtype=torch.long))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if cfg.has_decoder:
            self.text_decoder = build_text_decoder(tcfg)
            if cfg.has_encoder:
                share_all_but_self_attention(self.text_encoder, self.text_decoder)

    @classmethod
    def adapt_state(cls, state: dict[str, torch.Tensor], source_task: str) -> dict[str, torch.Tensor]:
        """A source model's weights renamed or reshaped for this class (fine-tuning's start); as they are here."""
        return state

    @classmethod
    def fresh_weights(cls, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The weights of `own` that start fresh rather than from the source `state`: none here."""
        return ()

    # ------------------------------------------------------------------ momentum and queues

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs; empty for the captioner."""
        if not self.cfg.has_encoder or self.cfg.inference_only:
            return []
        return [(self.visual_encoder, self.visual_encoder_m), (self.vision_proj, self.vision_proj_m),
                (self.text_encoder, self.text_encoder_m), (self.text_proj, self.text_proj_m)]

    @torch.no_grad()
    def copy_params(self) -> None:
        """Start the momentum encoders as exact copies of the online ones."""
        for online, momentum in self.momentum_pairs():
            for p, pm in zip(online.parameters(), momentum.parameters()):
                pm.copy_(p.detach().to(pm.dtype))
                pm.requires_grad_(False)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step, pm = m*pm + (1-m)*p; call once per optimizer step (not per micro-batch).

        The EMA is done in the momentum weights' own dtype: keep them fp32 under bf16 training, or
        0.5% updates vanish in bf16 rounding.
        """
        m = self.cfg.momentum
        for online, momentum in self.momentum_pairs():
            for p, pm in zip(online.parameters(), momentum.parameters()):
                pm.mul_(m).add_(p.detach().to(pm.dtype), alpha=1 - m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor,
                             idx: torch.Tensor | None) -> None:
        image_feat, text_feat = _gather(image_feat), _gather(text_feat)
        n = image_feat.shape[0]
        ptr = int(self.queue_ptr)
        if self.cfg.queue_size % n:
            raise ValueError(f"queue_size {self.cfg.queue_size} must be a multiple of the global batch {n}")
        self.image_queue[:, ptr:ptr + n] = image_feat.T.to(self.image_queue.dtype)
        self.text_queue[:, ptr:ptr + n] = text_feat.T.to(self.text_queue.dtype)
        if idx is not None:
            self.idx_queue[:, ptr:ptr + n] = _gather(idx).view(1, -1)
        self.queue_ptr[0] = (ptr + n) % self.cfg.queue_size

    # ------------------------------------------------------------------ features

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """All ViT tokens (B, 1 + patches, width); token 0 is the global [CLS] feature."""
        return self.visual_encoder.forward_features(images)

    def image_feat(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Normalised ITC image feature (B, embed_dim)."""
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_feat(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised ITC text feature (B, embed_dim) from the unimodal encoder's [CLS]."""
        hidden = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def itm_logits(self, image_embeds: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                   first_token: ITMToken = "enc") -> torch.Tensor:
        """(B, 2) matched/unmatched logits: [ENC] (or [CLS]) + text, cross-attending to the image tokens."""
        ids = ids.clone()
        ids[:, 0] = _FIRST_TOKEN[first_token]
        hidden = self.text_encoder(ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                                   encoder_attention_mask=ones_mask(image_embeds)).last_hidden_state
        return self.itm_head(hidden[:, 0])

    @torch.no_grad()
    def itm_score(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                  first_token: ITMToken = "enc") -> torch.Tensor:
        """Probability that each (image, text) pair matches: softmax of the ITM logits, class 1."""
        return self.itm_logits(self.image_embeds(images), ids, mask, first_token).softmax(-1)[:, 1]

    @torch.no_grad()
    def itc_similarity(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(n_images, n_texts) cosine similarities of the ITC features (no temperature)."""
        return self.image_feat(self.image_embeds(images)) @ self.text_feat(ids, mask).T

    # ------------------------------------------------------------------ losses

    def temperature(self) -> torch.Tensor:
        """The ITC temperature in [temp_min, 0.5]. Clamped where it is used, not in place: under ZeRO the
        optimizer's master copy would undo an in-place clamp at the next step."""
        return self.temp.clamp(self.cfg.temp_min, 0.5)

    def _itc(self, image_embeds, images, ids, mask, alpha, idx):
        """Contrastive loss against momentum features + queue, with momentum-distilled soft targets."""
        image_feat, text_feat = self.image_feat(image_embeds), self.text_feat(ids, mask)
        temp = self.temperature()
        with torch.no_grad():
            # the momentum weights stay fp32 under bf16 training (an autocast still computes in bf16)
            dtype = self.vision_proj_m.weight.dtype
            image_embeds_m = self.visual_encoder_m.forward_features(images.to(dtype))
            image_feat_m = F.normalize(self.vision_proj_m(image_embeds_m[:, 0]), dim=-1)
            hidden_m = self.text_encoder_m(ids, attention_mask=mask).last_hidden_state
            text_feat_m = F.normalize(self.text_proj_m(hidden_m[:, 0]), dim=-1)
            image_feat_all = torch.cat([image_feat_m.T, self.image_queue.clone()], dim=1)
            text_feat_all = torch.cat([text_feat_m.T, self.text_queue.clone()], dim=1)
            if idx is None:  # pre-training: only the pair itself is positive
                targets = torch.zeros(len(ids), image_feat_all.shape[1], device=ids.device)
                targets.fill_diagonal_(1)
            else:  # retrieval: every text of the same image is positive, queued ones included
                idx_all = torch.cat([idx.view(1, -1), self.idx_queue.clone()], dim=1)
                positives = (idx.view(-1, 1) == idx_all).float()
                targets = positives / positives.sum(1, keepdim=True)
            i2t_targets = alpha * F.softmax(image_feat_m @ text_feat_all / temp, dim=1) + (1 - alpha) * targets
            t2i_targets = alpha * F.softmax(text_feat_m @ image_feat_all / temp, dim=1) + (1 - alpha) * targets
        sim_i2t = image_feat @ text_feat_all.to(image_feat.dtype) / temp
        sim_t2i = text_feat @ image_feat_all.to(text_feat.dtype) / temp
        loss_i2t = -(F.log_softmax(sim_i2t.float(), dim=1) * i2t_targets).sum(1).mean()
        loss_t2i = -(F.log_softmax(sim_t2i.float(), dim=1) * t2i_targets).sum(1).mean()
        self._dequeue_and_enqueue(image_feat_m, text_feat_m, idx)
        return (loss_i2t + loss_t2i) / 2, (image_feat, text_feat, image_feat_m, text_feat_m)

    @torch.no_grad()
    def _draw_negatives(self, feats, idx, negatives_all_ranks: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative image per text, negative text per image): indices into the batch, or into the global
        batch with `negatives_all_ranks`, drawn by the task's release rule (module docstring)."""
        image_feat, text_feat, image_feat_m, text_feat_m = (f.detach() for f in feats)
        n, device = len(image_feat), image_feat.device
        if self.cfg.task == "pretrain":  # with image ids (a captioner-filter fine-tuned as one): no caption of its own image
            own = torch.eye(n, dtype=torch.bool, device=device) if idx is None else idx.view(-1, 1) == idx.view(1, -1)
            sim_t2i, sim_i2t, floor = text_feat @ image_feat_m.T, image_feat @ text_feat_m.T, 1e-4
        else:
            if negatives_all_ranks:
                image_pool, text_pool = _gather(image_feat), _gather(text_feat)
            else:
                image_pool, text_pool = image_feat, text_feat
            if idx is None:  # no image ids: only the pair itself is positive
                offset = dist.get_rank() * n if negatives_all_ranks and dist.is_initialized() else 0
                own = torch.zeros(n, len(image_pool), dtype=torch.bool, device=device)
                own[torch.arange(n), torch.arange(n) + offset] = True
            else:
                pool_idx = _gather(idx) if negatives_all_ranks else idx
                own = idx.view(-1, 1) == pool_idx.view(1, -1)
            sim_t2i, sim_i2t, floor = text_feat @ image_pool.T, image_feat @ text_pool.T, 0.0
        if own.all(1).any():
            raise ValueError("ITM needs a negative for every pair, but a batch holds only captions of one image: "
                             "shuffle the training data across images (or raise the batch size)")
        temp, r = self.temperature().detach(), self.cfg.itm_random_negatives
        w_t2i = negative_weights(sim_t2i, own, temp, r, floor)
        w_i2t = negative_weights(sim_i2t, own, temp, r, floor)
        return torch.multinomial(w_t2i.float(), 1).squeeze(1), torch.multinomial(w_i2t.float(), 1).squeeze(1)

    def _itm(self, image_embeds, ids, mask, feats, idx, negatives_all_ranks, negatives):
        """Positive pairs vs one negative text per image and one negative image per text: drawn, or given
        as (image per text, text per image) indices (into the global batch with `negatives_all_ranks`)."""
        n = len(ids)
        enc_ids = ids.clone()
        enc_ids[:, 0] = ENC_ID
        if negatives_all_ranks:  # the pool is the global batch (retrieval fine-tuning on COCO)
            pool_embeds, pool_ids, pool_mask = _gather_with_grad(image_embeds), _gather(enc_ids), _gather(mask)
        else:
            pool_embeds, pool_ids, pool_mask = image_embeds, enc_ids, mask
        neg_image, neg_text = negatives if negatives is not None else self._draw_negatives(feats, idx, negatives_all_ranks)
        if neg_image.shape != (n,) or neg_text.shape != (n,):
            raise ValueError(f"negatives must be two index tensors of shape ({n},), one entry per pair of the batch")
        all_ids = torch.cat([enc_ids, enc_ids, pool_ids[neg_text]])
        all_mask = torch.cat([mask, mask, pool_mask[neg_text]])
        # index_select, not pool_embeds[neg_image]: the backward of advanced indexing accumulates repeated
        # indices in a thread-dependent order on a CPU, so two-thread runs were not bit-identical
        all_images = torch.cat([image_embeds, torch.index_select(pool_embeds, 0, neg_image), image_embeds])
        hidden = self.text_encoder(all_ids, attention_mask=all_mask, encoder_hidden_states=all_images,
                                   encoder_attention_mask=ones_mask(all_images)).last_hidden_state
        logits = self.itm_head(hidden[:, 0])
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(ids.device)
        return F.cross_entropy(logits.float(), labels)

    def _lm(self, image_embeds, ids, mask, prompt_len: int = 0):
        """Caption cross-entropy (label smoothing from config); pad and prompt tokens not predicted.

        The vocabulary projection runs only where a token is predicted: with short captions padded
        to the batch's longest, that skips a good share of the largest matmul of a small model.
        """
        dec_ids = ids.clone()
        dec_ids[:, 0] = DEC_ID
        targets = dec_ids.masked_fill(dec_ids == PAD_ID, -100)
        targets[:, :prompt_len] = -100
        hidden = self.text_decoder.bert(dec_ids, attention_mask=mask, encoder_hidden_states=image_embeds,
                                        encoder_attention_mask=ones_mask(image_embeds), is_decoder=True).last_hidden_state
        labels = targets[:, 1:]  # position t predicts token t+1
        keep = labels != -100
        logits = self.text_decoder.cls(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), labels[keep], label_smoothing=self.cfg.label_smoothing)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, alpha: float = 0.0,
                idx: torch.Tensor | None = None, prompt_len: int = 0, negatives_all_ranks: bool = False,
                negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
                lm_text: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The task's losses for a batch: {'itc', 'itm', 'lm'} as the task has them.

        `negatives` pins ITM's negatives: (image index per text, text index per image) into the batch.
        `lm_text`: the decoder's own (ids, mask) when they differ from the encoder's: a captioner-filter
        fine-tuned as one model reads its captions with the captioner's prompt, its encoder without.
        """
        if self.cfg.inference_only:
            raise ValueError("this filter was loaded for inference only (a BLIP_ITM-style checkpoint: no momentum "
                             "encoders, no queues), so it cannot be trained; fine-tune from a checkpoint that has "
                             "them (a pre-trained or retrieval model)")
        if len(ids) < 2 and self.cfg.has_encoder:
            raise ValueError("ITC/ITM need at least 2 pairs per batch (hard negatives come from the batch)")
        if negatives_all_ranks and self.cfg.task != "filter":
            raise ValueError("negatives_all_ranks is the retrieval fine-tuning rule; pre-training draws its "
                             "negatives within each rank's batch, as the release does")
        image_embeds = self.image_embeds(images)
        losses = {}
        if self.cfg.has_encoder:
            losses["itc"], feats = self._itc(image_embeds, images, ids, mask, alpha, idx)
            losses["itm"] = self._itm(image_embeds, ids, mask, feats, idx, negatives_all_ranks, negatives)
        if self.cfg.has_decoder:
            losses["lm"] = self._lm(image_embeds, *(lm_text or (ids, mask)), prompt_len)
        return losses

    # ------------------------------------------------------------------ utilities

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in the online ViT and text transformer."""
        set_grad_checkpointing(self.visual_encoder, enable)
        # transformers' BLIP text layers can checkpoint, but its BlipTextModel does not declare it, so
        # the layers are switched directly
        for name in ("text_encoder", "text_decoder"):
            for module in getattr(self, name).modules() if hasattr(self, name) else []:
                if isinstance(module, BlipTextLayer):
                    module.gradient_checkpointing = enable
                    module._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer owns: everything but the momentum encoders, each shared tensor once."""
        return [p for p in self.parameters() if p.requires_grad]


def negative_weights(sim: torch.Tensor, own: torch.Tensor, temp: torch.Tensor, random_share: float,
                     floor: float = 0.0) -> torch.Tensor:
    """Sampling weights of ITM negatives: softmax(sim / temp) + floor, positives excluded (the release's
    hard negatives); a share `random_share` of the draws uniform over the non-positives instead."""
    w = (F.softmax(sim / temp, dim=1) + floor).masked_fill(own, 0)
    # with no floor, a row whose positives take all the softmax mass underflows to zeros, which
    # multinomial refuses: such a row draws uniformly among its negatives
    uniform = (~own).float()
    w = torch.where(w.sum(1, keepdim=True) > 0, w, uniform)
    if random_share > 0:
        w = (1 - random_share) * w / w.sum(1, keepdim=True) + random_share * uniform / uniform.sum(1, keepdim=True)
    return w


def ones_mask(embeds: torch.Tensor) -> torch.Tensor:
    """An attention mask over every token of (B, L, width) states: (B, L) ones."""
    return torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)


# config task -> the class that builds it; a task's folder adds its own with `register_model`
MODEL_CLASSES: dict[str, type[Blip]] = {task: Blip for task in Blip.TASKS}


def register_model(cls: type[Blip]) -> type[Blip]:
    """Class decorator: the class builds (and loads) models of each task in its TASKS."""
    for task in cls.TASKS:
        MODEL_CLASSES[task] = cls
    return cls


def model_class(task: str) -> type[Blip]:
    """The class that builds a `task` model; an error naming the fix for a task no module has registered."""
    if task not in MODEL_CLASSES:
        raise ValueError(f"no model class for task {task!r} (known: {sorted(MODEL_CLASSES)}): its task's code registers it "
                         "(blip.tasks.registry.hooks(task), or import_models() for every task)")
    return MODEL_CLASSES[task]


def build_model(cfg: BlipConfig) -> Blip:
    """A fresh model of `cfg.task`, of its registered class."""
    return model_class(cfg.task)(cfg)
