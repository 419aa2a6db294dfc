"""Threads that read while others compute: their priority."""

from __future__ import annotations

import os
import sys
import threading

# The reader thread's nice value above the process's: on 2 cores the model's two compute threads
# split each op between them, so a reader that takes one of their cores holds back the whole op.
# Niced, it runs on the cycles the model leaves idle (training uses
# ~1.6 of 2 cores) and still gets a core whenever the model waits for a batch. Linux only: elsewhere
# setpriority on a thread id is not a per-thread call.
PREFETCH_NICENESS = 19


def lower_priority() -> None:
    """Nice the calling thread by ``PREFETCH_NICENESS`` (Linux; elsewhere, or refused, nothing)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(
                os.PRIO_PROCESS,
                threading.get_native_id(),
                min(19, os.getpriority(os.PRIO_PROCESS, 0) + PREFETCH_NICENESS),
            )
        except OSError:  # a sandbox may refuse; the thread then reads at the process's priority
            pass
