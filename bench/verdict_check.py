"""Gate on verdicts: a figure reading that was *reproduced* and no longer is fails ``bench check``.

The baseline is a CSV of (matrix, figure id, reading, verdict) written by ``bench check --verdicts
FILE --update`` from a results folder; a later check recomputes every reading's verdict
(``bench.report.judged_figures``) and lists each baseline "reproduced" that is now anything else,
or gone. Readings that were inconclusive or not reproduced in the baseline gate nothing (they may
improve freely); a new "reproduced" is reported as a note.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.store import atomic_write_bytes

COLUMNS = ["matrix", "id", "reading", "verdict"]
VERDICTS = {"reproduced", "not reproduced", "inconclusive", "no cells", "other data"}


def current_verdicts(results: Path) -> pd.DataFrame:
    """Every matrix of ``results``' plans with a paper: one row per figure reading."""
    from bench.collect import read_cells
    from bench.report import judged_figures, resolve_targets

    table, _ = read_cells(results)
    frames = [judged_figures(table, target)[COLUMNS] for target in resolve_targets(str(results), None)]
    frames = [f for f in frames if not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return frame.assign(reading=frame["reading"].fillna("").astype(str))


def write_verdicts(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, frame[COLUMNS].sort_values(COLUMNS[:3]).to_csv(index=False).encode())


def read_verdicts(path: Path) -> pd.DataFrame:
    """A verdict baseline; one line naming the file and what is wrong with it otherwise."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such verdict baseline; write one with --update") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: not a verdict baseline ({str(error).splitlines()[0][:100]})") from None
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise BenchError(f"{path}: not a verdict baseline (no column {', '.join(missing)})")
    bad = frame[~frame["verdict"].isin(VERDICTS)]
    if not bad.empty:
        raise BenchError(f"{path}: line {int(bad.index[0]) + 2}, column verdict: {bad['verdict'].iloc[0][:40]!r} is not a verdict")
    return frame[COLUMNS]


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
