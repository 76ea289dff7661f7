"""A cell's parents (the cells it needs, by role): their configs, their models, frozen or
trainable, and the artifacts they left, each checked before use.

A parent is done and cannot be asked again, so whatever of it does not fit this cell is a
one-line error naming the file and how to rerun the parent, never a traceback mid-cell.
"""
from __future__ import annotations

from typing import Callable

from bench.cell.data import CellData
from bench.cell.networks import build_model
from bench.errors import BenchError
from bench.matrix.config import CellConfig
from bench.matrix.requirements import REQUIREMENTS
from bench.models.zoo import Normalized
from bench.results.artifact_checks import state_dict_problem
from bench.results.store import CellDir, Store, UnreadableFile, load_tensors, read_json
from bench.training.runtime import Runtime


class Parents:
    """The dependencies of one cell (``config.deps``: role -> cell id) in its store."""

    def __init__(self, config: CellConfig, cell_id: str, store: Store, runtime: Runtime, data: CellData) -> None:
        self.config = config
        self.cell_id = cell_id
        self.store = store
        self.runtime = runtime
        self.data = data
        self._frozen: dict[str, Normalized] = {}

    def dep_id(self, role: str) -> str:
        try:
            return self.config.deps[role]
        except KeyError:
            raise BenchError(f"cell {self.cell_id}: method {self.config.method!r} needs a {role!r} dependency; add it to the stage's needs") from None

    def folder(self, role: str) -> CellDir:
        """The folder of the cell this one needs as ``role`` (done or not)."""
        return self.store.cell(self.dep_id(role))

    def config_of(self, role: str) -> CellConfig:
        return CellConfig.model_validate(read_json(self.folder(role).config))

    def done(self, role: str) -> CellDir:
        """The folder of the cell this one needs as ``role``, which must be done."""
        dep = self.folder(role)
        if not dep.is_done():
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is not done; run the matrix in dependency order")
        return dep

    def classes(self, role: str) -> int:
        """The outputs of the model of the cell this one needs as ``role`` (0: an encoder's embedding)."""
        dep_config = self.config_of(role)
        # the registered methods' requirements: a method is asking, so bench.methods (which registers
        # them all) is imported; the name index would be the same data, but it reaches up into the methods
        needs = REQUIREMENTS.get(dep_config.method)
        if needs is not None and needs.encoder:
            return 0  # its model.pt is a backbone without a classifier
        if dep_config.dataset == self.config.dataset and dep_config.task_classes == self.config.task_classes:
            return self.data.num_classes
        return dep_config.task_classes or self.data.load(dep_config.dataset, "train").num_classes

    def model(self, role: str, trainable: bool = False) -> Normalized:
        """The selected weights of the cell this one needs as ``role`` (frozen unless trainable)."""
        dep = self.done(role)
        data = self.data.labeled_train
        dep_config = self.config_of(role)
        rebuilt = dep_config.model_copy(update={"pretrained": False, "encoder_file": None})
        model = build_model(rebuilt, self.classes(role), data.channels, data.size)
        rerun = (f"rerun the {role}: rm {dep.done_marker} and run the matrix again (it trains again, or rewrites model.pt "
                 f"from its checkpoint if it was run with --keep-checkpoints)")
        try:
            weights = load_tensors(dep.model)
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is done but {error}; {rerun}") from None
        problem = state_dict_problem(model.inner.state_dict(), weights)
        if problem:
            raise BenchError(f"{dep.model}: {problem}, not the {dep_config.arch} its config names; {rerun}")
        model.inner.load_state_dict(weights)
        model.requires_grad_(trainable)
        return model.train(trainable)

    def frozen_model(self, role: str) -> Normalized:
        """``role``'s model, frozen and on the device, loaded once per cell: its logits and its
        agreement with the student read the same instance."""
        if role not in self._frozen:
            self._frozen[role] = self.model(role).to(self.runtime.torch_device)
        return self._frozen[role]

    def artifact(self, role: str, name: str, problem: Callable[[object], str | None]) -> object:
        """A named artifact the cell this one needs as ``role`` left (tensors and containers only),
        checked before use: ``problem(artifact)`` says what differs from what this cell needs (None:
        it fits). Its producer is done and cannot be asked again, so a mismatch is a one-line
        error naming the file, never an IndexError mid-cell or a student trained on wrong labels."""
        dep = self.done(role)
        path = dep.artifacts / f"{name}.pt"
        rerun = f"rerun the {role}: rm {dep.done_marker} and run the matrix again"
        try:
            value = load_tensors(path)
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: artifact {name!r} of its {role}: {error}; {rerun}") from None
        differs = problem(value)
        if differs:
            raise BenchError(f"{path}: {differs}, not what cell {self.cell_id} needs of its {role} {dep.id}; {rerun}")
        return value
