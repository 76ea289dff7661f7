"""The training interface: what a method hands the engine (``Training``, or a ``Computation`` for a
cell that trains nothing), the ``Batch`` its step receives, and the teacher targets a student gets
from its cell. It sits below both the methods and the cell's context: they depend on it, it on
neither, so a method and the engine meet here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from bench.data.images import ImageSet
from bench.models.zoo import Normalized


@dataclass
class Batch:
    """One training batch on the device: ``views`` independently augmented float views in
    [0, 1] (as many as the method declares), the labels the loss may see (-1 = hidden) and the
    items' indices in the training source."""

    views: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    indices: torch.Tensor

    @property
    def images(self) -> torch.Tensor:
        """The first (for most methods the only) view."""
        return self.views[0]


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
StepFn = Callable[[Batch], torch.Tensor]
ViewFn = Callable[[torch.Tensor, torch.Generator, torch.Tensor], torch.Tensor]
"""(uint8 batch on the device, generator, the items' indices in the source) -> one float view in
[0, 1] (a view bank looks the items' stored view parameters up by index)."""


def classify(model: nn.Module, loss: LossFn) -> StepFn:
    """The step of a method that only chooses a loss: one forward of the first view."""

    def step(batch: Batch) -> torch.Tensor:
        return loss(model(batch.images), batch)

    return step


@dataclass
class Training:
    """What the engine trains, as a method describes it (USB's ``train_step`` shape).

    The method owns its step: ``step(batch)`` does its own forwards (a student and a teacher,
    two views through an encoder) and returns the loss; the engine keeps the optimiser,
    schedule, epochs, evaluation, checkpoints and exact resume. ``model`` is the network that
    is evaluated each epoch (a classifier on [0, 1] images) and saved as ``model.pt`` for
    dependants. ``views`` augmented views per batch are drawn, view v from its own generator of
    (seed, epoch, v), by ``augment`` (default: the cell's crop/flip). Parameters of ``model``
    and of ``extra`` (a projection head, say; checkpointed too) are optimised unless they have
    ``requires_grad=False``; modules in ``frozen`` are kept in eval mode all the cell long, so
    their BatchNorm statistics never move. ``artifacts`` are written to ``artifacts/<name>.pt``
    beside the cell before it is marked done, for dependants to load by role. ``evaluate``
    replaces the per-epoch classifier evaluation (an SSL cell reports kNN accuracy as its
    ``*_acc``); ``more_metrics`` adds to it (a student's agreement with its teacher), given the
    model and the outputs the evaluation just computed (``{"test": (items, logits)}``), so it need
    not run the model over the test set again.

    ``train_eval`` names the items whose accuracy is reported as ``train_acc`` (None when the
    training set has no labels, as in blind distillation). ``visible_targets`` are the labels
    the loss may see, indexed like ``source`` (-1 = hidden); None means all of ``source.targets``.
    ``order(epoch)`` gives the items of an epoch in batch order (batched by ``batch_size``; a
    method composing its batches, as data distillation's fixed labeled share does); it must be
    a function of the epoch alone, so a resumed cell sees the same batches. None: a permutation
    of ``indices`` from (seed, epoch). ``min_batch``: the fewest images a step can use (SimCLR's v2
    head: 2, for its BatchNorm1d); a smaller last batch of an epoch, or a rank's
    smaller shard of it, is left out of that step. ``crops(epoch, items)``: the loader's crops
    of an epoch's items in pass order (a view bank's stored random-resized crops,
    ``bench.data.recipe.ReplayCrops``) instead of the recipe's own draws; ``augment`` then gets
    the images already cut.
    """

    model: Normalized
    source: ImageSet
    indices: torch.Tensor
    step: StepFn
    train_eval: tuple[ImageSet, torch.Tensor] | None
    visible_targets: torch.Tensor | None = None
    views: int = 1
    augment: ViewFn | None = None
    extra: dict[str, nn.Module] = field(default_factory=dict)
    frozen: tuple[nn.Module, ...] = ()
    artifacts: dict[str, Callable[[], Any]] = field(default_factory=dict)
    evaluate: Callable[[nn.Module, bool], dict[str, float]] | None = None  # (model, last epoch?) -> metrics
    more_metrics: Callable[[nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]], dict[str, float]] | None = None
    order: Callable[[int], torch.Tensor] | None = None
    min_batch: int = 1
    crops: Callable[[int, torch.Tensor], Any] | None = None

    def modules(self) -> list[nn.Module]:
        return [self.model, *self.extra.values()]

    def train_mode(self) -> None:
        """Train mode for what trains, eval mode for what is frozen (BatchNorm, dropout)."""
        for module in self.modules():
            module.train()
        for module in self.frozen:
            module.eval()


@dataclass
class Computation:
    """What a cell that trains nothing computes from its dependencies (data distillation's
    annotate: a teacher's pseudo-labels, shared by all its students).

    ``compute(progress)`` returns the cell's metrics and its named artifacts; the runner writes
    the artifacts, then the result, then DONE, so a cell killed mid-way leaves nothing half
    written and computes again (a long computation may keep its own partial state under
    ``partial``, a file in the cell's folder that the runner removes once the cell is done).
    ``model`` is the network it runs, for the result's parameter count and inference rate.
    Such a cell leaves no ``model.pt``: its dependants load its artifacts by role.
    """

    model: Normalized
    compute: Callable[[Callable[[str], None]], tuple[dict[str, Any], dict[str, Any]]]


TeacherFn = Callable[[Batch], torch.Tensor]


class TeacherTargets(NamedTuple):
    """How a student gets its teacher's logits (``CellContext.teacher_targets``): ``logits`` of a
    batch; with a view bank, the student's ``view`` of a batch and, for random-resized views,
    the loader's ``crops`` of an epoch (the two ``Training`` fields of the same names)."""

    logits: TeacherFn
    view: ViewFn | None = None
    crops: Callable[[int, torch.Tensor], Any] | None = None
