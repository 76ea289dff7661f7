"""The rows the last ``bench collect`` read, so the next one reads only the cells that changed.

``bench run`` collects the whole results folder after every run; on 10,000 done cells reading
their ~20,000 JSON files took ~2 s of a ~4 s collect here, and on a cluster's shared file system
each open is a round trip to a metadata server. The cache (``.collect-cache.json`` in the results
folder) keeps each done cell's table row as :func:`bench.results.collect.read_cell` returned it, with the
signature (size, mtime, inode) of the cell's files and of each dependency's config.json it read.
A cell whose signatures all match is taken from the cache unread; any other is read again, so
the table is the one a fresh collect builds (tests compare them). Unreadable cells are never
cached (their warning comes back every time).

The cache is as untrusted as the folder: plain JSON, each entry type-checked; a damaged or
foreign one is ignored (a fresh collect) and rewritten. A read-only folder keeps no cache.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.results.store import Store, file_signature, write_cache

CACHE_FILE = ".collect-cache.json"
FORMAT = 1  # bump when read_cell's rows change shape


@dataclass
class Entry:
    signature: list[Any]
    deps: dict[str, Any]  # dependency id -> signature of its config.json as read
    row: dict[str, Any]
    result: dict[str, Any]


@dataclass
class CollectCache:
    path: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    changed: bool = False
    seen: dict[str, Any] = field(default_factory=dict)  # cell id -> its config.json's signature now

    @classmethod
    def load(cls, root: Path) -> "CollectCache":
        cache = cls(root / CACHE_FILE)
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(cache.path.read_bytes())
            if data.get("format") == FORMAT and isinstance(data.get("cells"), dict):
                for cell_id, value in data["cells"].items():
                    if (isinstance(value, list) and len(value) == 4 and isinstance(value[1], dict)
                            and isinstance(value[2], dict) and isinstance(value[3], dict)):
                        cache.entries[cell_id] = Entry(*value)
        return cache

    def get(self, store: Store, cell_id: str, signature: list[Any]) -> Entry | None:
        """The cached row of a cell whose files, and whose dependencies' configs, are as read."""
        entry = self.entries.get(cell_id)
        if entry is None or entry.signature != signature:
            return None
        for dep_id, dep_signature in entry.deps.items():
            if self._config_signature(store, dep_id) != dep_signature:
                return None
        return entry

    def _config_signature(self, store: Store, cell_id: str) -> Any:
        """Its config.json's signature, looked up once per collect (a teacher has many students)."""
        if cell_id not in self.seen:
            try:
                self.seen[cell_id] = file_signature(store.cell(cell_id).config)
            except BenchError:  # not a cell id: cannot be a row this cache wrote
                self.seen[cell_id] = "not a cell"
        return self.seen[cell_id]

    def put(self, cell_id: str, entry: Entry) -> None:
        self.entries[cell_id] = entry
        self.changed = True

    def keep_only(self, cell_ids: set[str]) -> None:
        """Forget cells no longer done (removed or rerun)."""
        gone = set(self.entries) - cell_ids
        for cell_id in gone:
            del self.entries[cell_id]
        self.changed |= bool(gone)

    def save(self) -> None:
        if not self.changed:
            return
        data = {"format": FORMAT, "cells": {k: [e.signature, e.deps, e.row, e.result] for k, e in self.entries.items()}}
        write_cache(self.path, json.dumps(data, separators=(",", ":")).encode())
