"""Where progress goes: one line at a time to stderr, flushed (plain lines read well in a
terminal and in a SLURM log alike, and stdout stays for tables)."""
from __future__ import annotations

import sys
from typing import Callable

Echo = Callable[[str], None]


def echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
