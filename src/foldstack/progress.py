"""Progress lines that reach a log file at once and whole, terminal or not."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """One progress line on stdout, now and whole, with or without a terminal: written with tqdm's
    external_write_mode (a progress bar on a terminal is cleared and redrawn below it, as tqdm.write
    does), as one write of line + newline, then flushed. So a log file (nohup, make > log) gets it at
    once, and several worker processes writing to one file each put their line down in one piece, even
    with PYTHONUNBUFFERED (where tqdm.write's two writes would be two system calls)."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stdout):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
