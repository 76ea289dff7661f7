"""Never follow a symbolic link in a results folder.

A results folder is shared and untrusted: a link planted at a cell's ``.lock``, its ``log.txt``,
a whole cell folder or the ingest lock would make bench write, lock or delete outside it (a
victim file's contents replaced by a lock's JSON). Every write, lock and delete goes through
these checks: files are opened with ``O_NOFOLLOW``, folders are checked with ``lstat``, and a link
is a one-line error naming it.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from bench.errors import StorageError


class LinkError(StorageError):
    """A symbolic link where bench writes, locks or deletes (a StorageError: a run stops there)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"{path}: is a symbolic link; bench never follows a link in a results folder "
                         "(remove it, or put the real file or folder there)", reason="a symbolic link")


def is_link(path: Path | str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_link(path: Path | str) -> None:
    """A LinkError if ``path`` itself is a symbolic link."""
    if is_link(path):
        raise LinkError(path)


def refuse_links_below(root: Path | str, path: Path | str) -> None:
    """A LinkError for the first symbolic link among ``path``'s components below ``root`` (the
    folder itself may be a link: it is the one the user named), or when ``path`` is not below it."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise StorageError(f"{path}: outside the results folder {root}") from None
    current = root
    for part in parts:
        current = current / part
        if part == "..":
            raise StorageError(f"{path}: outside the results folder {root}")
        refuse_link(current)


def open_no_follow(path: Path | str, flags: int, mode: int = 0o666) -> int:
    """``os.open`` with ``O_NOFOLLOW``: a link at ``path`` is a LinkError (its folders are the
    caller's to check: the results folder itself may be a link the user made)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as error:
        if error.errno == errno.ELOOP or (error.errno == errno.EEXIST and is_link(path)):
            raise LinkError(path) from None
        raise
