"""Converting a source into a store: stream chunks to a layout's writer, then write the manifest.

A conversion may be stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a full disk); running it again
with the same arguments resumes it. While it runs, ``ooc.partial`` is its journal::

    {"ooc_journal_version": 1, "format": "zarr", "options": {"chunk_size": 1024, ...},
     "source": {"path": ..., "sha256": ..., "limit": null, "repeat": 1, "size": null}, "label_max": 9,
     "splits": {"train": {"count": 60000, "done": 24576, "state": {...},
                          "files": {"train/x/c/0/0/0": "<crc32> <size>", ...}}}}

Samples are committed one source read at a time (``READ_CHUNK_SAMPLES``, whole chunks): the writer
hands them to the OS (``Writer.commit``), the files that no later write changes are checksummed, then
the journal is replaced atomically (written beside, renamed over). The manifest comes last, so
``open_store`` sees a complete store or refuses an incomplete one, never anything in between.

Resuming checks that the journal was made with the same format, options, source (its sha256),
limit, repeat and size; re-checks every kept file against its checksum (a split with a changed or
missing file starts over); lets the layout reopen the split (``Writer.resume_split``: zarr, npy and
csv go on after the last committed sample, tfrecord after the last completed shard; hdf5 and
parquet rewrite a file that was killed mid-write); and reads the source from there.

With ``jobs`` > 1 (local processes) or ``dask`` (a cluster) the same commit units are written by
workers (``Writer.write_part``; csv, zarr, npy, tfrecord) and committed here in sample order, so the
journal, resuming and the files are as with one process (see ``_write_parallel``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ooc import __version__
from ooc.errors import ConversionInterrupted, OocError, OptionError, SourceError, StoreExistsError, WriteError
from ooc.formats import get_format
from ooc.formats.base import ParallelParts, Resumable
from ooc.manifest import (
    CHECKSUM_ALGORITHM,
    MANIFEST_NAME,
    PARTIAL_NAME,
    file_checksum,
    is_bookkeeping,
    manifest_path,
    write_manifest,
)
from ooc.remote import REMOTE_FORMATS, URL, location, require_local
from ooc.schema import Schema, TargetTally, check_chunk
from ooc.sources import RepeatedSource, Source, SourceOptions, as_source, parse_size

# Source chunks hold at least this many samples (rounded up to whole store chunks): big enough to
# amortise per-call costs, small enough that memory stays flat whatever the dataset's size. Each is
# also the unit a conversion commits, and resumes from.
READ_CHUNK_SAMPLES = 8192
JOURNAL_VERSION = 1


def convert(
    out: str | os.PathLike,
    *,
    format: str,
    source: Source | str | os.PathLike | None = None,
    limit: int | None = None,
    chunk_size: int | None = None,
    shard_size: int | None = None,
    compression: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    repeat: int = 1,
    size: int | tuple[int, int] | str | None = None,
    source_options: SourceOptions | None = None,
    jobs: int = 1,
    dask: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``source`` (default: the bundled MNIST) to a new ``format`` store at ``out``, or finish
    the interrupted conversion with the same arguments there (``overwrite`` starts over instead).

    ``size`` (N, (H, W) or "HxW") resizes the images of an image-folder source; ``source_options``
    (``ooc.sources.SourceOptions``) say how to read other sources: targets file, array names,
    target column and kind, colour, test fraction, and the write order (``order="auto"`` shuffles a
    source that can be read in any order, so that a class-by-class source never trains as one).

    ``jobs`` > 1 writes with that many local processes, ``dask`` (a scheduler address) with the
    workers of a Dask cluster that share the filesystem: the same files, byte for byte, as one
    process writes (layouts whose pieces are separate files: csv, zarr, npy, tfrecord).

    Returns the manifest. Ctrl-C raises ``ConversionInterrupted`` (a KeyboardInterrupt) and a
    failed write ``WriteError`` (an OSError) naming the file: both keep what was committed, for the
    next run to resume. A source that cannot be converted removes the partial store.
    """
    layout = get_format(format)
    options = layout.OPTIONS.resolve(
        format, chunk_size=chunk_size, compression=compression, shard_size=shard_size
    )
    if limit is not None and limit < 1:
        raise OptionError(f"--limit must be a positive number of samples, got {limit}")
    if repeat < 1:
        raise OptionError(f"--repeat must be a positive number of copies, got {repeat}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise OptionError(f"--jobs must be a positive number of processes, got {jobs}")
    if dask is not None and jobs > 1:
        raise OptionError("pass --jobs N (local processes) or --dask ADDRESS (a Dask cluster), not both")
    if (jobs > 1 or dask is not None) and not issubclass(layout.Writer, ParallelParts):
        what = f"--jobs {jobs}" if dask is None else f"--dask {dask}"
        raise OptionError(
            f"{what}: {format} cannot be written in parallel: it is {layout.Writer.one_process_because}; "
            f"convert it with one process: {'--jobs 1 (the default)' if dask is None else 'without --dask'}"
        )
    size = parse_size(size)
    source_options = replace(source_options or SourceOptions(), size=size)
    source = as_source(source, options=source_options)
    if repeat > 1:
        source = RepeatedSource(source, repeat)
    options["dtype"] = layout.OPTIONS.stored_dtype(format, source.schema, dtype)
    stored = source.schema.with_stored_dtype(options["dtype"])
    out = location(out, storage_options)  # a URL (s3://…) stays a string carrying its storage options
    if isinstance(out, URL):
        _check_remote(out, format, jobs=jobs, dask=dask)
    pool = (
        _Pool(jobs, dask) if jobs > 1 or dask is not None else None
    )  # connects to --dask before anything is written
    try:
        journal = _open_output(out, overwrite=overwrite)  # refuses before the source is read for its checksum
        started = time.perf_counter()
        identity = {
            "format": format,
            "options": options,
            "source": {
                "path": str(getattr(source, "path", source.name)),
                "sha256": source.sha256(),
                "limit": limit,
                "repeat": repeat,
                "size": None if size is None else list(size),
                **_read_as(source_options),
            },
        }
        if journal is None:
            if not isinstance(out, URL):  # object stores have no directories
                with _naming(lambda: out):
                    out.mkdir(parents=True, exist_ok=True)
            journal = {
                "ooc_journal_version": JOURNAL_VERSION,
                **identity,
                "targets": TargetTally().to_json(),
                "splits": {},
            }
            _write_journal(out, journal)
        else:
            _check_resumable(out, journal, identity)
    except BaseException:
        _stop(pool)
        raise
    writer = None
    resumed = {}
    tally = TargetTally.from_json(journal.get("targets", {}))
    try:
        writer = layout.Writer(out, **options)
        for split in source.splits:
            copies = repeat if split == "train" else 1
            count = (
                source.num_samples(split)
                if limit is None
                else min(limit, source.num_samples(split) // copies) * copies
            )
            resuming = split in journal["splits"]
            kept = _open_split(out, writer, journal, split, count, stored)
            if resuming and kept:
                resumed[split] = kept
            if progress and kept:
                progress(split, kept, count)
            if resuming and kept == count and count:
                continue  # finished by the interrupted run
            done = kept
            if pool is not None:  # the same units, written by workers; committed here in order
                _write_parallel(
                    pool,
                    out,
                    writer,
                    journal,
                    source,
                    split,
                    count,
                    kept,
                    format=format,
                    options=options,
                    limit=limit,
                    progress=progress,
                    tally=tally,
                    stored=stored,
                )
            for x, y in (
                source.iter_chunks(split, _read_step(options["chunk_size"]), limit, start=kept)
                if pool is None
                else ()
            ):
                x = _as_stored(source, stored, x, y, split=split, start=done)
                tally.add(source.schema, y, where=source.name, split=split)
                with _naming(lambda: writer.path_of(split, done)):
                    writer.write(split, done, x, y)
                done += len(x)
                journal["targets"] = tally.to_json()
                _commit(out, writer, journal, split, done)
                if progress:
                    progress(split, done, count)
            if not count:
                _commit(out, writer, journal, split, 0)
        _stop(pool)
        with _naming(lambda: out):
            writer.close()
        manifest = {
            "format": format,
            "created_by": f"ooc {__version__}",
            "splits": {split: {"count": entry["count"]} for split, entry in journal["splits"].items()},
            **tally.finish(stored).to_manifest(),
            "order": {**source.order, **({"grouped_by_class": True} if tally.grouped_by_class() else {})},
            "options": options,
            "source": identity["source"],
            "conversion_seconds": round(time.perf_counter() - started, 3),
        }
        if resumed:  # samples kept from the interrupted run; conversion_seconds counts this run only
            manifest["resumed"] = resumed
        manifest["checksums"] = {"algorithm": CHECKSUM_ALGORITHM, "files": _checksums(out, journal)}
        with _naming(lambda: manifest_path(out)):
            write_manifest(out, manifest)
        _unlink(out / PARTIAL_NAME)
    except KeyboardInterrupt:
        _stop(pool)  # first: no worker writes on once this returns
        _abort(writer)
        fix = (
            "re-run the same command with --overwrite to start over (conversions to object storage do not "
            "resume)"
            if isinstance(out, URL)
            else "re-run the same command to resume, or pass --overwrite to start over"
        )
        raise ConversionInterrupted(f"{out} is incomplete ({_committed(journal)}); {fix}") from None
    except OocError as error:
        _stop(pool)
        _abort(writer)
        if not isinstance(error, WriteError):  # the source or an option is wrong: re-running cannot finish
            _rmtree(out)
        raise
    except BaseException:
        _stop(pool)
        _abort(writer)
        raise
    return manifest


def _read_as(options: SourceOptions) -> dict[str, Any]:
    """The source options that change what is read (for the manifest, and to refuse resuming with others)."""
    defaults = asdict(SourceOptions())
    return {
        key: str(value) if isinstance(value, os.PathLike) else value
        for key, value in asdict(options).items()
        if key != "size" and value != defaults[key]
    }


def _as_stored(source, stored: Schema, x: np.ndarray, y: np.ndarray, *, split: str, start: int) -> np.ndarray:
    """A source chunk, checked against what the source declares, in the stored dtype (pixels stored
    decoded are the one conversion ooc makes, and the manifest says so)."""
    check_chunk(source.schema, x, y, where=source.name, split=split, start=start)
    return source.schema.decoded(x) if stored.dtype != source.schema.dtype else x


def _open_split(out: Path, writer, journal: dict[str, Any], split: str, count: int, schema: Schema) -> int:
    """Begin ``split``, or reopen it where the journal says the interrupted run got to (after
    re-checking the files it kept); returns the first sample still to write."""
    entry = journal["splits"].get(split)
    if entry is None or entry["count"] != count or not isinstance(writer, Resumable):
        with _naming(lambda: writer.path_of(split, 0)):
            writer.begin_split(split, count, schema)
        start, kept = 0, {}
    else:
        done = entry["done"] if _intact(out, entry["files"]) else 0
        with _naming(lambda: writer.path_of(split, done)):
            start = writer.resume_split(split, count, schema, done, entry["state"] if done else {})
        kept = entry if start == done and start else {}  # gone back: what is final gets checksummed again
    journal["splits"][split] = {
        "count": count,
        "done": start,
        "state": kept.get("state", {}),
        "files": kept.get("files", {}),
    }
    _write_journal(out, journal)
    return start


def _commit(out: Path, writer, journal: dict[str, Any], split: str, done: int) -> None:
    """Samples ``[0, done)`` are written: flush them, checksum the files they made final, then say so."""
    entry = journal["splits"][split]
    resumable = isinstance(writer, Resumable)
    with _naming(lambda: writer.path_of(split, max(done - 1, 0))):
        entry["state"] = writer.commit(split, done) if resumable else {}
        # a remote store is checksummed once, at the end (it cannot resume: nothing to keep per commit)
        for path in writer.final_files(split, done) if resumable and not isinstance(out, URL) else ():
            name = path.relative_to(out).as_posix()
            if name not in entry["files"]:
                entry["files"][name] = file_checksum(path)
    entry["done"] = done
    _write_journal(out, journal)


# -- parallel conversion: --jobs N, --dask ADDRESS ---------------------------------------------------
# A task is a range of samples (a commit unit; tfrecord: whole shards): it reads that range from the
# source itself (it is given the source, which holds paths, not data) with the chunking a one-process
# conversion reads with (so that --repeat's shifts come out the same), and writes the range's pieces
# (``Writer.write_part``). The converting process keeps 2 tasks per worker under way, takes their
# results in sample order (``Writer.absorb_part``: labels, indexes) and commits each range as one
# process does: the journal only ever names completed ranges, so an interrupted parallel conversion
# resumes like any other, with any --jobs.


class _Pool:
    """Where tasks run: ``jobs`` local processes (spawned: fresh interpreters, like a cluster's), or
    the workers of the Dask cluster at ``address`` (which must see ``out`` at the same path)."""

    def __init__(self, jobs: int, address: str | None):
        self._client = self._executor = None
        if address is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(
                jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
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


def _ignore_sigint() -> None:
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole process group: the parent stops the workers


def _stop(pool: _Pool | None) -> None:
    if pool is not None:
        pool.stop()


def _write_parallel(
    pool: _Pool,
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
) -> None:
    step = _read_step(options["chunk_size"])
    unit = writer.part_unit(step)
    spec = writer.part_spec(split)
    starts = iter(range(kept, count, unit))
    pending = deque()

    def submit():
        start = next(starts, None)
        if start is not None:
            stop = min(start + unit, count)
            # an absolute path: a --dask worker resolves it in its own working directory
            target = out if isinstance(out, URL) else out.absolute()
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
        with _naming(lambda: writer.path_of(split, start)):
            writer.absorb_part(split, start, y, result)
        journal["targets"] = tally.to_json()
        _commit(out, writer, journal, split, start + len(y))
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
    x = _as_stored(source, stored, x, y, split=split, start=start)
    with _naming(lambda: writer.path_of(split, start)):
        result = writer.write_part(split, start, x, y, spec)
    return y, result


def _intact(out: Path, files: dict[str, str]) -> bool:
    """Whether every kept file still has the checksum the journal recorded (one read of each)."""
    for name, checksum in files.items():
        try:
            if file_checksum(out / name) != checksum:
                return False
        except OSError:
            return False
    return True


def _checksums(out: Path, journal: dict[str, Any]) -> dict[str, str]:
    """Every file of the finished store: the journal's checksum where it has one, else computed now."""
    if isinstance(out, URL):  # every object read back once, many at a time
        from ooc import remote

        with _naming(lambda: out):
            return remote.checksums(
                out, [name for name in remote.list_files(out) if not is_bookkeeping(name)]
            )
    known = {
        name: checksum for entry in journal["splits"].values() for name, checksum in entry["files"].items()
    }
    files = {}
    for root, dirs, names in os.walk(out):
        dirs.sort()
        for name in sorted(names):
            relative = (Path(root) / name).relative_to(out).as_posix()
            if not is_bookkeeping(relative):
                with _naming(lambda: Path(root) / name):
                    files[relative] = known.get(relative) or file_checksum(Path(root) / name)
    return files


def _committed(journal: dict[str, Any]) -> str:
    parts = [f"{split} {entry['done']}/{entry['count']}" for split, entry in journal["splits"].items()]
    return ", ".join(parts) + " samples" if parts else "no samples committed yet"


def _write_journal(out: Path, journal: dict[str, Any]) -> None:
    """Replace the journal atomically: a reader (or a resumed run) sees the old one or the new one."""
    path = out / PARTIAL_NAME
    if isinstance(out, URL):  # one PUT replaces the object whole
        from ooc import remote

        with _naming(lambda: path):
            remote.write_bytes(path, (json.dumps(journal) + "\n").encode("utf-8"))
        return
    tmp = path.with_name(path.name + ".tmp")
    with _naming(lambda: tmp):
        tmp.write_text(json.dumps(journal) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _check_resumable(out: Path, journal: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume a journal written for another store, naming what differs."""

    def shown(value):
        return (
            "none" if value is None else "x".join(map(str, value)) if isinstance(value, list) else str(value)
        )

    differences = []
    if journal.get("format") != identity["format"]:  # then the options differ too, as a matter of course
        differences.append(f"--format {journal.get('format')}, not {identity['format']}")
    for key, value in identity["options"].items() if not differences else ():
        if journal.get("options", {}).get(key) != value:
            differences.append(
                f"--{key.replace('_', '-')} {shown(journal.get('options', {}).get(key))}, not {shown(value)}"
            )
    old, new = journal.get("source", {}), identity["source"]
    if old.get("sha256") != new["sha256"]:
        differences.append(
            f"--source {old.get('path')} (sha256 {str(old.get('sha256'))[:12]}…), not {new['path']} (sha256 "
            f"{new['sha256'][:12]}…)"
        )
    for key in sorted({"limit", "repeat", "size"} | set(old) | set(new) - {"path", "sha256"}):
        if old.get(key) != new.get(key):
            differences.append(f"--{key.replace('_', '-')} {shown(old.get(key))}, not {shown(new.get(key))}")
    if differences:
        raise StoreExistsError(
            f"{out} holds an interrupted conversion with other arguments ({'; '.join(differences)}); "
            "re-run it with those to resume, or pass --overwrite to start over"
        )


@contextmanager
def _naming(path: Callable[[], Path]) -> Iterator[None]:
    """An OSError while writing becomes a one-line ``WriteError`` naming the file: the error's own,
    else ``path()``, the file the writer was at."""
    try:
        yield
    except OocError:
        raise
    except OSError as e:
        where = e.filename or path()
        # the errno's own words: h5py's and pyarrow's messages run over lines and into internals
        reason = os.strerror(e.errno) if e.errno else " ".join((e.strerror or str(e)).split())
        fix = "free space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that"
        error = WriteError(f"{where}: {reason}; {fix} and re-run the same command to resume")
        error.errno = e.errno
        raise error from e


def _abort(writer) -> None:
    if writer is not None:
        try:
            writer.abort()
        except Exception:
            pass


def _read_step(chunk_size: int | None) -> int:
    if not chunk_size:
        return READ_CHUNK_SAMPLES
    return max(1, -(-READ_CHUNK_SAMPLES // chunk_size)) * chunk_size


def remove_store(path: Path, *, overwrite: bool = True) -> None:
    """Delete the store (complete or interrupted) at ``path``, and nothing that ooc did not write."""
    if isinstance(path, URL):
        return _remove_remote(path, overwrite=overwrite)
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        complete, partial = manifest_path(path).exists(), (path / PARTIAL_NAME).exists()
        if not (complete or partial):
            raise StoreExistsError(
                f"{path} exists, is not empty and is not an ooc store (no {MANIFEST_NAME}); refusing to touch "
                "it, choose another --out or remove it yourself"
            )
        if not overwrite:
            what = "a store" if complete else "an interrupted conversion"
            raise StoreExistsError(f"{path} already holds {what}; pass --overwrite to replace it")
        with _naming(lambda: path):
            shutil.rmtree(path)


def _open_output(out: Path, *, overwrite: bool) -> dict[str, Any] | None:
    """The journal of the interrupted conversion at ``out``, to resume; or None once ``out`` is free
    for a new store (an old one deleted only with ``overwrite``, and only if ooc made it)."""
    if isinstance(out, URL):
        return _remove_remote(out, overwrite=overwrite)
    partial = out / PARTIAL_NAME
    if not overwrite and partial.is_file() and not manifest_path(out).exists():
        try:
            journal = json.loads(partial.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            journal = None
        if not isinstance(journal, dict) or journal.get("ooc_journal_version") != JOURNAL_VERSION:
            raise StoreExistsError(
                f"{out} holds an interrupted conversion that cannot be resumed (its {PARTIAL_NAME} is not "
                "a journal this ooc can read); pass --overwrite to start over"
            )
        return journal
    if (
        out.is_dir() and not partial.exists()
    ):  # killed while writing its first journal: nothing else was written
        leftovers = list(out.iterdir())
        if leftovers and all(
            p.is_file() and is_bookkeeping(p.name) and p.name != MANIFEST_NAME for p in leftovers
        ):
            for p in leftovers:
                p.unlink()
    remove_store(out, overwrite=overwrite)
    return None


# -- stores on object storage (see ooc.remote) ----------------------------------------------------------


def _check_remote(out: URL, format: str, *, jobs: int, dask: str | None) -> None:
    if format not in REMOTE_FORMATS:
        require_local(format, out)
    if jobs > 1 or dask is not None:
        raise OptionError(
            f"{out}: --jobs and --dask write local files only; convert to object storage with one process"
        )


def _remove_remote(out: URL, *, overwrite: bool) -> None:
    """Make ``out`` free for a new store: refuse anything ooc did not write there, and an existing
    store or interrupted conversion without ``overwrite``. A remote conversion is not resumed: one
    interrupted restarts with --overwrite. Returns None (no journal to resume)."""
    from ooc import remote

    try:
        names = remote.list_files(out)
    except OSError as e:  # no such bucket, no access, endpoint unreachable
        raise WriteError(
            f"{out}: cannot list ({' '.join(str(e).split())[:200]}); check the URL and the credentials "
            "(AWS_* variables or --storage-option)"
        ) from None
    if not names:
        return None
    complete, partial = MANIFEST_NAME in names, PARTIAL_NAME in names
    if not (complete or partial):
        raise StoreExistsError(
            f"{out} holds objects and is not an ooc store (no {MANIFEST_NAME}); refusing to touch it, choose "
            "another --out or remove them yourself"
        )
    if not overwrite:
        if complete:
            raise StoreExistsError(f"{out} already holds a store; pass --overwrite to replace it")
        raise StoreExistsError(
            f"{out} holds an interrupted conversion; conversions to object storage do not resume: "
            "pass --overwrite to start over"
        )
    with _naming(lambda: out):
        remote.remove(out, recursive=True)
    return None


def _unlink(path) -> None:
    if isinstance(path, URL):
        from ooc import remote

        remote.remove(path)
    else:
        path.unlink()


def _rmtree(path) -> None:
    if isinstance(path, URL):
        from ooc import remote

        try:
            remote.remove(path, recursive=True)
        except OSError:
            pass
    else:
        shutil.rmtree(path, ignore_errors=True)
