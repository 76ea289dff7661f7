"""The ``bench`` command line: the parser, built from the command modules (``bench.commands``),
and one line per error. Every user error is one line on stderr and exit code 2; Ctrl-C and
SIGTERM stop with a hint to run the same command again, which resumes."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from bench.commands import MODULES
from bench.errors import BenchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Reproducibility matrix for semi-supervised knowledge distillation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's end of time) ends a run like Ctrl-C: same hint."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return handler(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output left (`bench plan M | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush at exit does not raise again
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as stop:
        print(f"bench: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; run the same command again to resume",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # python -m bench.cli: run the imported module, where the commands registered
    from bench.cli import main as _main

    sys.exit(_main())
