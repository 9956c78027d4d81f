"""Typed views of params.yaml: one frozen dataclass per section, built strictly.

Strict means a missing or unknown key raises with its dotted path, so a typo in params.yaml or in a
`dvc exp run -S` override fails loudly instead of silently running the default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


@dataclasses.dataclass(frozen=True)
class DataConfig:
    human_karpathy: str | None
    human_images: str | None
    human_name: str
    web_shards: str | list[str] | None


@dataclasses.dataclass(frozen=True)
class HumanSplits:
    train: int
    val: int
    test: int


@dataclasses.dataclass(frozen=True)
class NoiseMix:
    mismatched: float
    partial: float
    uninformative: float


@dataclasses.dataclass(frozen=True)
class WebWorld:
    images: int
    shard_size: int
    noise_fraction: float
    noise_mix: NoiseMix


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    image_size: int
    jpeg_quality: int
    max_objects: int
    human: HumanSplits
    web: WebWorld


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    shard_size: int
    max_words: int
    max_caption_chars: int
    min_side: int
    max_side: int
    max_aspect: float
    max_pixels: int
    jpeg_quality: int
    max_skip_fraction: float
    max_member_bytes: int


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    batch_size: int
    num_workers: int
    shuffle_buffer: int
    shuffle_initial: int
    pretrain_crop_scale: tuple[float, float]
    finetune_crop_scale: tuple[float, float]
    randaugment_ops: int
    randaugment_magnitude: int
    hflip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    vocab: str | None


@dataclasses.dataclass(frozen=True)
class VisionArch:
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    drop_path: float


@dataclasses.dataclass(frozen=True)
class TextArch:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    dropout: float
    positions: int = 512  # rows of the position table: the longest text the model can read


@dataclasses.dataclass(frozen=True)
class ModelArch:
    vision: VisionArch
    text: TextArch
    embed_dim: int
    queue_size: int
    temp_min: float          # floor of the learnable ITC temperature
    itm_random_negatives: float  # share of ITM negatives drawn uniformly, not by ITC similarity
    vision_init: str | None  # ImageNet timm weights (file / HF cache entry) for the ViT; None = random
    text_init: str | None    # BERT weights (file / folder / package / HF cache entry); None = random


@dataclasses.dataclass(frozen=True)
class TextLengths:
    pretrain: int
    retrieval: int
    caption: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    momentum: float
    temp: float
    alpha: float
    label_smoothing: float
    prompt: str
    text_len: TextLengths


@dataclasses.dataclass(frozen=True)
class StageConfig:
    image_size: int
    batch_size: int          # per process (micro-batch)
    grad_accum: int
    epochs: int
    steps_per_epoch: int | None  # None: one pass over the data per epoch
    lr: float
    min_lr: float
    warmup_steps: int
    schedule: str            # "step" (lr * lr_decay**epoch) or "cosine" (to min_lr over all steps)
    lr_decay: float
    weight_decay: float
    alpha_ramp_epochs: float  # alpha ramps linearly from 0 over this many epochs


@dataclasses.dataclass(frozen=True)
class FilterStageConfig(StageConfig):
    negatives_all_ranks: bool  # ITM hard negatives from the global batch
    k_test: int                # retrieval: ITC top-k candidates re-ranked by ITM


@dataclasses.dataclass(frozen=True)
class Preset:
    model: ModelArch
    pretrain: StageConfig
    finetune_captioner: StageConfig
    finetune_filter: FilterStageConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    procs: int
    zero_stage: int
    bf16: bool
    grad_clip: float
    grad_checkpointing: bool
    num_workers: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    uri: str
    experiment: str


@dataclasses.dataclass(frozen=True)
class CapfiltConfig:
    method: str                   # nucleus | beam: how the captioner writes synthetic captions
    captions_per_image: int       # synthetic captions per web image (the paper: 1)
    top_p: float                  # nucleus sampling
    max_length: int               # generation length, prompt tokens included
    min_length: int
    batch_size: int               # images per generation / scoring batch
    procs: int                    # local worker processes (the laptop's launcher); they claim shards
    lease_seconds: float          # a claimed shard's lease; a rank silent this long loses it
    poll_seconds: float           # how often a rank with nothing to claim looks again
    captioners: list[str]         # extra captioner models whose captions are pooled (ensemble)
    filters: list[str]            # extra filter models, each scoring every candidate text


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    threshold: float                  # keep a text whose score reaches this (when calibrate is false)
    calibrate: bool                   # the threshold: the lowest one reaching target_precision on human val pairs
    target_precision: float
    filter_combine: str               # mean (of the filters' scores) | vote (majority of filters at the threshold)
    itm_weight: float                 # a filter's score: itm_weight x ITM probability + itc_weight x ITC similarity
    itc_weight: float
    top_percent: float | None         # keep only the best this % of all candidate texts (None: no such cut)
    max_texts_per_image: int | None   # the best this many texts of an image (None: no cap)
    max_web: int | None               # the best this many web texts over the whole dataset (None: no cap)
    max_synthetic: int | None
    web_share: float | None           # web texts' share of the kept web + synthetic texts (None: as selected)
    examples: int                     # web images shown in the examples sheet


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    device: str          # auto | cpu | cuda | cuda:N (auto: the rank's local GPU when CUDA is present)
    precision: str       # auto (bf16 autocast on a GPU, fp32 on a CPU) | bf16 | fp32
    loader_workers: int  # CPU processes decoding and resizing images while the models run


@dataclasses.dataclass(frozen=True)
class RegistryMetrics:
    captioner: str
    filter: str
    pretrained: str


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    prefix: str                # registered names: <prefix>-captioner, -filter, -pretrained
    metric: RegistryMetrics    # the evaluation metric (higher is better) that decides champion


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    init_from: str  # "" = from scratch (the paper); a model folder = continue it (ablation)


@dataclasses.dataclass(frozen=True)
class ContractsConfig:
    min_words: int                          # caption word-count bounds (after clean-up)
    max_words: int
    max_word_chars: int                     # the longest word a caption may hold (catches one enormous word)
    image_sample: int                       # images decoded per dataset (the rest: metadata only)
    synthetic_share: tuple[float, float]    # bootstrapped: share of rows that are synthetic captions
    web_removed_share: tuple[float, float]  # share of web texts the filter removed
    noise_ratio: tuple[float, float]        # share of synthetic captions the filter removed


@dataclasses.dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    world: WorldConfig
    ingest: IngestConfig
    loader: LoaderConfig
    tokenizer: TokenizerConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig
    inference: InferenceConfig
    capfilt: CapfiltConfig
    select: SelectConfig
    contracts: ContractsConfig
    retrain: RetrainConfig
    rounds: int
    registry: RegistryConfig
    preset: str
    presets: dict[str, Preset]

    @property
    def active(self) -> Preset:
        """The chosen preset's architecture and stage hyper-parameters."""
        if self.preset not in self.presets:
            raise ValueError(f"preset '{self.preset}' is not one of {sorted(self.presets)}")
        return self.presets[self.preset]


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and coercing scalars by annotation."""
    if not isinstance(data, dict):
        raise ValueError(f"params: '{path or '<root>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [n for n in names if n not in data]
    if unknown or missing:
        where = path or "<root>"
        raise ValueError(f"params: section '{where}': unknown keys {unknown}, missing keys {missing}")
    return cls(**{n: _coerce(hints[n], data[n], f"{path}.{n}" if path else n) for n in names})


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if typing.get_origin(a) is list and isinstance(value, list):
                return [_coerce(typing.get_args(a)[0], v, path) for v in value]
        return _coerce(args[0], value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"params: '{path}' must be a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"params: '{path}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, path) for a, v in zip(args, value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"params: '{path}' must be true or false, got {value!r}")
        return value
    if tp in (int, float, str):
        if isinstance(value, bool) or (tp is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"params: '{path}' must be {tp.__name__}, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"params: '{path}' must be {tp.__name__}, got {value!r}") from None
    return value


def params_from_dict(data: dict) -> Params:
    """Build typed params from an already-parsed params mapping."""
    return _build(Params, data, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml into typed, validated config objects."""
    with open(path, encoding="utf-8") as f:
        return params_from_dict(yaml.safe_load(f))


def to_dict(obj: Any) -> dict:
    """Plain-dict view of a config object (for manifests and tracking)."""
    return dataclasses.asdict(obj)
