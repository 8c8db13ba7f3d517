"""What the commands print to a terminal beyond their one-line results.

The libraries report progress through a callback (`timemachine.restore.Progress`) and
know nothing of terminals; drawing it is the command line's business.
"""

from __future__ import annotations

import sys


def terminal_progress(stage: str, done: int, total: int) -> None:
    """A progress bar on stderr, redrawn in place; nothing when stderr is no terminal."""
    if not sys.stderr.isatty() or total == 0:
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r{stage:<9}[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
