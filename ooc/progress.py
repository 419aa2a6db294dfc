"""Progress of long work (``ooc convert``, ``ooc verify``, ``ooc bench``), one mechanism for all.

A ``Reporter`` holds tasks (a conversion's split, the files of a verify, the phases of a bench run),
each with a total and a unit. On a terminal it draws a live ``rich.progress`` bar on its stream
(stderr); anywhere else (CI, ``| tee``, a log file) it writes plain lines, never a carriage return:
one when a task has gone ``STEP`` further or ``INTERVAL`` seconds longer since its last line (but
not within ``MIN_GAP`` seconds of it, so a short task does not fill a log, nor before there is a
rate to tell), and one when it ends.
Every line carries the same figures: done/total, the rate (units/s, MB/s when bytes are known),
the elapsed time and the ETA. ``quiet`` silences it all.

The figures are computed here, not by rich, so that the bar and the lines agree: the rate is the
mean since the task's baseline (its first update, for tasks that start with work done elsewhere,
such as the samples a resumed conversion kept), and the ETA is what is left at that rate.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

INTERVAL = 5.0  # seconds: a plain line at least this often while a task moves
STEP = 0.10  # share of a task: or after this much more of it
MIN_GAP = 1.0  # seconds: but never two lines of a task closer than this (except its last)
MB = 1e6


def duration(seconds: float | None) -> str:
    """H:MM:SS, as rich and Keras print durations; ``-:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def took(seconds: float) -> str:
    """How long something took: ``0.4 s`` under a minute, ``0:02:05`` above."""
    return f"{seconds:.1f} s" if seconds < 59.95 else duration(seconds)


def rate_text(count: float, seconds: float, unit: str = "samples", nbytes: float | None = None) -> str:
    """``5,321 samples/s, 4.2 MB/s``: how fast ``count`` units (and ``nbytes``) went in ``seconds``."""
    if seconds <= 0:
        return f"- {unit}/s"
    text = f"{count / seconds:,.0f} {unit}/s"
    return text + (f", {nbytes / MB / seconds:,.1f} MB/s" if nbytes is not None else "")


class Task:
    """One piece of long work; ``update`` it with how much is done, ``finish`` it once."""

    def __init__(
        self,
        reporter: Reporter,
        description: str,
        total: int,
        *,
        unit: str = "samples",
        total_bytes: int | None = None,
        baseline_on_first_update: bool = False,
        started: float | None = None,
        run_eta: bool = False,
    ):
        self.reporter, self.description, self.total, self.unit = reporter, description, total, unit
        self.run_eta = run_eta  # phases of a run: the lines say elapsed and the run's ETA only
        self.total_bytes = total_bytes
        self.started = time.perf_counter() if started is None else started
        self.done, self.done_bytes = 0, 0 if total_bytes is not None else None
        self._wait_for_baseline = baseline_on_first_update
        self._base = (self.started, 0, 0)  # (time, done, bytes) the rate is measured from
        self._last_line, self._last_fraction = self.started, 0.0
        self.finished = False
        self._id = reporter._add(self)

    # the figures
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _progress_share(self) -> float:
        if self.total_bytes:
            return min(1.0, (self.done_bytes or 0) / self.total_bytes)
        return min(1.0, self.done / self.total) if self.total else 1.0

    def rate(self) -> tuple[float | None, float | None]:
        """(units/s, bytes/s) since the baseline; None before there is anything to measure."""
        t0, d0, b0 = self._base
        seconds = time.perf_counter() - t0
        if seconds <= 0 or self.done <= d0 and (self.done_bytes or 0) <= b0:
            return None, None
        units = (self.done - d0) / seconds
        nbytes = None if self.done_bytes is None else (self.done_bytes - b0) / seconds
        return units, nbytes

    def eta(self) -> float | None:
        units, nbytes = self.rate()
        if self.total_bytes and nbytes:
            return (self.total_bytes - self.done_bytes) / nbytes
        if units:
            return (self.total - self.done) / units
        return None

    def figures(self) -> str:
        """``1,200/2,000 samples (60 %), 5,321 samples/s, elapsed 0:00:02, ETA 0:00:01``."""
        if self.run_eta:
            return f"elapsed {duration(self.elapsed)}, run ETA {duration(self.eta())}"
        parts = [f"{self.done:,}/{self.total:,} {self.unit}"]
        if self.total_bytes is not None:
            parts[0] += f", {(self.done_bytes or 0) / MB:,.1f}/{self.total_bytes / MB:,.1f} MB"
        parts[0] += f" ({self._progress_share() * 100:.0f} %)"
        units, nbytes = self.rate()
        if units is not None:
            parts.append(
                f"{units:,.0f} {self.unit}/s" + (f", {nbytes / MB:,.1f} MB/s" if nbytes is not None else "")
            )
        parts.append(f"elapsed {duration(self.elapsed)}")
        parts.append(f"ETA {duration(self.eta())}")
        return ", ".join(parts)

    def summary(self) -> str:
        """The task's last line: ``2,000 samples in 0:00:02 (5,321 samples/s)``."""
        units, nbytes = self.rate()
        if self.run_eta:
            return f"{self.done:,} {self.unit} in {took(self.elapsed)}"
        if (
            units is None and self.elapsed > 0
        ):  # one update only (a split of one chunk): its rate from the start
            units = self.done / self.elapsed
            nbytes = None if self.done_bytes is None else self.done_bytes / self.elapsed
        text = f"{self.done:,} {self.unit}" + (
            f", {(self.done_bytes or 0) / MB:,.1f} MB" if self.done_bytes is not None else ""
        )
        text += f" in {took(self.elapsed)}"
        if units is not None:
            text += (
                f" ({units:,.0f} {self.unit}/s"
                + (f", {nbytes / MB:,.1f} MB/s" if nbytes is not None else "")
                + ")"
            )
        return text

    # the updates
    def update(
        self,
        done: int,
        *,
        done_bytes: int | None = None,
        description: str | None = None,
        force_line: bool = False,
    ) -> None:
        if self.finished:
            return
        self.done = done
        if done_bytes is not None:
            self.done_bytes = done_bytes
        if description is not None:
            self.description = description
        now = time.perf_counter()
        if self._wait_for_baseline:
            self._wait_for_baseline = False
            self._base = (now, done, self.done_bytes or 0)
        if (
            self.total
            and done >= self.total
            and (self.total_bytes is None or (self.done_bytes or 0) >= self.total_bytes)
        ):
            self.finish()
            return
        share = self._progress_share()
        measured = (
            self.rate()[0] is not None
        )  # a line without a rate (at the baseline) says little: wait for one
        due = (
            force_line
            or measured
            and (
                now - self._last_line >= INTERVAL
                or (share - self._last_fraction >= STEP and now - self._last_line >= MIN_GAP)
            )
        )
        self.reporter._show(self, line_due=due)
        if due:
            self._last_line, self._last_fraction = now, share

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.reporter._show(self, line_due=True, last=True)


class Reporter:
    """Where tasks show: a live rich bar on a terminal, plain lines elsewhere, nothing when quiet.

    Use it as a context manager around the work (the live bar stops on the way out, even on an
    error, so that the error prints below it)."""

    def __init__(self, *, quiet: bool = False, stream: IO[str] | None = None, live: bool | None = None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.live = (not quiet) and (self.stream.isatty() if live is None else live)
        self._bar = None
        self.tasks: list[Task] = []

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[figures]}"),
                console=Console(file=self.stream),
            )  # prints of the work go above the bar
            self._bar.start()
        return self

    def __exit__(self, kind, *exc) -> None:
        if (
            kind is None
        ):  # a task the work did not bring to its total (a verify that found a file missing) ends here
            for task in self.tasks:
                task.finish()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def task(self, description: str, total: int, **options: Any) -> Task:
        """A new task (see ``Task`` for ``unit``, ``total_bytes``, ``baseline_on_first_update``)."""
        return Task(self, description, total, **options)

    def note(self, line: str) -> None:
        """A message of the work itself (the bench's findings): above the bar, or one more line."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def _add(self, task: Task) -> Any:
        self.tasks.append(task)
        if self._bar is not None:
            return self._bar.add_task(task.description, total=max(task.total, 1), completed=0, figures="")
        return None

    def _show(self, task: Task, *, line_due: bool, last: bool = False) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(
                task._id,
                description=task.description,
                completed=task.done if task.total else 1,
                figures=task.summary() if last else task.figures(),
            )
        elif line_due:
            print(
                f"{task.description}: {task.summary() if last else task.figures()}",
                file=self.stream,
                flush=True,
            )

    # adapters to the library's callbacks
    def conversion(self, what: str = "convert") -> Callable[[str, int, int], None]:
        """The ``progress(split, done, count)`` callback of ``ooc.convert.convert``: one task per split.

        A split's first call is its baseline (the samples a resumed run kept, or the first chunk),
        so the rate counts only what is timed; its elapsed time runs from the previous split's end."""
        tasks: dict[str, Task] = {}
        clock = [time.perf_counter()]

        def progress(split: str, done: int, count: int) -> None:
            task = tasks.get(split)
            if task is None:
                task = tasks[split] = self.task(
                    f"{what} {split}", count, baseline_on_first_update=True, started=clock[0]
                )
            task.update(done)
            if task.finished or done >= count:
                task.finish()
                clock[0] = time.perf_counter()

        return progress

    def phases(self, what: str = "bench") -> Callable[[int, int, str], None]:
        """A ``phase(index, total, name)`` callback (``ooc.benchmark.run.run_bench``): one task of ``total``
        phases, a line as each starts, the run's ETA from the mean time of the phases done."""
        state: dict[str, Task] = {}

        def phase(index: int, total: int, name: str) -> None:
            task = state.get("run")
            if task is None:
                task = state["run"] = self.task(what, total, unit="phases", run_eta=True)
            if index > total:
                task.update(total, description=what)
                return
            task.update(index - 1, description=f"{what} phase {index}/{total}: {name}", force_line=True)

        return phase

    def verification(self, what: str = "verify") -> Callable[[int, int, int, int], None]:
        """The ``progress(files_done, files, bytes_done, bytes)`` callback of ``ooc.verify.verify``:
        one task of files, its ETA from the bytes left to checksum."""
        state: dict[str, Task] = {}
        started = time.perf_counter()

        def progress(files_done: int, files: int, bytes_done: int, nbytes: int) -> None:
            task = state.get("files")
            if task is None:
                task = state["files"] = self.task(
                    what, files, unit="files", total_bytes=nbytes, started=started
                )
            task.update(files_done, done_bytes=bytes_done)

        return progress
