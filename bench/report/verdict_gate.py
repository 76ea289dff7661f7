"""Gate on verdicts: a figure reading that was *reproduced* and no longer is fails ``bench check``.

The baseline is a CSV of (matrix, figure id, reading, verdict) written by ``bench check --verdicts
FILE --update`` from a results folder; a later check recomputes every reading's verdict
(``bench.report.sections.judged_figures``) and lists each baseline "reproduced" that is now anything else,
or gone. Readings that were inconclusive or not reproduced in the baseline gate nothing (they may
improve freely); a new "reproduced" is reported as a note.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.results.store import atomic_write_bytes

COLUMNS = ["matrix", "id", "reading", "verdict"]
VERDICTS = {"reproduced", "not reproduced", "inconclusive", "no cells", "other data"}


def current_verdicts(results: Path) -> pd.DataFrame:
    """Every matrix of ``results``' plans with a paper: one row per figure reading."""
    from bench.results.collect import read_cells
    from bench.report.sections import judged_figures
    from bench.report.targets import resolve_targets

    table, _ = read_cells(results)
    frames = [judged_figures(table, target)[COLUMNS] for target in resolve_targets(str(results), None)]
    frames = [f for f in frames if not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return frame.assign(reading=frame["reading"].fillna("").astype(str))


def write_verdicts(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, frame[COLUMNS].sort_values(COLUMNS[:3]).to_csv(index=False).encode())


def read_verdicts(path: Path) -> pd.DataFrame:
    """A verdict baseline; one line naming the file (and line) and what is wrong with it otherwise:
    a folder, not UTF-8, not CSV, a column missing, an empty key, an unknown verdict, or a reading
    listed twice (which of two verdicts would gate? neither: it is an error)."""
    from bench.report.gate import gate_records, read_gate_file, shown

    rerun = f"fix it or rewrite it with `bench check RESULTS --verdicts {path} --update`"
    text = read_gate_file(path, "verdict baseline", "write one with --update")
    header, body = gate_records(text, path, "verdict baseline", COLUMNS, rerun)
    first: dict[tuple[str, ...], int] = {}
    for line, record in body:
        row = dict(zip(header, record))
        for column in ("matrix", "id"):
            if not row[column].strip():
                raise BenchError(f"{path}: line {line}, column {column}: empty; {rerun}")
        if row["verdict"] not in VERDICTS:
            raise BenchError(f"{path}: line {line}, column verdict: {shown(row['verdict'])!r} is not a verdict "
                             f"({', '.join(sorted(VERDICTS))}); {rerun}")
        key = (row["matrix"], row["id"], row["reading"])
        if key in first:
            raise BenchError(f"{path}: line {line}: reading {shown(key[0])} {shown(key[1])} ({shown(key[2])}) again, "
                             f"first at line {first[key]}; {rerun}")
        first[key] = line
    return pd.DataFrame([dict(zip(header, record)) for _, record in body], columns=header, dtype=str)[COLUMNS]


def lost(baseline: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(failures: baseline "reproduced" readings that are not any more, notes: newly reproduced)."""
    now = {(r.matrix, r.id, r.reading): r.verdict for r in current.itertuples(index=False)}
    before = {(r.matrix, r.id, r.reading): r.verdict for r in baseline.itertuples(index=False)}
    failures, notes = [], []
    for key, verdict in before.items():
        if verdict == "reproduced" and now.get(key) != "reproduced":
            reading = f" ({key[2]})" if key[2] else ""
            failures.append(f"LOST VERDICT {key[0]} {key[1]}{reading}: reproduced -> {now.get(key, 'gone')}")
    for key, verdict in now.items():
        if verdict == "reproduced" and before.get(key) != "reproduced":
            notes.append(f"newly reproduced: {key[0]} {key[1]}" + (f" ({key[2]})" if key[2] else ""))
    return failures, notes
