"""The resolved configuration of one cell: every field a run depends on, flat and typed.

A cell's id is a hash of this config (see ``bench.plan``), so anything that changes what a cell
computes must be a field here, and anything that only changes how fast it runs (device,
number of workers) must not.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

NPerClass = Union[int, Literal["all"], None]


class CellConfig(BaseModel):
    """Fields of one cell. Matrices set them in ``defaults``, stage settings, axes and overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(description="the matrix stage this cell belongs to")
    method: str = Field(description="training method (bench.methods registry)")
    arch: str = Field(description="architecture (bench.models registry or any timm name)")
    pretrained: bool = False
    dataset: str = Field(description="labeled dataset (bench.data.datasets registry)")
    unlabeled: str | None = Field(None, description="unlabeled pool; the labeled train split minus its labels when null")
    unlabeled_limit: int | None = Field(None, gt=0, description="use a seeded random subset of this many unlabeled-pool images")
    image_size: int | None = Field(None, gt=0, description="resize images to this side length at load time")
    protocol: Literal["official", "resplit_4_1_1"] = "official"
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="official protocol: stratified part of train held out for validation")
    label_fraction: float = Field(1.0, gt=0.0, le=1.0, description="stratified fraction of the train split whose labels are used")
    n_per_class: NPerClass = Field(None, description="labeled samples per class for fine-tuning ('all' = the whole labeled split)")
    seed: int = 0
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="step schedule: factor every third of the epochs")
    temperature: float = Field(1.0, gt=0.0)
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="kd: weight of cross-entropy on labels (1-alpha on KL)")
    augment: tuple[Literal["crop", "flip"], ...] = ()
    crop_padding: int = Field(4, ge=0)
    metric: Literal["final", "best_val"] = "final"
    deps: dict[str, str] = Field(default_factory=dict, description="role -> cell id of the cells this one needs")

    @field_validator("n_per_class")
    @classmethod
    def _positive_n(cls, value: NPerClass) -> NPerClass:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive integer or 'all'")
        return value


FIELD_NAMES: tuple[str, ...] = tuple(CellConfig.model_fields)
