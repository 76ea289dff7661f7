"""Progress of a run: the ETA arithmetic on a fake clock, the plain log's line budget, the live
display under a real pseudo-terminal (updates in place, errors above it, Ctrl-C resumable), and
`bench status --watch`."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.live import status_lines
from bench.progress import Position, RunProgress, Throttle, duration, eta_from_finished
from tests.conftest import ROOT, TINY


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_divides_the_work_left_by_the_pace_so_far() -> None:
    clock = FakeClock()
    run = RunProgress({"a": 1.0, "b": 3.0, "c": 2.0}, clock=clock)
    assert run.eta() is None  # no pace yet
    run.finish("c", "skipped")  # done before this run: no pace, and not left
    run.start("a", "teacher")
    clock.now = 10.0
    run.batch(Position(epoch=1, epochs=2, step=5, steps=5))  # half of a's work in 10 s
    assert run.eta() == pytest.approx((0.5 + 3.0) * 10 / 0.5)
    assert run.cell_eta() == pytest.approx(10.0)
    clock.now = 20.0
    run.finish("a", "done")
    run.start("b", "student")
    assert run.eta() == pytest.approx(3.0 * 20 / 1.0) and run.cell_eta() is None
    clock.now = 50.0
    run.batch(Position(epoch=2, epochs=2, step=1, steps=2))  # 3/4 of b in 30 s
    assert run.eta() == pytest.approx(0.75 * 50 / (1.0 + 2.25))
    assert run.cell_eta() == pytest.approx(10.0)
    run.finish("b", "failed")
    assert (run.done, run.skipped, run.failed, run.finished, run.total) == (1, 1, 1, 3, 3)
    overall, cell = status_lines(run)
    assert overall.startswith("cells 2/3 done · 1 failed · 0 blocked · 50 s elapsed") and cell is None


def test_the_cluster_eta_uses_the_wall_clock_pace() -> None:
    assert eta_from_finished(2.0, first_start=100.0, now=160.0, remaining_work=6.0) == pytest.approx(180.0)
    assert eta_from_finished(0.0, 100.0, 160.0, 6.0) is None
    assert [duration(s) for s in (None, 42, 185, 3725)] == ["?", "42 s", "3 min 05 s", "1 h 02 min"]


def test_the_plain_log_has_at_most_one_in_epoch_line_per_interval() -> None:
    clock = FakeClock()
    throttle = Throttle(30.0, clock)
    lines = 0
    for step in range(1, 101):  # a batch a second for 100 s
        clock.now = float(step)
        lines += throttle.ready()
    assert lines == 3  # at 31, 62 and 93 s


def test_log_every_bounds_the_in_epoch_lines_of_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(TINY), "--results", str(tmp_path / "quiet"), "--only", "teacher"]) == 0
    quiet = capsys.readouterr().err
    assert main(["run", str(TINY), "--results", str(tmp_path / "chatty"), "--only", "teacher", "--log-every", "0"]) == 0
    chatty = capsys.readouterr().err
    in_epoch = re.compile(r"^  epoch \d+/\d+ batch \d+/\d+ ", re.M)
    assert not in_epoch.search(quiet)  # 30 s by default: none in a run of a second
    assert len(in_epoch.findall(chatty)) >= 10  # every batch of 3 epochs of 1,347 images in batches of 64
    assert "\x1b[" not in quiet + chatty  # off a terminal: plain lines, no control sequences


def _in_terminal(args: list[str], env: dict[str, str] | None = None, interrupt_after: str | None = None,
                 timeout: float = 180) -> tuple[int, str]:
    """Run ``python -m bench.cli ARGS`` under a pseudo-terminal: (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                               cwd=ROOT, env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", **(env or {})},
                               close_fds=True)
    os.close(slave)
    out, deadline, sent = b"", time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        if interrupt_after and not sent and interrupt_after.encode() in out:
            alive = process.poll() is None
            process.send_signal(signal.SIGINT)
            sent = True
            out += f"\n[test: SIGINT sent after {len(out)} bytes; the run was {'alive' if alive else 'over'}]\n".encode()
        if process.poll() is not None and not ready:
            break
    os.close(master)
    return process.wait(timeout=30), out.decode(errors="replace")


def test_a_run_on_a_terminal_updates_its_progress_in_place(tmp_path: Path) -> None:
    # a teacher of 60 epochs (a few seconds): long enough for the 4-per-second redraw to catch it training
    code, out = _in_terminal(["run", str(TINY), "--results", str(tmp_path / "r"), "--set", "teacher.epochs=60"])
    assert code == 0, out[-2000:]
    assert "\x1b[1A" in out or "\x1b[2K" in out  # the status lines are redrawn, not appended
    counts = set(re.findall(r"cells (\d)/4 done", out))
    assert {"0", "4"} <= counts and len(counts) >= 3  # the overall line moved as cells finished
    assert re.search(r"epoch \d+/60 · batch \d+/\d+", out)  # the running cell's line
    assert "done: epoch 60/60" in out and "done: epoch 3/3" in out  # finished cells' lines scroll above it, as before


def test_no_progress_and_no_color_are_honoured(tmp_path: Path) -> None:
    code, out = _in_terminal(["run", str(TINY), "--results", str(tmp_path / "plain"), "--only", "teacher", "--no-progress"])
    assert code == 0 and "\x1b[" not in out and "cells 1/1 done" not in out
    code, out = _in_terminal(["run", str(TINY), "--results", str(tmp_path / "nocolor"), "--only", "teacher"],
                             env={"NO_COLOR": "1"})
    assert code == 0 and "cells 1/1 done" in out and "\x1b[1;36m" not in out and "\x1b[1m" not in out  # live, plain text


def test_ctrl_c_under_the_live_display_leaves_a_resumable_folder(tmp_path: Path) -> None:
    # a teacher of 100 epochs (a few seconds): the four cells of 3 epochs ran out in a second on an
    # idle machine, before the interrupt landed
    results, longer = tmp_path / "r", ["--set", "teacher.epochs=100"]
    code, out = _in_terminal(["run", str(TINY), "--results", str(results), "--log-every", "0", *longer],
                             interrupt_after="epoch 1/100 batch")
    assert code == 130, (re.findall(r"\[test: [^]]*\]", out) or ["[test: never sent]"], out[-2000:])
    assert "interrupted; run the same command again to resume" in out
    assert main(["run", str(TINY), "--results", str(results), *longer]) == 0


def test_status_watch_ends_when_nothing_is_queued_or_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r"
    assert main(["run", str(TINY), "--results", str(results)]) == 0
    capsys.readouterr()
    assert main(["status", str(TINY), "--results", str(results), "--watch", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.count("done per stage: teacher 1/1, student 1/1, finetune 2/2") == 1  # one frame: nothing moved
    assert "ETA 0 s" in out and " 3/3" in out  # the epoch column
    other = tmp_path / "other"
    assert main(["status", str(TINY), "--results", str(other), "--watch", "--interval", "0.1"]) == 1  # nothing will run
    assert "4 not started" in capsys.readouterr().out


def test_status_watch_follows_a_run_until_it_ends(tmp_path: Path) -> None:
    """A run in another process, watched from here: several frames, then exit 0 when all are done."""
    results, longer = tmp_path / "r", ["--set", "teacher.epochs=60"]  # long enough to be watched (~10 s)
    run = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(TINY), "--results", str(results), *longer],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(results.glob("cells/*/log.txt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    watch = subprocess.run([sys.executable, "-m", "bench.cli", "status", str(TINY), "--results", str(results), *longer,
                            "--watch", "--interval", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.wait(timeout=900) == 0
    assert watch.returncode == 0, watch.stdout[-1500:] + watch.stderr
    frames = watch.stdout.count("done per stage:")
    assert frames >= 2 and "running" in watch.stdout and watch.stdout.rstrip().splitlines()[-2].startswith("tiny: 4 done")
