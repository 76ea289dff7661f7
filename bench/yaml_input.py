"""Reading the YAML files a user writes (matrices, cluster profiles, paper figures), bounded.

One loader for every file, so one problem has one message: ``yaml.safe_load`` semantics (no
tags that build objects, nothing executed), plus what a shared file system needs of untrusted
input. Duplicate keys (two stages of one name) are errors, not last-one-wins; a file too big,
too deep (a 20,000-deep nested list) or with too many alias expansions (a "billion laughs" bomb)
is refused before it can cost gigabytes; a file that is not UTF-8, a directory or missing is one
line. Validation messages quote values through :func:`short` so they never repeat an unbounded
value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bench.errors import ConfigError, first_validation_error, short

MAX_BYTES = 4 * 1024 * 1024  # a matrix of the whole of ImageNet's grid is a few kB
MAX_DEPTH = 64
MAX_NODES = 1_000_000  # values once aliases (*name) are expanded: a "billion laughs" bomb has 10^9
Model = TypeVar("Model", bound=BaseModel)



class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let SafeLoader say so
                break
            if duplicate:
                raise _Refused(key_node.start_mark, f"duplicate key {short(key)}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Refused(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of values ``node`` stands for with every alias expanded (shared nodes counted once
    per use), memoised so a bomb is measured without being expanded."""
    if id(node) in memo:
        return memo[id(node)]
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else ""


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> plain data (dicts, lists, scalars); every problem a ConfigError naming the line."""
    if len(text) > MAX_BYTES:
        raise ConfigError(source, "", f"file is {len(text):,} characters; more than {MAX_BYTES:,} is refused")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise _Refused(node.start_mark, f"expands to more than {MAX_NODES:,} values through aliases (*name); refused")
        return loader.construct_document(node)
    except _Refused as refused:
        raise ConfigError(source, _line(refused.mark), refused.message) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(source, _line(mark), f"not valid YAML ({getattr(error, 'problem', None) or short(str(error))})") from None
    except RecursionError:
        raise ConfigError(source, "", f"nested too deeply (more than {MAX_DEPTH} levels are refused)") from None
    finally:
        loader.dispose()


def read_text(path: Path, what: str) -> str:
    """A user's file as UTF-8 text, or a one-line ConfigError saying why it cannot be read."""
    source = str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ConfigError(source, "", f"is a folder, not a {what} file")
        if size > MAX_BYTES:
            raise ConfigError(source, "", f"file is {size:,} bytes; a {what} of more than {MAX_BYTES:,} is refused")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", f"no such {what} file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(source, "", f"not UTF-8 text (byte {error.start}); save the {what} as UTF-8") from None
    except OSError as error:
        raise ConfigError(source, "", f"cannot read: {error.strerror or error}") from None


def load_yaml(path: str | Path, what: str) -> Any:
    """Read and parse a user's YAML file (``what`` names it in messages: 'matrix', 'profile')."""
    path = Path(path)
    return parse_yaml(read_text(path, what), str(path))


def validate(model: type[Model], raw: Any, source: str, what: str) -> Model:
    """``raw`` as a ``model``; the first problem as one line naming the file and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"a {what} must be a YAML mapping, not {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        field, message = first_validation_error(error)
        raise ConfigError(source, field, message) from None
    except RecursionError:
        raise ConfigError(source, "", "nested too deeply") from None
