"""Parallel conversion: ``--jobs N`` (local processes) and ``--dask ADDRESS`` (a Dask cluster).

A task is a range of samples (a commit unit; tfrecord: whole shards): it reads that range from the
source itself (it is given the source, which holds paths, not data) with the chunking a one-process
conversion reads with (so that --repeat's shifts come out the same), and writes the range's pieces
(``ParallelParts.write_part``). The converting process keeps 2 tasks per worker under way, takes their
results in sample order (``absorb_part``: targets, indexes) and commits each range as one process
does: the journal only ever names completed ranges, so an interrupted parallel conversion resumes like
any other, with any --jobs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ooc.errors import OptionError, SourceError
from ooc.formats import get_format
from ooc.fs import absolute
from ooc.journal import as_stored, commit, naming
from ooc.schema import Schema, TargetTally


class Pool:
    """Where tasks run: ``jobs`` local processes (spawned: fresh interpreters, like a cluster's), or
    the workers of the Dask cluster at ``address`` (which must see ``out`` at the same path)."""

    def __init__(self, jobs: int, address: str | None):
        self._client = self._executor = None
        if address is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
            self.width = jobs
            return
        try:
            from distributed import Client
        except ImportError:
            raise OptionError("--dask needs Dask's distributed scheduler: pip install 'ooc[dask]'") from None
        try:
            self._client = Client(address, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise OptionError(
                f"--dask {address}: cannot connect to a Dask scheduler ({' '.join(str(e).split())}); "
                "start one (`dask scheduler` and `dask worker`) or fix the address"
            ) from None
        self.width = max(1, sum(self._client.nthreads().values()))
        self._futures = set()

    def submit(self, fn, *args):
        if self._client is None:
            return self._executor.submit(fn, *args)
        future = self._client.submit(fn, *args, pure=False)
        self._futures.add(future)
        return future

    def stop(self) -> None:
        """Cancel what has not started and wait for what runs, so nothing is written after this
        returns (a failed conversion deletes its output next: a late chunk would land in that)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._client is not None:
            from distributed import wait

            # Dask cannot stop a running task, and cancelling only forgets it: let the few in flight
            # (at most two units a worker) end first, then cancel whatever is left
            unfinished = [f for f in self._futures if not f.done()]
            try:
                wait(unfinished, timeout=60)
            except Exception:  # a timeout or a lost scheduler: nothing more to wait for
                pass
            self._client.cancel([f for f in unfinished if not f.done()])
            self._client.close()
            self._client = None


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(parent: int) -> None:
    """In each worker: ignore Ctrl-C (it reaches the whole process group: the parent stops the
    workers), and die with the parent. A parent killed with SIGKILL cannot stop its workers, which
    would go on writing and keep the caller's stdout and stderr open: a pipe that never ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="ooc-watch-parent").start()
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _die_with_parent() -> bool:
    """Linux: the kernel sends this process SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """Where prctl is missing: a worker thread that ends the process once its parent is gone (an
    orphan is adopted by another process, so its parent pid changes)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def stop(pool: Pool | None) -> None:
    if pool is not None:
        pool.stop()


def write_parallel(
    pool: Pool,
    out: Path,
    writer,
    journal: dict[str, Any],
    source,
    split: str,
    count: int,
    kept: int,
    *,
    format: str,
    options: dict[str, Any],
    limit: int | None,
    progress,
    tally: TargetTally,
    stored: Schema,
    step: int,
) -> None:
    unit = writer.part_unit(step)
    spec = writer.part_spec(split)
    starts = iter(range(kept, count, unit))
    pending = deque()

    def submit():
        start = next(starts, None)
        if start is not None:
            stop = min(start + unit, count)
            # an absolute path: a --dask worker resolves it in its own working directory
            target = absolute(out)
            pending.append(
                (
                    start,
                    pool.submit(
                        _write_unit,
                        format,
                        str(target),
                        options,
                        source,
                        stored,
                        limit,
                        split,
                        step,
                        start,
                        stop,
                        spec,
                    ),
                )
            )

    for _ in range(2 * pool.width):
        submit()
    while pending:
        start, future = pending.popleft()
        y, result = future.result()
        tally.add(source.schema, y, where=source.name, split=split)
        with naming(lambda: writer.path_of(split, start)):
            writer.absorb_part(split, start, y, result)
        journal["targets"] = tally.to_json()
        commit(out, writer, journal, split, start + len(y))
        if progress:
            progress(split, start + len(y), count)
        submit()


def _write_unit(
    format: str,
    out: str,
    options: dict[str, Any],
    source,
    stored: Schema,
    limit: int | None,
    split: str,
    step: int,
    start: int,
    stop: int,
    spec: dict[str, Any],
) -> tuple[np.ndarray, Any]:
    """A task, in a worker: read samples ``[start, stop)`` of ``split`` and write their pieces; returns
    their labels and what the layout's ``absorb_part`` needs."""
    writer = get_format(format).Writer(Path(out), **options)
    xs, ys, n = [], [], 0
    chunks = source.iter_chunks(split, step, limit, start=start)
    try:
        for x, y in chunks:
            xs.append(x)
            ys.append(y)
            n += len(x)
            if n >= stop - start:
                break
    finally:
        chunks.close()
    if n < stop - start:
        raise SourceError(f"{source.name}: split {split} ended at sample {start + n}, expected {stop}")
    x, y = (np.concatenate(xs), np.concatenate(ys)) if len(xs) > 1 else (xs[0], ys[0])
    x, y = x[: stop - start], y[: stop - start]
    x = as_stored(source, stored, x, y, split=split, start=start)
    with naming(lambda: writer.path_of(split, start)):
        result = writer.write_part(split, start, x, y, spec)
    return y, result
