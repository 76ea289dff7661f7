"""Cluster profiles (slurm/NAME.yaml): where and how cells run on a SLURM cluster."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.errors import ConfigError
from bench.yaml_input import load_yaml, validate

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm"


CellsPerJob = Annotated[int, Field(ge=1)] | Literal["auto"]


class Resources(BaseModel):
    """Keys a stage may override."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    time_min: int | None = Field(None, ge=1)
    constraint: str | None = None
    array_parallelism: int | None = Field(None, ge=1)
    max_requeues: int | None = Field(None, ge=0)
    setup: list[str] | None = None
    cells_per_job: CellsPerJob | None = Field(None, description="cells run one after another in one job")
    nodes: int | None = Field(None, ge=1)
    tasks_per_node: int | None = Field(None, ge=1, description="processes per node: one per GPU for a data-parallel cell")


class Profile(Resources):
    """A whole profile: defaults for every stage plus per-stage overrides."""

    partition: str
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float = Field(4, gt=0)
    time_min: int = Field(60, ge=1)
    array_parallelism: int = Field(16, ge=1)
    max_requeues: int = Field(10, ge=0, description="timeouts/preemptions a cell may be requeued for")
    setup: list[str] = Field(default_factory=list)
    # 1: one cell per job. N: up to N ready cells of a stage per job (they share the process, so
    # start-up and data loading are paid once). auto: a stage's cells spread evenly over
    # array_parallelism jobs.
    cells_per_job: CellsPerJob = Field(1, description="cells run one after another in one job")
    nodes: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1, description="processes per node: one per GPU for a data-parallel cell")
    stages: dict[str, Resources] = Field(default_factory=dict)
    source: str = Field("", exclude=True)

    def for_stage(self, stage: str) -> "Profile":
        override = self.stages.get(stage)
        if override is None:
            return self
        return self.model_copy(update={k: v for k, v in override.model_dump().items() if v is not None})


def profile_path(name: str) -> Path:
    """``NAME`` -> slurm/NAME.yaml (next to the package, or in ./slurm), or a path as given."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    for folder in (Path("slurm"), PROFILE_DIR):
        path = folder / f"{name}.yaml"
        if path.exists():
            return path
    return Path("slurm") / f"{name}.yaml"


def load_profile(name: str) -> Profile:
    path = profile_path(name)
    source = str(path)
    if not path.exists():
        raise ConfigError(source, "", f"no such cluster profile (--profile {name})")
    profile = validate(Profile, load_yaml(path, "cluster profile") or {}, source, "cluster profile")
    profile.source = source
    return profile
