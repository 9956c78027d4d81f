"""Typed views of params.yaml: the scalar types, the section decorator, and the sections the lower layers read.

Each section is a frozen pydantic dataclass with ranges, declared by the module that reads it: the sections
here are read by the base, the data readers, the models and the engine; the others sit beside their readers
(the tasks' folders, CapFilt, selection, the gates, the contracts, the registry, the rounds, the built-in
world), and blip.params puts the whole file together and loads it.

Strict: a missing or unknown key, a value of the wrong type ("7" for a number) or out of its range (a
negative batch size, a NaN learning rate, a threshold no score can reach) is refused with its dotted
key, so a typo in params.yaml or in a `dvc exp run -S` override fails before any work instead of
silently running something else.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

# unknown keys are errors; NaN and infinity are never a setting
section = dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))

# every scalar is strict: no "7" -> 7 or 1 -> true (an int is still a valid float)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]
JpegQuality = Annotated[int, Strict(), Field(ge=1, le=100)]
Name = Annotated[str, Strict(), Field(min_length=1)]
Range = tuple[Share, Share]  # YAML lists become tuples


def ordered(low: float, high: float, what: str) -> None:
    if low > high:
        raise ValueError(f"{what}: {low} is above {high}")


def _shard_sources(value: Any) -> Any:
    if value is None or isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise ValueError(f"a folder, a glob or a list of them, or null; got {value!r}")


@section
class DataConfig:
    human_karpathy: Str | None
    human_images: Str | None
    human_name: Name
    web_shards: Annotated[Any, AfterValidator(_shard_sources)]  # a folder, a glob or a list of them
    # each task's real-format files (data.<task>) are declared by its folder: blip.params adds them


@section
class IngestConfig:
    shard_size: PosInt
    max_words: PosInt
    max_caption_chars: PosInt
    min_side: PosInt
    max_side: PosInt
    max_aspect: Annotated[float, Strict(), Field(ge=1)]
    max_pixels: PosInt
    jpeg_quality: JpegQuality
    max_skip_fraction: Share
    max_member_bytes: PosInt

    @model_validator(mode="after")
    def _sides(self) -> IngestConfig:
        ordered(self.min_side, self.max_side, "min_side, max_side")
        return self


@section
class LoaderConfig:
    shuffle_buffer: PosInt
    shuffle_initial: NonNegInt
    pretrain_crop_scale: Range
    finetune_crop_scale: Range
    randaugment_ops: NonNegInt
    randaugment_magnitude: NonNegInt
    hflip: Bool
    mean: tuple[Float, Float, Float]
    std: tuple[PosFloat, PosFloat, PosFloat]

    @model_validator(mode="after")
    def _crops(self) -> LoaderConfig:
        for name in ("pretrain_crop_scale", "finetune_crop_scale"):
            low, high = getattr(self, name)
            if low <= 0:
                raise ValueError(f"{name}: a crop of {low} of the image is empty")
            ordered(low, high, name)
        return self


@section
class TokenizerConfig:
    vocab: Str | None


def _heads_divide(width: int, heads: int) -> None:
    if width % heads:
        raise ValueError(f"{heads} heads do not divide the width {width}")


@section
class VisionArch:
    patch_size: PosInt
    width: PosInt
    depth: PosInt
    heads: PosInt
    mlp_ratio: PosFloat
    drop_path: Share

    @model_validator(mode="after")
    def _heads(self) -> VisionArch:
        _heads_divide(self.width, self.heads)
        return self


@section
class TextArch:
    hidden: PosInt
    layers: PosInt
    heads: PosInt
    intermediate: PosInt
    dropout: Share
    positions: PosInt = 512  # rows of the position table: the longest text the model can read

    @model_validator(mode="after")
    def _heads(self) -> TextArch:
        _heads_divide(self.hidden, self.heads)
        return self


@section
class ModelArch:
    vision: VisionArch
    text: TextArch
    embed_dim: PosInt
    queue_size: PosInt
    temp_min: PosFloat           # floor of the learnable ITC temperature
    itm_random_negatives: Share  # share of ITM negatives drawn uniformly, not by ITC similarity
    vision_init: Str | None      # ImageNet timm weights (file / HF cache entry) for the ViT; None = random
    text_init: Str | None        # BERT weights (file / folder / package / HF cache entry); None = random


@section
class TextLengths:
    pretrain: PosInt
    retrieval: PosInt
    caption: PosInt
    question: PosInt
    dialog: PosInt  # visual dialog: [ENC] answer [SEP] question [SEP] history, the oldest rounds cut first


@section
class ModelConfig:
    momentum: Share
    temp: PosFloat
    alpha: Share
    label_smoothing: Annotated[float, Strict(), Field(ge=0, lt=1)]
    prompt: Str
    text_len: TextLengths


@section
class StageConfig:
    image_size: PosInt
    batch_size: PosInt       # per process (micro-batch)
    grad_accum: PosInt
    epochs: PosInt
    steps_per_epoch: PosInt | None  # None: one pass over the data per epoch
    lr: PosFloat
    min_lr: NonNegFloat
    warmup_steps: NonNegInt
    schedule: Literal["step", "cosine"]  # step: lr * lr_decay**epoch; cosine: to min_lr over all epochs
    lr_decay: Annotated[float, Strict(), Field(gt=0, le=1)]
    weight_decay: NonNegFloat
    alpha_ramp_epochs: NonNegFloat  # alpha ramps linearly from 0 over this many epochs

    @model_validator(mode="after")
    def _lrs(self) -> StageConfig:
        ordered(self.min_lr, self.lr, "min_lr, lr")
        return self


def stage_sections(obj: Any, prefix: str = "") -> dict[str, StageConfig]:
    """{dotted name: stage section} of a preset (or a stage), the nested ones too (finetune_nlvr.pretrain)."""
    found = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, StageConfig):
            found[prefix + field.name] = value
            found.update(stage_sections(value, f"{prefix}{field.name}."))
    return found


@section
class Preset:
    """A preset's architecture; each task's stage section (its key and class in the task's folder) is added by
    blip.params, which builds the whole file's schema."""

    model: ModelArch

    @model_validator(mode="after")
    def _patches_tile(self) -> Preset:
        patch = self.model.vision.patch_size
        for name, stage in stage_sections(self).items():
            if stage.image_size % patch:
                raise ValueError(f"{name}.image_size {stage.image_size} is not a multiple of the patch size {patch}")
        return self


@section
class TrainConfig:
    procs: PosInt
    # ZeRO-3 would partition the momentum encoders the EMA reads every step; stage 2 already shards
    # optimizer states and gradients, enough for ViT-B/L
    zero_stage: Literal[0, 1, 2]
    bf16: Bool
    grad_clip: NonNegFloat
    grad_checkpointing: Bool
    num_workers: NonNegInt
    log_every: PosInt
    checkpoint_every: PosInt
    keep_checkpoints: PosInt


@section
class TrackingConfig:
    uri: Name
    experiment: Name


@section
class InferenceConfig:
    # auto: the rank's local GPU when CUDA is present, else the CPU
    device: Annotated[str, Strict(), Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
    precision: Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on a GPU, fp32 on a CPU
    loader_workers: NonNegInt  # CPU processes decoding and resizing images while the models run


@section
class Params:
    """The sections the base and the library's lower layers read. The whole file's schema (blip.params) adds
    the sections declared higher up, each by the module that reads it, and checks the file as one."""

    seed: NonNegInt
    data: DataConfig
    ingest: IngestConfig
    loader: LoaderConfig
    tokenizer: TokenizerConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig
    inference: InferenceConfig
    preset: Name
    presets: dict[str, Preset]

    @model_validator(mode="after")
    def _preset_exists(self) -> Params:
        if self.preset not in self.presets:
            raise ValueError(f"preset '{self.preset}' is not one of {sorted(self.presets)}")
        return self

    @property
    def active(self) -> Preset:
        """The chosen preset's architecture and stage hyper-parameters."""
        return self.presets[self.preset]


def _where(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validation_problems(error: ValidationError) -> list[str]:
    """Each of pydantic's errors as '<dotted key>: <what is wrong>, got <value>'."""
    return [_problem(err) for err in error.errors()]


def _problem(err: dict) -> str:
    if err["type"] == "missing":
        return f"{_where(err['loc'])}: missing"
    if err["type"] == "unexpected_keyword_argument":
        return f"{_where(err['loc'])}: unknown key (a typo? the section's keys are in params.yaml)"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":  # a check across keys: its message names the values
        return f"{_where(err['loc'])}: {message}"
    if err["type"] == "float_type" and isinstance(err["input"], str) and _number(err["input"]):
        message += " (YAML reads an exponent without a dot, e.g. 5e-4, as text: write 5.0e-4)"
    return f"{_where(err['loc'])}: {message}, got {err['input']!r}"


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def validate(schema: Any, data: Any, source: str) -> Any:
    """`data` checked against a section's (or the whole file's) class; every problem named by its dotted key."""
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as e:
        problems = validation_problems(e)
        raise ValueError(f"{source}: {len(problems)} invalid value(s):\n  " + "\n  ".join(problems)) from None


def to_dict(obj: Any) -> dict:
    """Plain-dict view of a config object (for manifests and tracking)."""
    return dataclasses.asdict(obj)
