"""Typed views of params.yaml: one frozen pydantic dataclass per section, with ranges.

Strict: a missing or unknown key, a value of the wrong type ("7" for a number) or out of its range (a
negative batch size, a NaN learning rate, a threshold no score can reach) is refused with its dotted
key, so a typo in params.yaml or in a `dvc exp run -S` override fails before any work instead of
silently running something else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
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


def _ordered(low: float, high: float, what: str) -> None:
    if low > high:
        raise ValueError(f"{what}: {low} is above {high}")


def _shard_sources(value: Any) -> Any:
    if value is None or isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise ValueError(f"a folder, a glob or a list of them, or null; got {value!r}")


@section
class VQAData:
    train: Annotated[list[Str], Field(min_length=1)]  # VQA v2 questions + annotations files, or release vqa_*.json
    test: Annotated[list[Str], Field(min_length=1)]   # the evaluation split's files (with annotations, to score)
    images: Str                                       # the root their image paths are relative to


@section
class NLVRData:
    train: Annotated[list[Str], Field(min_length=1)]  # NLVR2's train.json (JSON lines) or the release's nlvr_train.json
    test: Annotated[list[Str], Field(min_length=1)]
    images: Str                                       # the root their image paths are relative to


@section
class DialogData:
    train: Annotated[list[Str], Field(min_length=1)]  # VisDial v1.0: visdial_1.0_train.json
    test: Annotated[list[Str], Field(min_length=1)]   # visdial_1.0_val.json (with answers, to score)
    dense: Str | None      # visdial_1.0_val_dense_annotations.json (NDCG), or null
    train_images: Str      # found by the id at the end of their file names, at any depth below
    test_images: Str


@section
class VideoRetrievalData:
    test: Annotated[list[Str], Field(min_length=1)]   # MSRVTT: the release's msrvtt_test.jsonl ({clip_name, caption})
    videos: Str                                       # the folder of the clips (clip_name + .mp4)


@section
class VideoQAData:
    test: Annotated[list[Str], Field(min_length=1)]   # MSRVTT-QA / MSVD-QA: test_qa.json
    videos: Str                                       # the folder of the clips
    names: Str           # a clip's file from its video_id: "video{video_id}.mp4" (MSRVTT), "{name}.avi" (MSVD)
    mapping: Str | None  # MSVD's youtube_mapping.txt ("<name> vid<N>" lines), which gives {name}; else null


@section
class DataConfig:
    human_karpathy: Str | None
    human_images: Str | None
    human_name: Name
    web_shards: Annotated[Any, AfterValidator(_shard_sources)]  # a folder, a glob or a list of them
    vqa: VQAData | None                               # None: the built-in world's questions
    nlvr: NLVRData | None                             # None: the built-in world's statements about pairs
    dialog: DialogData | None                         # None: the built-in world's dialogs
    video_retrieval: VideoRetrievalData | None        # None: the built-in world's captioned clips
    video_qa: VideoQAData | None                      # None: the built-in world's clips with questions


@section
class HumanSplits:
    train: PosInt
    val: PosInt
    test: PosInt


@section
class NoiseMix:
    mismatched: Share
    partial: Share
    uninformative: Share

    @model_validator(mode="after")
    def _sums_to_one(self) -> NoiseMix:
        total = self.mismatched + self.partial + self.uninformative
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the three shares must sum to 1, got {total:g}")
        return self


@section
class WebWorld:
    images: PosInt
    shard_size: PosInt
    noise_fraction: Share
    noise_mix: NoiseMix


@section
class WorldVQA:
    train: PosInt                # images, each with its questions
    test: PosInt
    questions_per_image: PosInt


@section
class WorldNLVR:
    pretrain: PosInt             # image pairs with a caption of the first, the second or neither (3-way)
    train: PosInt                # image pairs, each with one statement, true or false
    test: PosInt


@section
class WorldDialog:
    train: PosInt                # images, each with a caption and a dialog
    test: PosInt
    rounds: PosInt               # questions per dialog (VisDial: 10), each with 100 candidate answers


@section
class WorldVideo:
    retrieval: PosInt            # clips with one caption each (text-to-video retrieval)
    qa: PosInt                   # clips with questions
    questions_per_clip: PosInt
    frames: Annotated[int, Strict(), Field(ge=2)]  # rendered per clip: each object glides one grid cell over them
    fps: PosInt


@section
class WorldConfig:
    image_size: Annotated[int, Strict(), Field(ge=16)]
    jpeg_quality: JpegQuality
    max_objects: Annotated[int, Strict(), Field(ge=1, le=9)]  # one object per cell of a 3x3 grid
    human: HumanSplits
    web: WebWorld
    vqa: WorldVQA
    nlvr: WorldNLVR
    dialog: WorldDialog
    video: WorldVideo


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
        _ordered(self.min_side, self.max_side, "min_side, max_side")
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
            _ordered(low, high, name)
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
        _ordered(self.min_lr, self.lr, "min_lr, lr")
        return self


@section
class FilterStageConfig(StageConfig):
    negatives_all_ranks: Bool  # ITM hard negatives from the global batch
    k_test: PosInt             # retrieval: ITC top-k candidates re-ranked by ITM


@section
class VQAStageConfig(StageConfig):
    answers: PosInt          # the candidate list `rank` answers from: the most frequent training answers
    k_test: PosInt           # rank: candidates with the likeliest first token, then re-scored whole
    inference: Literal["rank", "generate"]


@section
class NLVRStageConfig(StageConfig):
    pretrain: StageConfig    # the extra pre-training step first: which image (or neither) a caption belongs to
    freeze_vision: Bool      # keep the ViT as pre-trained in both steps


@section
class DialogStageConfig(StageConfig):
    negatives: PosInt        # wrong candidates per round, each against the right answer in the ITM loss
    hard_negatives: NonNegInt  # of which at most this many are the batch's answers to questions that start alike
    freeze_vision: Bool      # keep the ViT as pre-trained (only the text side and the caption's mapping learn)

    @model_validator(mode="after")
    def _hard_within(self) -> DialogStageConfig:
        if self.hard_negatives > self.negatives:
            raise ValueError(f"hard_negatives {self.hard_negatives} is more than negatives {self.negatives}")
        return self


@section
class Preset:
    model: ModelArch
    pretrain: StageConfig
    finetune_captioner: StageConfig
    finetune_filter: FilterStageConfig
    finetune_vqa: VQAStageConfig
    finetune_nlvr: NLVRStageConfig
    finetune_dialog: DialogStageConfig

    @model_validator(mode="after")
    def _patches_tile(self) -> Preset:
        patch = self.model.vision.patch_size
        stages = {name: getattr(self, name) for name in ("pretrain", "finetune_captioner", "finetune_filter",
                                                          "finetune_vqa", "finetune_nlvr", "finetune_dialog")}
        stages["finetune_nlvr.pretrain"] = self.finetune_nlvr.pretrain
        for name, stage in stages.items():
            size = stage.image_size
            if size % patch:
                raise ValueError(f"{name}.image_size {size} is not a multiple of the patch size {patch}")
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
class CapfiltConfig:
    method: Literal["nucleus", "beam"]  # how the captioner writes synthetic captions
    captions_per_image: PosInt    # synthetic captions per web image (the paper: 1)
    top_p: Annotated[float, Strict(), Field(gt=0, le=1)]  # nucleus sampling
    max_length: PosInt            # generation length, prompt tokens included
    min_length: NonNegInt
    batch_size: PosInt            # images per generation / scoring batch
    workers: NonNegInt            # Ray actors scoring shards (0: one per GPU of the cluster, or 1 without GPUs)
    cpus_per_worker: NonNegInt    # CPUs (torch threads) per actor (0: loader_workers + 1 on a GPU, else all / workers)
    tables: Str | None            # where the score tables go (URL or shared path); None: see params.yaml
    captioners: list[Str]         # extra captioner models whose captions are pooled (ensemble)
    filters: list[Str]            # extra filter models, each scoring every candidate text
    models: Literal["decoupled", "shared"]  # two fine-tuned models (the paper) | one as both (Table 4's ablation)

    @model_validator(mode="after")
    def _lengths(self) -> CapfiltConfig:
        _ordered(self.min_length, self.max_length, "min_length, max_length")
        return self


@section
class SelectConfig:
    threshold: Float                  # keep a text whose score reaches this (when calibrate is false)
    calibrate: Bool                   # the threshold: the lowest one reaching target_precision on human val pairs
    target_precision: Annotated[float, Strict(), Field(gt=0, le=1)]
    filter_combine: Literal["mean", "vote"]  # mean of the filters' scores | majority of filters at the threshold
    itm_weight: NonNegFloat           # a filter's score: itm_weight x ITM probability + itc_weight x ITC similarity
    itc_weight: NonNegFloat
    top_percent: Annotated[float, Strict(), Field(gt=0, le=100)] | None  # keep only the best this % (None: no such cut)
    max_texts_per_image: PosInt | None  # the best this many texts of an image (None: no cap)
    max_web: NonNegInt | None         # the best this many web texts over the whole dataset (None: no cap)
    max_synthetic: NonNegInt | None
    web_share: Share | None           # web texts' share of the kept web + synthetic texts (None: as selected)
    examples: NonNegInt               # web images shown in the examples sheet

    @model_validator(mode="after")
    def _reachable(self) -> SelectConfig:
        if self.itm_weight == 0 and self.itc_weight == 0:
            raise ValueError("itm_weight and itc_weight are both 0: every score would be 0")
        # ITM probability is in [0, 1] and ITC cosine in [-1, 1]: a threshold outside keeps all or nothing
        low, high = -self.itc_weight or 0.0, self.itm_weight + self.itc_weight
        if not low <= self.threshold <= high:
            raise ValueError(f"threshold {self.threshold} is outside the scores' range [{low:g}, {high:g}] "
                             "for these weights: it would keep everything or nothing")
        return self


@section
class InferenceConfig:
    # auto: the rank's local GPU when CUDA is present, else the CPU
    device: Annotated[str, Strict(), Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]
    precision: Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on a GPU, fp32 on a CPU
    loader_workers: NonNegInt  # CPU processes decoding and resizing images while the models run


@section
class RegistryMetrics:
    captioner: Name
    filter: Name
    pretrained: Name
    vqa: Name
    nlvr: Name


@section
class RegistryConfig:
    prefix: Name               # registered names: <prefix>-captioner, -filter, -pretrained, -vqa
    metric: RegistryMetrics    # the evaluation metric (higher is better) that decides champion


@section
class VideoTask:
    baseline: Str        # the model folders it scores, zero-shot: the baseline's (from models/pretrain) ...
    bootstrapped: Str    # ... and the bootstrapped model's (from models/retrain)
    frames: PosInt       # sampled uniformly per clip (the paper: 8 for retrieval, 16 for QA)
    k_test: PosInt       # retrieval: ITC's top k re-ranked by ITM; QA: answers re-scored whole


@section
class DownstreamConfig:
    # the paper's transfer tasks, each fine-tuned from both pre-trained models
    tasks: list[Literal["vqa", "nlvr", "dialog"]]
    video: dict[Literal["retrieval", "qa"], VideoTask]  # zero-shot video, no training on video

    @model_validator(mode="after")
    def _video_models_built(self) -> DownstreamConfig:
        for kind, task in self.video.items():
            for path in (task.baseline, task.bootstrapped):
                parts = Path(path).parts
                if len(parts) > 1 and parts[0] == "models" and parts[1] in ("vqa", "nlvr", "dialog") \
                        and parts[1] not in self.tasks:
                    raise ValueError(f"video.{kind} scores {path}, which the {parts[1]} task fine-tunes, but "
                                     f"{parts[1]} is not in downstream.tasks: add it, or remove video.{kind}")
        return self


@section
class RetrainConfig:
    init_from: Str  # "" = from scratch (the paper); a model folder = continue it (ablation)


@section
class ContractsConfig:
    min_words: PosInt                   # caption word-count bounds (after clean-up)
    max_words: PosInt
    max_word_chars: PosInt              # the longest word a caption may hold (catches one enormous word)
    image_sample: NonNegInt             # images decoded per dataset (the rest: metadata only)
    row_sample: PosInt                  # rows shown row by row (Data Docs); every row is checked in aggregate
    sample_shards: PosInt               # web / bootstrapped: the input shards the decoded sample is read from
    memory_mb: PosInt                   # DuckDB's memory for the aggregates over the tables (it spills past it)
    synthetic_share: Range              # bootstrapped: share of rows that are synthetic captions
    web_removed_share: Range            # share of web texts the filter removed
    noise_ratio: Range                  # share of synthetic captions the filter removed

    @model_validator(mode="after")
    def _bounds(self) -> ContractsConfig:
        _ordered(self.min_words, self.max_words, "min_words, max_words")
        for name in ("synthetic_share", "web_removed_share", "noise_ratio"):
            _ordered(*getattr(self, name), name)
        return self


@section
class GatesConfig:
    on_fail: Literal["stop", "warn"]    # stop the chain, or record the failure and go on (a smoke run)
    filter_min_auc: Share               # the filter's ITM AUC, true human val pairs against another image's caption
    min_recall: Share                   # share of true human val pairs kept at the chosen (or calibrated) threshold
    captioner_min_cider_ratio: PosFloat # the captioner's CIDEr on human val over its chance level (another image's)


@section
class Params:
    seed: NonNegInt
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
    gates: GatesConfig
    retrain: RetrainConfig
    downstream: DownstreamConfig
    rounds: PosInt
    registry: RegistryConfig
    preset: Name
    presets: dict[str, Preset]

    @model_validator(mode="after")
    def _preset_exists(self) -> Params:
        if self.preset not in self.presets:
            raise ValueError(f"preset '{self.preset}' is not one of {sorted(self.presets)}")
        return self

    @model_validator(mode="after")
    def _shared_in_one_round(self) -> Params:
        if self.capfilt.models == "shared" and self.rounds > 1:
            raise ValueError("capfilt.models is 'shared' (the ablation) and rounds > 1: later rounds fine-tune "
                             "decoupled models; run the ablation with rounds: 1")
        return self

    @property
    def active(self) -> Preset:
        """The chosen preset's architecture and stage hyper-parameters."""
        return self.presets[self.preset]


_PARAMS = TypeAdapter(Params)


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


def params_from_dict(data: Any, source: str = "params") -> Params:
    """Build typed params from an already-parsed params mapping; every problem is named by its dotted key."""
    try:
        return _PARAMS.validate_python(data)
    except ValidationError as e:
        problems = validation_problems(e)
        raise ValueError(f"{source}: {len(problems)} invalid value(s):\n  " + "\n  ".join(problems)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml into typed, validated config objects."""
    with open(path, encoding="utf-8") as f:
        return params_from_dict(yaml.safe_load(f), str(path))


def to_dict(obj: Any) -> dict:
    """Plain-dict view of a config object (for manifests and tracking)."""
    return dataclasses.asdict(obj)
