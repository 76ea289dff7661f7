"""The resolved configuration of one cell: every field a run depends on, flat and typed.

A cell's id is a hash of this config (see ``bench.matrix.plan``), so anything that changes what a cell
computes must be a field here, and anything that only changes how fast it runs (device,
number of workers) must not.

Ids are a promise: a result computed today keeps its id tomorrow. The fields of the first release
(``ID_FIELDS_V1``) are always hashed; a field added since is hashed only when it differs from its
default, so a new field whose default keeps today's behaviour changes no existing id. Give every
new field such a default (the neutral value), and never change a default once it is released.
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.matrix.ids import CELL_ID

NPerClass = Union[int, Literal["all"], None]

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def safe_name(value: str) -> str:
    """Names that reach a file path or an sbatch script (matrix, stage, role, dataset, arch):
    letters, digits and ``_ . + -``, no ``..``; so no ``/``, newline, space or shell character."""
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError("must be a plain name (letters, digits and _ . + -, at most 100, no '..'): "
                         "no '/', spaces, newlines or shell characters")
    return value


SafeName = Annotated[str, AfterValidator(safe_name)]


def cell_id_text(value: str) -> str:
    """A cell id as the planner makes it (12 hex digits): ids from a results folder name folders."""
    if not CELL_ID.fullmatch(value):
        raise ValueError(f"not a cell id (12 hexadecimal digits): {value[:40]!r}")
    return value


CellId = Annotated[str, AfterValidator(cell_id_text)]


class CellConfig(BaseModel):
    """Fields of one cell. Matrices set them in ``defaults``, stage settings, axes and overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: SafeName = Field(description="the matrix stage this cell belongs to")
    method: SafeName = Field(description="training method (bench.methods registry)")
    arch: SafeName = Field(description="architecture (bench.models.architectures registry or any timm name)")
    pretrained: bool = False
    dataset: SafeName = Field(description="labeled dataset (bench.data.datasets registry)")
    unlabeled: SafeName | None = Field(None, description="unlabeled pool; the labeled train split minus its labels when null")
    unlabeled_limit: int | None = Field(None, gt=0, description="use a seeded random subset of this many unlabeled-pool images")
    image_size: int | None = Field(None, gt=0, description="resize images to this side length at load time")
    protocol: Literal["official", "resplit_4_1_1"] = "official"
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="official protocol: stratified part of train held out for validation")
    label_fraction: float = Field(1.0, gt=0.0, le=1.0, description="stratified fraction of the train split whose labels are used")
    n_per_class: NPerClass = Field(None, description="labeled samples per class for fine-tuning ('all' = the whole labeled split)")
    seed: int = 0
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    schedule: Literal["constant", "cosine", "step", "warmup_cosine"] = "cosine"
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="step schedule: factor every third of the epochs")
    temperature: float = Field(1.0, gt=0.0)
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="kd: weight of cross-entropy on labels (1-alpha on KL)")
    augment: tuple[Literal["crop", "flip", "color"], ...] = Field(
        (), description="training augmentation: pad-and-crop, horizontal flip, SimCLR colour distortion (color_strength)")
    crop_padding: int = Field(4, ge=0)
    metric: Literal["final", "best_val"] = "final"
    # ---- added after the first release: each default keeps the first release's behaviour, and a
    # field at its default is left out of the id (see the module docstring).
    split_seed: int | None = Field(None, description="seed of the train/val/test and label split (default: seed); "
                                   "lets students of one teacher vary their training seed")
    warmup_epochs: int = Field(0, ge=0, description="warmup_cosine schedule: linear warm-up epochs")
    views: tuple[Literal["crop", "color", "gray", "blur", "flip"], ...] = Field(
        (), description="simclr: the augmentations of each of its two views (nguyen2021 Table 1's ablation)")
    color_strength: float = Field(1.0, gt=0.0, description="simclr: colour distortion strength s")
    crop_scale: float = Field(0.08, gt=0.0, le=1.0, description="simclr: smallest area fraction of a random resized crop")
    projection: Literal["v1", "v2"] = Field("v1", description="simclr: projection head (v1: 2 layers, v2: 3 with BN)")
    head: tuple[int, ...] | None = Field(None, description="a new head on the backbone's embedding: hidden widths "
                                         "of its dense layers ([] = one linear layer); null = the architecture's own")
    frozen_backbone: bool = Field(False, description="with head: keep the backbone frozen (eval mode, no gradient)")
    encoder_file: str | None = Field(None, description="backbone weights from this local file (a converted SimCLR "
                                     "release: a state dict of the architecture) instead of a dependency")
    eval_every: int = Field(1, gt=0, description="evaluate every n epochs (and after the last); other epochs "
                            "record null accuracies. metric best_val needs 1")
    task_classes: int | None = Field(None, gt=1, description="keep only the first k classes of the dataset "
                                     "(nguyen2021 Table 4: accuracy against the number of classes)")
    knn_k: int = Field(200, gt=0, description="SSL evaluation: neighbours of the weighted kNN classifier")
    knn_temperature: float = Field(0.1, gt=0.0, description="SSL evaluation: temperature of the kNN weights")
    annotate_flip: bool = Field(False, description="annotate: each transform also horizontally flipped "
                                "(off for digits, where a flipped digit is another digit)")
    annotate_scales: tuple[Annotated[float, Field(gt=0.0)], ...] = Field(
        (), description="annotate: rescalings besides identity (resized, then centre-cropped or zero-padded back)")
    annotate_crops: tuple[Literal["center", "top_left", "top_right", "bottom_left", "bottom_right"], ...] = Field(
        (), description="annotate: fixed crops of annotate_crop_fraction of the side, resized back")
    annotate_crop_fraction: float = Field(0.875, gt=0.0, lt=1.0, description="annotate: side of a fixed crop")
    pseudo_selection: Literal["threshold", "quota"] = Field(
        "threshold", description="annotate: keep images whose ensemble confidence reaches pseudo_threshold, or a "
        "quota of pseudo_keep of the pool split over classes as the labeled set's class prior (most confident first)")
    pseudo_threshold: float = Field(0.0, ge=0.0, lt=1.0, description="annotate: smallest ensemble confidence kept")
    pseudo_keep: float = Field(1.0, gt=0.0, le=1.0, description="annotate, quota: fraction of the pool kept")
    labeled_share: float | None = Field(None, gt=0.0, lt=1.0, description="data_distill: exact share of labeled "
                                        "images in every minibatch (the rest pseudo-labeled)")
    init: Literal["scratch", "teacher"] = Field("scratch", description="data_distill: the student re-initialised "
                                                "(the paper's choice) or fine-tuned from the teacher")
    teacher_targets: Literal["online", "bank"] = Field(
        "online", description="kd, blind, finetune with augment: the teacher's logits computed on each batch's views "
        "(online), or replayed from a view bank of bank_views views per image computed once per teacher (bench/cell/view_bank.py; "
        "pad-crop views, or random-resized crops under recipe imagenet)")
    bank_views: int = Field(10, gt=0, description="teacher_targets bank: augmented views per image")
    bank_seed: int = Field(0, description="teacher_targets bank: seed of the views' parameters (shared by the students)")
    bank_precision: Literal["float16", "float32"] = Field("float16", description="teacher_targets bank: stored logits")
    bank_top_k: int | None = Field(None, gt=0, description="teacher_targets bank: keep per view the teacher's k "
                                   "largest logits and one value for the other classes (FKD's top-k soft labels, the "
                                   "rest's mass spread uniformly; bench/cell/soft_labels.py); null (the default, whatever "
                                   "the class count): all logits. ImageNet, 10 views: k 5 keeps 0.41 GB, null 25.6 GB")
    recipe: Literal["pad_crop", "imagenet"] = Field(
        "pad_crop", description="what augment's crop is: pad by crop_padding and crop back (small images), or the "
        "ImageNet recipe: a random-resized crop (scale 0.08-1, ratio 3/4-4/3) of the decoded image (and augment's flip); "
        "evaluation resize to image_size/0.875 + centre crop (bench/data/recipe.py)")
    train_eval_items: int | None = Field(None, gt=0, description="report train_acc on a fixed seeded subset of this "
                                         "many training items (null: all of them, every epoch)")
    smoke_batches: int | None = Field(None, gt=0, description="a rehearsal cell (`bench run --smoke`), never a result: "
                                      "every split, pool and evaluation set cut to this many batches of the cell's items")
    deps: dict[SafeName, CellId] = Field(default_factory=dict, description="role -> cell id of the cells this one needs")

    @field_validator("encoder_file")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\n\r\0")):
            raise ValueError("must be a path on one line")
        return value

    @model_validator(mode="after")
    def _bank_replays_crop_and_flip(self) -> "CellConfig":
        if self.teacher_targets == "bank" and "color" in self.augment:
            raise ValueError("teacher_targets: a view bank replays crop and flip only, not color; use online")
        return self

    @property
    def effective_split_seed(self) -> int:
        """The seed the splits are drawn with."""
        return self.seed if self.split_seed is None else self.split_seed

    @field_validator("n_per_class")
    @classmethod
    def _positive_n(cls, value: NPerClass) -> NPerClass:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive integer or 'all'")
        return value


FIELD_NAMES: tuple[str, ...] = tuple(CellConfig.model_fields)

ID_FIELDS_V1: frozenset[str] = frozenset({
    "stage", "method", "arch", "pretrained", "dataset", "unlabeled", "unlabeled_limit", "image_size", "protocol",
    "val_fraction", "label_fraction", "n_per_class", "seed", "epochs", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "schedule", "step_gamma", "temperature", "alpha", "augment", "crop_padding", "metric", "deps",
})
"""The fields of the first release: always part of the id (frozen; never add to it)."""

POOL_FIELDS = ("unlabeled", "unlabeled_limit")
"""The out-of-distribution unlabeled pool (``CellContext.unlabeled_pool``, ``distillation_pool``)."""
TEACHER_TARGET_FIELDS = ("teacher_targets", "bank_views", "bank_seed", "bank_precision", "bank_top_k")
"""How a distilling student gets its teacher's targets (``CellContext.teacher_targets``): online or a view bank."""
METHOD_FIELDS: frozenset[str] = frozenset({
    *POOL_FIELDS, *TEACHER_TARGET_FIELDS,
    "n_per_class",  # finetune's few labels per class
    "temperature", "alpha", "frozen_backbone",  # distillation's loss (and SimCLR's NT-Xent temperature); a student's frozen backbone
    "views", "crop_scale", "projection", "knn_k", "knn_temperature",  # simclr
    "annotate_flip", "annotate_scales", "annotate_crops", "annotate_crop_fraction",  # annotate
    "pseudo_selection", "pseudo_threshold", "pseudo_keep",
    "labeled_share", "init",  # data_distill
})
"""The fields only some methods read: each method declares those it reads (``@method(..., fields=...)``)
and the planner refuses one set away from its default on a stage whose method does not read it.
Every other field is general: the data, the model (``head``, ``encoder_file`` too), the optimiser,
the schedule, augmentation (``color_strength`` too: the engine's colour distortion), evaluation."""


@lru_cache(maxsize=None)
def _method_field_defaults(model: type[CellConfig]) -> tuple[tuple[str, Any], ...]:
    """The method fields and their defaults, in the config's order (a refusal names the first)."""
    return tuple((name, info.get_default(call_default_factory=True)) for name, info in model.model_fields.items()
                 if name in METHOD_FIELDS)


def unread_fields(config: CellConfig, reads: tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
    """The method fields ``config`` sets away from their defaults that are not in ``reads`` (what its
    method reads): set there, they would change the cell's id and nothing it computes."""
    values = config.__dict__
    return tuple(name for name, default in _method_field_defaults(type(config))
                 if name not in reads and values[name] != default)


@lru_cache(maxsize=None)
def _later_defaults(model: type[CellConfig]) -> dict[str, Any]:
    """The defaults of the fields added after the first release, per config class."""
    return {name: info.get_default(call_default_factory=True) for name, info in model.model_fields.items()
            if name not in ID_FIELDS_V1}


def id_payload(config: CellConfig) -> dict[str, Any]:
    """What a cell's id hashes: every first-release field, and later fields off their default
    (``model_dump(exclude_defaults=True)``'s rule). Values are the config's own: every field is
    JSON-native (text, numbers, bools, None, tuples, dicts), so they encode exactly as their
    ``model_dump(mode="json")`` does, without a dump per cell (planning 10,000 cells hashes
    10,000 configs)."""
    values = config.__dict__
    payload = dict(values)
    for name, default in _later_defaults(type(config)).items():
        if values[name] == default:
            del payload[name]
    return payload


ID_LENGTH = 12


def cell_id(config: CellConfig) -> str:
    """Stable id: sha256 of the canonical JSON of ``id_payload(config)``."""
    canonical = json.dumps(id_payload(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]
