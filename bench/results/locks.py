"""Exclusive locks on a shared results folder, for cells (and anything else one process at a time).

Two kinds, one behaviour:

* ``flock``: ``fcntl.flock`` on ``<name>``; released by the kernel when the holder dies. Works on
  local disks and on cluster file systems mounted with coherent locking.
* ``file``: an exclusive-create file ``<name>.owner`` holding host, pid and start time, whose
  modification time is a heartbeat refreshed every ``HEARTBEAT_SECONDS``. For mounts where
  ``flock`` fails (some NFS and Lustre mounts) or is node-local only (Lustre ``localflock``:
  set ``BENCH_LOCK=file`` there). A lock whose holder is gone (same host, dead pid) or whose
  heartbeat is older than ``STALE_SECONDS`` is stale and is broken.

``BENCH_LOCK`` = ``auto`` (default: ``flock``, falling back to ``file`` where the file system
refuses it), ``flock`` or ``file``. A process that finds a lock held waits for it, printing a
line now and then, rather than failing: two runs sharing a teacher both finish.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from bench.errors import BenchError
from bench.results.no_links import open_no_follow

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0
POLL_SECONDS = 0.5
REPORT_SECONDS = 30.0
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

Echo = Callable[[str], None]


def lock_kind() -> str:
    kind = os.environ.get("BENCH_LOCK", "auto")
    if kind not in ("auto", "flock", "file"):
        raise BenchError(f"BENCH_LOCK={kind!r}: expected auto, flock or file")
    return kind


def _owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "token": uuid.uuid4().hex}


def _read_owner(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_owner(owner: dict[str, object]) -> str:
    if not owner:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(float(owner.get("since", 0) or 0)))
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')} since {since}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(owner: dict[str, object], heartbeat_age: float, stale_seconds: float = STALE_SECONDS) -> bool:
    """A holder on this host whose pid is gone, or any holder silent for ``stale_seconds``."""
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(int(owner["pid"]))  # type: ignore[arg-type]
    return heartbeat_age > stale_seconds


class _FlockLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = None

    def try_acquire(self) -> bool:
        handle = os.fdopen(open_no_follow(self.path, os.O_RDWR | os.O_CREAT), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except OSError:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_owner()))
        handle.flush()
        self.handle = handle
        return True

    def holder(self) -> str:
        return describe_owner(_read_owner(self.path))

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class _FileLock:
    def __init__(self, path: Path, stale_seconds: float, heartbeat_seconds: float) -> None:
        self.path = path.with_name(path.name + ".owner")
        self.stale_seconds = stale_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.token = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        owner = _owner()
        try:
            fd = open_no_follow(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            self._break_if_stale()
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(owner))
            handle.flush()
            os.fsync(handle.fileno())
        self.token = str(owner["token"])
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _break_if_stale(self) -> None:
        """Move a stale lock aside (atomically, so two breakers cannot both win); if what was
        moved turns out to be a fresh lock taken meanwhile, put it back."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return
        owner = _read_owner(self.path)
        if not owner and age < self.stale_seconds:
            return  # being written right now
        if not is_stale(owner, age, self.stale_seconds):
            return
        aside = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if _read_owner(aside).get("token") != owner.get("token"):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def holder(self) -> str:
        return describe_owner(_read_owner(self.path))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if _read_owner(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(path: Path, what: str, wait: bool = True, echo: Echo | None = None, kind: str | None = None,
              stale_seconds: float = STALE_SECONDS, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> Iterator[bool]:
    """Hold the lock at ``path`` for the body. With ``wait``, wait for a holder to finish (a line
    to ``echo`` at first and every ``REPORT_SECONDS``); without, yield False when it is held."""
    kind = kind or lock_kind()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock: _FlockLock | _FileLock = _FileLock(path, stale_seconds, heartbeat_seconds) if kind == "file" else _FlockLock(path)
    started = last_report = None
    while True:
        try:
            acquired = lock.try_acquire()
        except OSError as error:
            if kind != "auto" or error.errno not in _NO_FLOCK:
                raise
            kind, lock = "file", _FileLock(path, stale_seconds, heartbeat_seconds)  # this mount refuses flock
            continue
        if acquired:
            break
        if not wait:
            yield False
            return
        now = time.monotonic()
        if started is None:
            started = now
        if echo is not None and (last_report is None or now - last_report >= REPORT_SECONDS):
            last_report = now
            echo(f"  waiting for {what}: locked by {lock.holder()} (waited {now - started:.0f} s)")
        time.sleep(POLL_SECONDS)
    try:
        yield True
    finally:
        lock.release()
