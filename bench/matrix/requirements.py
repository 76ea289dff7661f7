"""What a method needs of its cell (roles, the method fields it reads and those it cannot run
without, transfer roles; whether it trains an encoder or trains at all), declared with
``@method(...)`` and checked when a matrix is planned. Torch-free and
importing nothing of bench: the planner reads the requirements from the name index
(``bench.matrix.names.requirement``) without importing the methods."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Requirement:
    """What a method needs of its cell, checked when the matrix is planned, not after the teachers ran."""

    roles: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # the method fields it reads (``bench.matrix.config.METHOD_FIELDS``): the others stay at their defaults
    required: tuple[str, ...] = ()  # fields it cannot run without (not None)
    transfer_roles: tuple[str, ...] = ()  # roles whose cell may be on another dataset (a pretrained encoder)
    encoder: bool = False  # its model.pt is a backbone without a classifier (SimCLR)
    trains: bool = True  # False: a Computation (no epochs, no model.pt; annotate)
    distills: bool = False  # trains on its teacher's targets (so teacher_targets applies; bench plan --cost counts them)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Requirement":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


REQUIREMENTS: dict[str, Requirement] = {}
"""method name -> its requirement, filled by ``bench.methods.method`` as the methods register."""

