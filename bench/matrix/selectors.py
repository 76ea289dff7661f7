"""The one selector language of matrices (include, exclude, overrides' ``when``) and of the
papers' figure files (``select``, ``baseline``) and matrices' ``stand_in``.

A selector maps a field (``arch``, or ``role.field`` such as ``teacher.arch``) to what it accepts:

* a scalar accepts equal values: text as text, numbers as numbers (``math.isclose``, so 0.1 and
  0.1000000000001 agree and numeric text such as "10" counts), booleans only booleans;
* a list is a list of accepted values (any of them): ``arch: [resnet18, resnet50]``;
* a list-valued field (``augment``, ``views``) is matched against a list given inside that
  list, as a set (any order): ``augment: [[crop, flip]]`` accepts exactly crop and flip,
  ``augment: [[]]`` no augmentation, ``augment: [[crop], [crop, flip]]`` either.

Values may come from a cell (tuples, numbers) or from a collected results table (where a list
field is the text "crop,flip" and a missing value is NaN); both read the same.
"""
from __future__ import annotations

import ast
import math
import numbers
import sys
from typing import Any


# numpy and pandas are looked up, not imported: a value can only be one of theirs once something
# imported them (a results table did), and planning a matrix, which never does, stays quick.
def _is_bool(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return isinstance(value, bool) or (np is not None and isinstance(value, np.bool_))


def _is_sequence(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return isinstance(value, (list, tuple)) or (np is not None and isinstance(value, np.ndarray))


def is_empty(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    if value is None or (pd is not None and (value is pd.NA or value is pd.NaT)):
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and math.isnan(value)


def as_text(value: Any) -> str:
    return "" if is_empty(value) else str(value)


def as_list(value: Any) -> list[Any] | None:
    """A value as a list: lists/tuples/arrays as they are; text as written by ``bench.results.collect``
    ("crop,flip"; "" or an empty cell for an empty list) or as a Python/JSON list ("['crop']")."""
    if _is_sequence(value):
        return list(value)
    if is_empty(value):
        return []
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[:1] in ("[", "("):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None
        return list(parsed) if isinstance(parsed, (list, tuple)) else None
    return [part.strip() for part in text.split(",")] if text else []


def as_number(value: Any) -> float | None:
    if _is_bool(value) or is_empty(value):
        return None
    if isinstance(value, numbers.Real):  # int, float and numpy's (which numpy registers)
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def value_matches(value: Any, accepted: Any) -> bool:
    """Whether ``value`` is the one ``accepted`` value (a scalar, or a list for a list field)."""
    if isinstance(accepted, bool):
        if _is_bool(value):
            return bool(value) is accepted
        return isinstance(value, str) and value.strip().lower() == str(accepted).lower()
    if isinstance(accepted, (list, tuple)):
        items = as_list(value)
        return items is not None and sorted(map(str, items)) == sorted(map(str, accepted))
    if _is_bool(value):
        return False
    if isinstance(accepted, str):
        return not _is_sequence(value) and as_text(value) == accepted
    if accepted is None:
        return is_empty(value)
    number = as_number(value)
    return number is not None and math.isclose(number, float(accepted), rel_tol=1e-9, abs_tol=1e-12)


def _is_atom(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))  # bool is an int


def value_problem(wanted: Any) -> str | None:
    """Why ``wanted`` is not a selector value (None when it is one): a scalar, a non-empty list
    of scalars (any of them), or lists of scalars inside a list (for list-valued fields)."""
    if _is_atom(wanted):
        return None
    if not isinstance(wanted, list):
        return f"{wanted!r} is not a text, a finite number, a bool or a list of them"
    if not wanted:
        return "an empty list accepts nothing (write [[]] to select an empty list field such as augment)"
    for item in wanted:
        if isinstance(item, list):
            if not all(_is_atom(part) and not isinstance(part, bool) for part in item):
                return f"{item!r}: a list value holds texts and numbers only"
        elif not _is_atom(item):
            return f"{item!r} is not a text, a finite number, a bool or a list of them"
    return None


def rule_matches(value: Any, wanted: Any) -> bool:
    """One selector entry: a list is any of its items, anything else the value itself."""
    accepted = wanted if isinstance(wanted, list) else [wanted]
    return any(value_matches(value, one) for one in accepted)
