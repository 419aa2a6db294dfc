"""Out of core for real (``ooc bench --memory-limit``): passes over stores several times larger than
the memory they may use, each in a child process placed in a memory cgroup of that limit.

For each layout the parent converts a store ``--repeat`` copies of the source large (its train split
at least ``factor`` times the limit, in stored bytes: zarr's compressed ones), then runs one child
in a fresh cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``; the cgroup is removed after).
The child, before anything else, waits until the parent has written its pid into the cgroup, so
every page it touches (its imports, the page cache of its reads) counts against the limit. It then
measures, each pass after evicting the store from the page cache (``ooc.benchmark.run.evict_from_page_cache``,
as the bench's cold passes do) and each for at most ``seconds``:

- the disk's sequential bandwidth: a direct-I/O read (``O_DIRECT``, page-aligned buffers from
  ``mmap``) of the store's own files, which bypasses the page cache;
- the chunk shuffle with the read-ahead hints (``Store.will_need``, what ``ooc.batches`` does) and
  without them, and the exact global shuffle, each through ``read_ahead`` without prefetch (the
  loader alone, as the bench's read passes);
- optionally (``training``, a second child: TensorFlow's own memory would count in the reads' peak)
  ``train_on_batch`` per sample from the store against the same model and batch size from in-memory
  arrays of a subset that fits (``TRAINING_SUBSET`` samples).

Peak memory is the cgroup's own counter (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``:
anonymous memory and the page cache charged to the cgroup, so a pass that streams the disk peaks
near the limit) beside the child's own peak resident set (``ru_maxrss``).
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ooc.benchmark.measure import evict_from_page_cache
from ooc.benchmark.rows import OutOfCore
from ooc.benchmark.shuffle_quality import ORDERS, expected_global_tv, shuffle_quality
from ooc.convert import convert, remove_store
from ooc.core.startup import import_tensorflow_quietly
from ooc.core.units import human_bytes
from ooc.errors import OocError, OptionError
from ooc.formats import FORMATS, get_format
from ooc.formats.base import ParallelParts
from ooc.formats.chunked import CACHE_CHUNKS
from ooc.fs import disk_usage
from ooc.loader import batches, hint_ahead, read_ahead
from ooc.models import Task, resolve_model
from ooc.sampling import SHUFFLE_BUFFER_CHUNKS, epoch_batches
from ooc.sources import as_source
from ooc.stores import MemoryStore, open_store

CGROUP_ROOT = Path("/sys/fs/cgroup")
TRAINING_SUBSET = 10_000  # samples of the in-memory side of the training ratio
DIRECT_BLOCK = 8 << 20  # bytes per O_DIRECT read


def out_of_core_formats() -> tuple[str, ...]:
    """The layouts that declare themselves read out of core (``LayoutOptions.out_of_core``); asked in
    the parent only: a child imports no layout it does not read, its memory is what is measured."""

    return tuple(sorted(name for name in FORMATS if get_format(name).OPTIONS.out_of_core))


# -- memory cgroups --------------------------------------------------------------------------------


class MemoryCgroup:
    """A memory cgroup made for one child process under ``root`` (default ``CGROUP_ROOT``): cgroup v2
    where the root lists the memory controller, else v1's ``memory`` hierarchy. ``create`` raises
    ``OSError`` (with ``reason`` saying what failed) where cgroups cannot be written."""

    def __init__(self, limit: int, *, root: Path | None = None, name: str | None = None):
        self.limit, self.root = limit, Path(root or CGROUP_ROOT)
        self.name = name or f"ooc-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.version, self.path = None, None

    def _where(self) -> tuple[int, Path]:
        controllers = self.root / "cgroup.controllers"
        if controllers.is_file() and "memory" in controllers.read_text().split():
            return 2, self.root
        if (self.root / "memory" / "memory.limit_in_bytes").is_file():
            return 1, self.root / "memory"
        raise OSError(errno.ENOENT, f"no memory controller under {self.root} (neither cgroup v2 nor v1)")

    def create(self) -> MemoryCgroup:
        version, parent = self._where()
        if version == 2:
            subtree = parent / "cgroup.subtree_control"
            if "memory" not in subtree.read_text().split():
                subtree.write_text("+memory")
        path = parent / self.name
        path.mkdir()
        self.version, self.path = version, path
        try:
            if version == 2:
                (path / "memory.max").write_text(str(self.limit))
                _try_write(path / "memory.swap.max", "0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(self.limit))
                _try_write(path / "memory.memsw.limit_in_bytes", str(self.limit))  # no swapping out of it
        except OSError:
            self.remove()
            raise
        return self

    def add(self, pid: int) -> None:
        (self.path / ("cgroup.procs" if self.version == 2 else "tasks")).write_text(str(pid))

    def peak(self) -> int | None:
        """The most memory the cgroup held (anonymous and page cache), None where not counted."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # a child just killed may take a moment to leave
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        self.path = None


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass  # no swap accounting: nothing to limit


def cgroups_unavailable(root: Path | None = None) -> str | None:
    """Why a memory cgroup cannot be made here (one line), or None: one is made and removed."""
    try:
        MemoryCgroup(1 << 30, root=root).create().remove()
    except OSError as error:
        return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return None


_CHILD = "import sys; sys.stdin.readline(); from ooc.benchmark.out_of_core import _child_main; _child_main()"


def run_limited(task: dict[str, Any], limit: int, *, root: Path | None = None) -> dict[str, Any]:
    """Run ``task`` (``_child_main``'s) in a child process inside a fresh memory cgroup of ``limit``
    bytes; its result, with ``cgroup_peak`` and ``cgroup`` (the version). A child the OOM killer
    ends gives ``{"killed": ...}``."""
    cgroup = MemoryCgroup(limit, root=root).create()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(task)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cgroup.add(child.pid)
        out, err = child.communicate("go\n")
        peak = cgroup.peak()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        cgroup.remove()
    if child.returncode != 0:
        last = (err.strip().splitlines() or [""])[-1][:200]
        why = (
            f"was killed by signal {-child.returncode} (the OOM killer at this limit?)"
            if child.returncode < 0
            else f"failed: {last}"
        )
        return {"killed": why, "cgroup_peak": peak, "cgroup": cgroup.version}
    return {**json.loads(out.strip().splitlines()[-1]), "cgroup_peak": peak, "cgroup": cgroup.version}


# -- what the child measures ----------------------------------------------------------------------


def direct_read_bandwidth(files: list[Path], *, seconds: float) -> float | None:
    """MB/s of a sequential direct-I/O read of ``files`` (in order, for at most ``seconds``): the
    disk's own speed, the page cache bypassed. None where the filesystem refuses ``O_DIRECT``."""
    if not hasattr(os, "O_DIRECT"):
        return None
    buffer = mmap.mmap(-1, DIRECT_BLOCK)  # page-aligned, as O_DIRECT wants
    total, start = 0, time.perf_counter()
    try:
        for file in files:
            try:
                fd = os.open(file, os.O_RDONLY | os.O_DIRECT)
            except OSError as error:
                if error.errno == errno.EINVAL:
                    return None  # tmpfs and the like
                raise
            try:
                while True:
                    got = os.readv(fd, [buffer])
                    total += got
                    if got < DIRECT_BLOCK or time.perf_counter() - start > seconds:
                        break
            except OSError as error:
                if error.errno == errno.EINVAL:
                    return None
                raise
            finally:
                os.close(fd)
            if time.perf_counter() - start > seconds:
                break
    finally:
        buffer.close()
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6 if elapsed > 0 and total else None


def data_files(path: Path) -> list[Path]:
    """The store's files, in path order (the files a pass over it reads, and a few small ones)."""
    return sorted(Path(root) / name for root, _, names in os.walk(path) for name in names)


def _timed_pass(batches, seconds: float) -> dict[str, float]:
    samples, start = 0, time.perf_counter()
    for _, y in batches:
        samples += len(y)
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    return {"samples": samples, "seconds": elapsed, "samples_per_second": samples / elapsed}


def child_reads(task: dict[str, Any]) -> dict[str, Any]:
    """The disk's bandwidth, then each pass of ``task["passes"]`` (name, shuffle, hints, chunks per
    stretch, chunks cached), each cold."""

    path, seconds, batch_size = Path(task["path"]), task["seconds"], task["batch_size"]
    result: dict[str, Any] = {"passes": {}}
    if task.get("disk", True):
        evict_from_page_cache(path)
        result["disk_mb_per_second"] = direct_read_bandwidth(data_files(path), seconds=seconds)
    for name, shuffle, hints, stretch, cache in task["passes"]:
        evict_from_page_cache(path)
        with open_store(path) as store:
            if store.chunk_size is not None:
                store.cache_chunks = cache
            plan = epoch_batches(
                store.num_samples("train"),
                batch_size=batch_size,
                shuffle=shuffle,
                seed=task["seed"],
                chunk_size=store.shuffle_unit,
                stretch_chunks=stretch,
            )
            hint = store.will_need if hints else None
            reads = read_ahead(
                store.read,
                "train",
                plan,
                0,
                will_need=hint,
                ahead=hint_ahead(store, batch_size, stretch, shuffle=shuffle),
            )
            result["passes"][name] = _timed_pass(reads, seconds)
    return result


def child_training(task: dict[str, Any]) -> dict[str, Any]:
    """Seconds per sample of ``train_on_batch`` from in-memory arrays of a subset, then from the
    store (chunk shuffle, ``ooc.batches`` with its prefetch and hints, cold), same model and batch."""
    import numpy as np

    path, seconds, batch_size = Path(task["path"]), task["seconds"], task["batch_size"]
    store = open_store(path)
    subset = min(TRAINING_SUBSET, store.num_samples("train"))
    memory = MemoryStore(
        {"train": store.read_stored("train", np.arange(subset))}, name="subset", schema=store.schema
    )
    net = resolve_model(
        task["model"], input_shape=store.sample_shape, task=Task.of(store.schema), learning_rate=1e-3
    )

    def per_sample(source, epochs_needed: bool) -> float:
        def endless():
            for epoch in range(1_000_000 if epochs_needed else 1):
                yield from batches(
                    source, "train", batch_size=batch_size, shuffle="chunk", seed=task["seed"], epoch=epoch
                )

        stream = endless()
        for _ in range(3):  # tracing and warm-up, untimed
            x, y = next(stream)
            net.train_on_batch(x, y)
        samples, start = 0, time.perf_counter()
        for x, y in stream:
            net.train_on_batch(x, y)
            samples += len(y)
            if time.perf_counter() - start > seconds:
                break
        return (time.perf_counter() - start) / samples

    in_memory = per_sample(memory, True)
    evict_from_page_cache(path)
    from_store = per_sample(store, False)
    return {
        "memory_samples_per_second": 1 / in_memory,
        "store_samples_per_second": 1 / from_store,
        "ratio": from_store / in_memory,
    }


def _child_main() -> None:
    import resource

    task = json.loads(sys.argv[1])
    if task["kind"] == "training":
        import_tensorflow_quietly()
    result = (child_training if task["kind"] == "training" else child_reads)(task)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


# -- the parent: stores, children, rows ------------------------------------------------------------


def copies_for(bytes_per_copy: int, limit: int, factor: float) -> int:
    """Copies of the source (``convert --repeat``) whose train split holds ``factor`` × ``limit`` bytes."""
    return max(2, math.ceil(factor * limit / max(bytes_per_copy, 1)))


def train_bytes(path: Path) -> int:
    """Stored bytes of a store's train split: its allocated bytes on disk × the train split's share of
    the samples (each copy of every split is stored alike)."""

    store = open_store(path)
    counts = {split: store.num_samples(split) for split in store.splits}
    return round(disk_usage(path)[1] * counts["train"] / sum(counts.values()))


# stretch sizes (chunks) of the trade-off table; each caches twice its stretch, as the default does
TRADEOFF_STRETCHES = (2, 4, 8, 16, 32)


def measure_out_of_core(
    stores_dir: Path,
    source,
    *,
    memory_limit: int,
    factor: float,
    formats: list[str],
    limit: int | None,
    batch_size: int,
    model: str,
    seed: int,
    seconds: float,
    training: bool,
    progress,
    root: Path | None = None,
) -> dict[str, Any]:
    """The report's ``out_of_core`` entry: an ``OutOfCore`` row per layout of ``formats`` that
    ``out_of_core_formats()`` names, and the shuffle-quality and stretch × cache tables (their reads
    measured out of core on zarr, or the first layout). Where no memory cgroup can be made, one line
    says why and the entry has no rows."""
    entry: dict[str, Any] = {
        "memory_limit": memory_limit,
        "factor": factor,
        "pass_seconds": seconds,
        "batch_size": batch_size,
        "rows": [],
        "skipped": None,
    }
    measured = out_of_core_formats()
    chosen = [f for f in formats if f in measured]
    if not chosen:
        raise OptionError(f"--memory-limit measures {', '.join(measured)}: include one in --formats")
    reason = cgroups_unavailable(root)
    if reason is not None:
        entry["skipped"] = reason
        progress(f"out of core: skipped, cannot make a memory cgroup ({reason})")
        return entry
    quality_layout = "zarr" if "zarr" in chosen else chosen[0]
    for fmt in chosen:
        path, copies = _sized_store(stores_dir, source, fmt, memory_limit, factor, limit, progress)

        store = open_store(path)
        passes = _passes(store, quality=fmt == quality_layout)
        progress(
            f"out of core: {fmt}, {human_bytes(train_bytes(path))} of train samples under a "
            f"{human_bytes(memory_limit)} limit ({len(passes)} passes of at most {seconds:g} s)"
        )
        task = {
            "kind": "reads",
            "path": str(path),
            "seconds": seconds,
            "batch_size": batch_size,
            "seed": seed,
        }
        reads = _passes_apart(task, passes, memory_limit, root)
        entry["cgroup"] = reads["cgroup"]
        if "killed" in reads:
            progress(f"  {fmt}: a reading process {reads['killed']}")
            continue
        row = _reads_row(fmt, path, store, copies, memory_limit, reads, progress)
        if training:
            _measure_training(row, {**task, "kind": "training", "model": model}, memory_limit, root, progress)
        entry["rows"].append(row)
        if fmt == quality_layout:
            entry["quality"] = quality_tables(
                source,
                limit=limit,
                batch_size=batch_size,
                seed=seed,
                store=store,
                passes=reads["passes"],
                layout=fmt,
            )
    return entry


def _passes(store, *, quality: bool) -> list[tuple]:
    """(name, shuffle, hints, chunks per stretch, chunks cached) of each pass over ``store``; the
    layout the quality tables use also reads sequentially and at every stretch size."""

    default = (SHUFFLE_BUFFER_CHUNKS, CACHE_CHUNKS)
    passes = [("chunk", "chunk", True, *default), ("chunk_no_read_ahead", "chunk", False, *default)]
    passes.append(("global", "global", True, *default))
    if quality:
        passes.append(("sequential", "none", True, *default))
        if store.chunk_size is not None:
            stretches = [s for s in TRADEOFF_STRETCHES if s != SHUFFLE_BUFFER_CHUNKS]
            passes += [(f"stretch{s}", "chunk", True, s, 2 * s) for s in stretches]
    return passes


def _reads_row(fmt, path, store, copies, memory_limit, reads, progress):
    """The ``OutOfCore`` row of a layout's read passes (stored bytes per sample: the store's own)."""

    p, disk = reads["passes"], reads["disk_mb_per_second"]
    n, stored = store.num_samples("train"), train_bytes(path)
    per_sample = stored / n
    chunk, plain, glob = (p[k]["samples_per_second"] for k in ("chunk", "chunk_no_read_ahead", "global"))
    row = OutOfCore(
        name=fmt,
        format=fmt,
        copies=copies,
        train_samples=n,
        store_bytes=disk_usage(path)[1],
        train_bytes=stored,
        memory_limit=memory_limit,
        disk_mb_per_second=disk,
        samples_per_second=chunk,
        mb_per_second=chunk * per_sample / 1e6,
        disk_share=chunk * per_sample / 1e6 / disk if disk else None,
        samples_per_second_no_read_ahead=plain,
        read_ahead_gain=chunk / plain,
        global_samples_per_second=glob,
        global_to_chunk=glob / chunk,
        samples_read=p["chunk"]["samples"],
        peak_memory_mb=reads["cgroup_peak"] / 1e6 if reads["cgroup_peak"] else None,
        peak_rss_mb=reads["peak_rss"] / 1e6,
    )
    share = f"{row.disk_share:.2f} of the disk's {disk:,.0f} MB/s" if disk else "no O_DIRECT here"
    progress(
        f"  {fmt}: chunk shuffle {chunk:,.0f} samples/s, {row.mb_per_second:,.0f} MB/s stored ({share}); "
        f"without read-ahead {plain:,.0f} ({row.read_ahead_gain:.2f} x); global shuffle {glob:,.0f} "
        f"({row.global_to_chunk:.2f} x chunk)"
    )
    return row


def _measure_training(row, task, memory_limit, root, progress) -> None:
    """The training ratio of ``row``'s store, in a child under the same limit."""
    done = run_limited(task, memory_limit, root=root)
    if "killed" in done:
        row.training_note = f"the training process {done['killed']}"
        progress(f"  {row.name}: {row.training_note}")
        return
    row.training_ratio = done["ratio"]
    row.training_samples_per_second = done["store_samples_per_second"]
    row.memory_training_samples_per_second = done["memory_samples_per_second"]
    row.training_peak_memory_mb = done["cgroup_peak"] / 1e6 if done["cgroup_peak"] else None
    progress(
        f"  {row.name}: training {done['ratio']:.2f} x in-memory arrays of {TRAINING_SUBSET:,} samples "
        f"({done['store_samples_per_second']:,.0f} against {done['memory_samples_per_second']:,.0f} samples/s)"
    )


def _passes_apart(task: dict[str, Any], passes: list, limit: int, root: Path | None) -> dict[str, Any]:
    """Each pass in its own child and cgroup (the first also measures the disk): what one pass
    leaves behind (a plan's temporaries, a fragmented heap) never counts against the next. The peaks
    are the largest of the passes'."""
    merged: dict[str, Any] = {"passes": {}, "peak_rss": 0, "cgroup_peak": 0}
    for i, one in enumerate(passes):
        done = run_limited({**task, "passes": [one], "disk": i == 0}, limit, root=root)
        merged["cgroup"] = done["cgroup"]
        if "killed" in done:
            return {**done, "killed": f"({one[0]} pass) {done['killed']}"}
        if i == 0:
            merged["disk_mb_per_second"] = done["disk_mb_per_second"]
        merged["passes"].update(done["passes"])
        merged["peak_rss"] = max(merged["peak_rss"], done["peak_rss"])
        merged["cgroup_peak"] = max(merged["cgroup_peak"], done["cgroup_peak"] or 0) or None
    return merged


def quality_tables(
    source, *, limit, batch_size: int, seed: int, store, passes, layout: str
) -> dict[str, Any]:
    """Shuffle quality (mode × order) and the stretch × cache trade-off, on the source's train labels
    (one copy: the copies of a larger store mix alike) with the store's chunk size, beside the reads/s
    measured out of core on ``store`` and the decoded-chunk cache's size."""

    labels = MemoryStore.from_source(as_source(source), limit=limit).labels("train")
    chunk = store.chunk_size
    chunk_mb = (chunk or 0) * math.prod(store.sample_shape) * store.schema.dtype.itemsize / 1e6
    rate = {"none": "sequential", "chunk": "chunk", "global": "global"}
    modes = []
    for mode in ("none", "chunk", "global"):
        for order in ORDERS:
            q = shuffle_quality(
                labels, mode=mode, batch_size=batch_size, chunk_size=chunk, seed=seed, order=order
            )
            modes.append(
                {
                    **_as_dict(q),
                    "samples_per_second": passes[rate[mode]]["samples_per_second"],
                    "cache_mb": CACHE_CHUNKS * chunk_mb,
                }
            )
    tradeoff = []
    if chunk:
        for s in TRADEOFF_STRETCHES:
            name = "chunk" if s == SHUFFLE_BUFFER_CHUNKS else f"stretch{s}"
            row = {"stretch_chunks": s, "cache_chunks": 2 * s, "cache_mb": 2 * s * chunk_mb}
            for order in ORDERS:
                q = shuffle_quality(
                    labels,
                    mode="chunk",
                    batch_size=batch_size,
                    chunk_size=chunk,
                    seed=seed,
                    order=order,
                    stretch_chunks=s,
                )
                row[order] = _as_dict(q)
            row["samples_per_second"] = passes[name]["samples_per_second"]
            tradeoff.append(row)
    expected = (
        expected_global_tv(labels, batch_size) if labels.ndim == 1 and labels.dtype.kind in "iu" else None
    )
    return {
        "layout": layout,
        "chunk_size": chunk,
        "labels": len(labels),
        "expected_global_tv": expected,
        "modes": modes,
        "tradeoff": tradeoff,
    }


def _as_dict(quality) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(quality)


def _sized_store(stores_dir: Path, source, fmt: str, limit: int, factor: float, sample_limit, progress):
    """A store of ``fmt`` whose train split holds at least ``factor`` × ``limit`` stored bytes: one copy
    of the source is converted to measure a copy's bytes, then ``convert --repeat`` the copies needed
    (a store of that many copies of the same source, kept from an earlier run, is reused)."""

    probe = stores_dir / f"out-of-core-{fmt}-x1"
    remove_store(probe)
    convert(probe, format=fmt, source=source, limit=sample_limit)
    copies = copies_for(train_bytes(probe), limit, factor)
    with open_store(probe) as one_copy:
        identity = {k: v for k, v in one_copy.manifest["source"].items() if k != "repeat"}
    remove_store(probe)
    path = stores_dir / f"out-of-core-{fmt}-x{copies}"
    try:
        kept = open_store(path).manifest["source"]
        if kept.get("repeat") == copies and {k: v for k, v in kept.items() if k != "repeat"} == identity:
            progress(f"out of core: {path} kept from an earlier run ({copies} copies of the source)")
            return path, copies
    except OocError:  # none there yet, or not a whole store: convert it
        pass
    progress(f"out of core: converting {fmt} with --repeat {copies} into {path}")
    remove_store(path)
    jobs = 2 if issubclass(get_format(fmt).Writer, ParallelParts) else 1
    convert(path, format=fmt, source=source, limit=sample_limit, repeat=copies, jobs=jobs)
    return path, copies
