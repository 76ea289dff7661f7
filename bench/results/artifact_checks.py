"""Check an artifact read back from a results folder against what its consumer needs, before use.

A results folder is shared and untrusted, and several people's runs meet in it: a logits cache,
an annotation's pseudo-labels or a checkpoint may be damaged, stale, or not what its name says.
Each carries what it was computed for (its key, a digest of its item list, its shape, dtype and
class count), and its consumer compares that with what it is about to index: a mismatch is a
short phrase saying what differs (None when it fits), which the consumer turns into a rebuild
(a cache) or a one-line error naming the file (an annotation, a checkpoint).
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch


def items_digest(items: torch.Tensor) -> str:
    """A short digest of an item list, in order (a reordered list is another list)."""
    return hashlib.sha256(items.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def tensor_problem(name: str, value: Any, shape: tuple[int | None, ...], dtypes: tuple[torch.dtype, ...]) -> str | None:
    """What is wrong with ``value`` as the tensor ``name`` of ``shape`` (None: any size on that
    axis) and one of ``dtypes``, or None when it fits."""
    if not isinstance(value, torch.Tensor):
        return f"{name} is not a tensor"
    if value.dim() != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        wanted = _shape(tuple("*" if n is None else n for n in shape))  # type: ignore[misc]
        return f"{name} has shape {_shape(value.shape)}, expected {wanted}"
    if value.dtype not in dtypes:
        return f"{name} is {str(value.dtype).removeprefix('torch.')}, expected {' or '.join(str(d).removeprefix('torch.') for d in dtypes)}"
    return None


def labels_problem(name: str, labels: torch.Tensor, classes: int) -> str | None:
    """Labels outside ``0 .. classes-1``, said with the first offender."""
    outside = (labels < 0) | (labels >= classes)
    if bool(outside.any()):
        return f"{name} holds {int(outside.sum())} label(s) outside the {classes} classes (e.g. {int(labels[outside][0])})"
    return None


def fields_problem(stored: Any, expected: Mapping[str, Any]) -> str | None:
    """The first of ``expected``'s fields (key, items digest, class count, ...) that ``stored``
    lacks or holds another value of."""
    if not isinstance(stored, dict):
        return "not an artifact bench writes (no key, items or shape)"
    for field, want in expected.items():
        if field not in stored:
            return f"no {field} recorded (written by an older bench, or not by bench)"
        if stored[field] != want:
            return f"{field} {str(stored[field])[:40]}, expected {want}"
    return None


def state_dict_problem(expected: Mapping[str, torch.Tensor], loaded: Any) -> str | None:
    """How a loaded state dict differs from a module's (missing or extra keys, shapes, dtypes)."""
    if not isinstance(loaded, dict):
        return "not a state dict"
    missing = [k for k in expected if k not in loaded]
    extra = [k for k in loaded if k not in expected]
    if missing or extra:
        return f"{'missing ' + missing[0] if missing else 'unexpected ' + str(extra[0])[:60]} " \
               f"({len(missing)} missing, {len(extra)} unexpected key(s)): another architecture"
    for key, want in expected.items():
        problem = tensor_problem(key, loaded[key], tuple(want.shape), (want.dtype,))
        if problem:
            return problem
    return None
