"""What the last MLflow ingest of a results folder wrote, so an ingest with nothing new is quick.

Without it, an ingest re-reads and hashes every cell's files and asks MLflow for every run of
every matrix (on 10,000 cells tens of seconds, ~2 s of that importing mlflow) only to skip them
all. The ledger (``.mlflow-ingest.json`` in the results folder, beside the ingest's lock) records,
for one sqlite database, each ingested (matrix, cell) with its run id and the size, mtime and
inode of the cell's files, plus the database file's own size, mtime and inode as the ingest left
it. A later ingest skips a cell whose files have the same signature, without reading them or
opening MLflow, only while the database is untouched since: any other write to it (another
ingest, a run deleted in the UI, a rebuilt or replaced file) changes its fingerprint and the
ledger is ignored, which is the full check by sha that ingest always did. Servers (http) have no
file to fingerprint: their ingests always take the full check.

The ledger is as untrusted as the rest of the folder: plain JSON, read defensively; a damaged
one is ignored (the full check) and rewritten by the next ingest.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.store import file_signature, write_cache

LEDGER_FILE = ".mlflow-ingest.json"

Signature = list[Any]


@dataclass
class Ledger:
    """Run ids and file signatures of the cells an ingest wrote into one sqlite database."""

    path: Path
    key: str  # tracking URI and bench's ingest format: either changing invalidates every entry
    runs: dict[str, list[Any]] = field(default_factory=dict)  # "matrix/cell" -> [run id, signature]
    experiments: dict[str, str] = field(default_factory=dict)  # experiment name -> id

    @classmethod
    def load(cls, root: Path, key: str, database: Path | None) -> "Ledger":
        """The folder's ledger for ``key`` if the database is as that ledger's ingest left it, else an empty one."""
        ledger = cls(root / LEDGER_FILE, key)
        if database is None:
            return ledger
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(ledger.path.read_bytes())
            if (data.get("key") == key and data.get("database") == file_signature(database)
                    and isinstance(data.get("runs"), dict) and isinstance(data.get("experiments"), dict)):
                ledger.runs = {k: v for k, v in data["runs"].items()
                               if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)}
                ledger.experiments = {k: v for k, v in data["experiments"].items() if isinstance(v, str)}
        return ledger

    def unchanged(self, matrix: str, cell_id: str, signature: Signature) -> str | None:
        """The run id of a cell ingested with these very files, or None."""
        entry = self.runs.get(f"{matrix}/{cell_id}")
        return entry[0] if entry is not None and entry[1] == signature else None

    def record(self, matrix: str, cell_id: str, run_id: str, signature: Signature) -> None:
        self.runs[f"{matrix}/{cell_id}"] = [run_id, signature]

    def save(self, database: Path | None) -> None:
        """Written after the ingest's last write to the database, with that database's fingerprint
        (a read-only folder keeps no ledger: its ingests take the full check)."""
        if database is None:
            return
        data = {"key": self.key, "database": file_signature(database), "experiments": self.experiments, "runs": self.runs}
        write_cache(self.path, json.dumps(data, separators=(",", ":")).encode())
