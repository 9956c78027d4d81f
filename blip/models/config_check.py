"""Checking a model folder before building its model: config.json against types, bounds and the weights.

A model is allocated from its config, so a config that is trusted blindly can ask for terabytes (a hidden
size of 10^9), divide by zero (0 heads) or fail deep inside torch (a size given as a string). Here
config.json is validated by pydantic in strict mode (every error names its dotted key), then checked
against the safetensors header (names and shapes, read without loading a tensor): every size the
weights show must be what the config says. Only then is the model built, and its size is bounded by
the file's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open

from blip.config import validation_problems
from blip.models.blip import MODEL_CLASSES, BlipConfig
from blip.models.weights import CheckpointError

_CONFIG = TypeAdapter(BlipConfig)


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape from a safetensors file's header (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it may be truncated or empty: "
                               "copy or download it again") from e


def parse_config(path: Path, text: str) -> BlipConfig:
    """config.json as a BlipConfig, types checked strictly (a size given as "7" is an error)."""
    try:
        return _CONFIG.validate_json(text, strict=True)
    except ValidationError as e:
        raise CheckpointError(f"{path}: " + "; ".join(validation_problems(e)[:10])) from e


def _bounds(cfg: BlipConfig) -> list[str]:
    """What no usable model has: sizes that are not positive, rates out of range (the vision and text
    sections check their own ranges when parsed)."""
    positive = {"image_size": cfg.image_size, "embed_dim": cfg.embed_dim, "queue_size": cfg.queue_size,
                "vocab_size": cfg.vocab_size, "temp": cfg.temp, "temp_min": cfg.temp_min}
    errors = [f"{k} must be positive, got {val}" for k, val in positive.items() if not val > 0]
    if cfg.task not in MODEL_CLASSES:
        errors.append(f"task {cfg.task!r} is not a known model's (known: {', '.join(sorted(MODEL_CLASSES))}; a "
                      "transfer task's model is known once its code is imported: blip.tasks.registry.hooks(task))")
    for key, rate in (("momentum", cfg.momentum), ("itm_random_negatives", cfg.itm_random_negatives),
                      ("label_smoothing", cfg.label_smoothing)):
        if not 0 <= rate <= 1:
            errors.append(f"{key} must be in [0, 1], got {rate}")
    return errors


def layer_count(keys: Iterable[str], prefix: str, source: str) -> int:
    """How many blocks under `prefix` (e.g. 'visual_encoder.blocks.'); none, or a gap in their numbers, is an
    error."""
    found = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    if not found:
        raise CheckpointError(f"{source}: no '{prefix}*' weights; is this a BLIP checkpoint?")
    if found != set(range(max(found) + 1)):
        raise CheckpointError(f"{source}: layers {sorted(set(range(max(found) + 1)) - found)} of '{prefix}*' are missing")
    return max(found) + 1


def _against_weights(cfg: BlipConfig, shapes: dict[str, tuple[int, ...]], source: str) -> list[str]:
    """Each size the weights show, compared with the config's (position tables may be resampled: skipped)."""
    v, t = cfg.vision, cfg.text
    text = "text_decoder.bert." if cfg.task == "captioner" else "text_encoder."
    expected = {"visual_encoder.cls_token": (1, 1, v.width),
                "visual_encoder.patch_embed.proj.weight": (v.width, 3, v.patch_size, v.patch_size),
                "visual_encoder.blocks.0.mlp.fc1.weight": (int(v.width * v.mlp_ratio), v.width),
                text + "embeddings.word_embeddings.weight": (cfg.vocab_size, t.hidden),
                text + "embeddings.position_embeddings.weight": (t.positions, t.hidden),
                text + "encoder.layer.0.intermediate.dense.weight": (t.intermediate, t.hidden)}
    if cfg.has_encoder:
        expected["vision_proj.weight"] = (cfg.embed_dim, v.width)
        if not cfg.inference_only:
            expected["image_queue"] = (cfg.embed_dim, cfg.queue_size)
    errors = [f"{key}: weights {shapes.get(key)}, config says {shape}" for key, shape in expected.items()
              if shapes.get(key) != shape]
    for key, prefix, n in (("vision.depth", "visual_encoder.blocks.", v.depth),
                           ("text.layers", text + "encoder.layer.", t.layers)):
        found = layer_count(shapes, prefix, source)
        if found != n:
            errors.append(f"{key} is {n}, the weights have {found} such layers")
    return errors


def checked_config(folder: Path, text: str, shapes: dict[str, tuple[int, ...]], overrides: dict) -> BlipConfig:
    """The folder's BlipConfig (with overrides, e.g. image_size), refused with every problem listed unless it
    fits its weights."""
    cfg = dataclasses.replace(parse_config(folder / "config.json", text), **overrides)
    errors = _bounds(cfg) or _against_weights(cfg, shapes, str(folder))
    if errors:
        raise CheckpointError(f"{folder}/config.json does not describe usable weights:\n  " + "\n  ".join(errors))
    return cfg
