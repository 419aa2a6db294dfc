"""Converting a source into a store: stream chunks to a layout's writer, then write the manifest.

The steps are rooms of their own: the options are checked here; ``ooc.output`` makes ``--out`` free
(or finds the interrupted conversion to resume); ``ooc.journal`` commits each unit of samples, so
that a conversion stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a full disk) resumes when run
again with the same arguments; ``ooc.parallel`` writes the units in other processes (``--jobs``,
``--dask``). The manifest comes last, so ``open_store`` sees a complete store or refuses an
incomplete one, never anything in between.

Samples are read and committed ``READ_CHUNK_SAMPLES`` at a time (whole chunks): big enough to amortise
per-call costs, small enough that memory stays flat whatever the dataset's size.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ooc.core.version import __version__
from ooc.errors import ConversionInterrupted, OocError, OptionError, WriteError
from ooc.formats import get_format
from ooc.formats.base import ParallelParts
from ooc.formats.text import DELIMITERS
from ooc.fs import is_remote, make_dirs
from ooc.journal import (
    JOURNAL_VERSION,
    abort,
    as_stored,
    check_resumable,
    checksums,
    commit,
    committed,
    naming,
    open_split,
    write_journal,
)
from ooc.manifest import (
    CHECKSUM_ALGORITHM,
    PARTIAL_NAME,
    manifest_path,
    write_manifest,
)
from ooc.output import check_remote, open_output, owning, remove_store, rmtree, unlink
from ooc.parallel import Pool, stop, write_parallel
from ooc.remote import location
from ooc.schema import Schema, TargetTally
from ooc.sources import RepeatedSource, Source, SourceOptions, as_source, parse_shape, parse_size

__all__ = ["READ_CHUNK_SAMPLES", "convert", "remove_store"]

# Source chunks hold at least this many samples (rounded up to whole store chunks): big enough to
# amortise per-call costs, small enough that memory stays flat whatever the dataset's size. Each is
# also the unit a conversion commits, and resumes from.
READ_CHUNK_SAMPLES = 8192


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
    delimiter: str | None = None,
    overwrite: bool = False,
    repeat: int = 1,
    size: int | tuple[int, int] | str | None = None,
    sample_shape: tuple[int, ...] | str | None = None,
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

    ``source`` may also be a Python object (``ooc.sources.python``): ``(x, y)`` numpy arrays or
    memmaps, ``{"train": ..., "test": ...}``, an iterable of ``(x, y)`` chunks (spooled beside
    ``out``; ``sample_shape`` and ``dtype`` then declare its samples, else chunk 0 does), a
    ``tf.data.Dataset`` or a Hugging Face ``Dataset`` / ``DatasetDict``.

    ``delimiter`` (comma, whitespace, tab, semicolon) is the dialect csv writes (default whitespace,
    as ``np.savetxt``); converting to any other layout, the dialect of a per-sample CSV source,
    which is otherwise detected from its first file.

    ``jobs`` > 1 writes with that many local processes, ``dask`` (a scheduler address) with the
    workers of a Dask cluster that share the filesystem: the same files, byte for byte, as one
    process writes (layouts whose pieces are separate files: csv, zarr, npy, tfrecord).

    Returns the manifest. Ctrl-C raises ``ConversionInterrupted`` (a KeyboardInterrupt) and a
    failed write ``WriteError`` (an OSError) naming the file: both keep what was committed, for the
    next run to resume. A source that cannot be converted removes the partial store.
    """
    layout = get_format(format)
    if delimiter is not None and delimiter not in DELIMITERS:
        raise OptionError(f"--delimiter {delimiter!r}: choose one of {', '.join(DELIMITERS)}")
    options = _checked_options(
        layout,
        format,
        chunk_size,
        compression,
        shard_size,
        delimiter,
        limit=limit,
        repeat=repeat,
        jobs=jobs,
        dask=dask,
    )
    source_options = _reading(
        source_options,
        size=size,
        sample_shape=sample_shape,
        dtype=dtype,
        delimiter=None if "delimiter" in options else delimiter,  # a csv output's is its own
    )
    source = as_source(source, options=source_options, dtype=dtype, near=out)
    if repeat > 1:
        source = RepeatedSource(source, repeat)
    options["dtype"] = layout.OPTIONS.stored_dtype(format, source.schema, dtype)
    out = location(out, storage_options)  # a URL (s3://…) stays a string carrying its storage options
    if is_remote(out):
        check_remote(out, format, jobs=jobs, dask=dask)
    pool = (
        Pool(jobs, dask) if jobs > 1 or dask is not None else None
    )  # connects to --dask before anything is written
    identity = {
        "format": format,
        "options": options,
        "source": {
            "limit": limit,
            "repeat": repeat,
            "size": None if source_options.size is None else list(source_options.size),
            **_read_as(source_options),
        },
    }
    try:
        with owning(out):  # before any byte of --out is touched: one conversion at a time
            return _write_store(
                out,
                layout,
                source,
                identity,
                pool,
                overwrite=overwrite,
                limit=limit,
                repeat=repeat,
                progress=progress,
            )
    except BaseException:
        stop(pool)
        raise


def _write_store(
    out, layout, source, identity, pool, *, overwrite, limit, repeat, progress
) -> dict[str, Any]:
    """The conversion proper, once ``out`` is held: the journal, every split, the manifest last."""
    options = identity["options"]
    journal = _journal(out, overwrite=overwrite, identity=identity, source=source)
    run = _Conversion(
        out,
        source,
        source.schema.with_stored_dtype(options["dtype"]),
        journal,
        pool,
        limit=limit,
        repeat=repeat,
        progress=progress,
        step=_read_step(options["chunk_size"]),
    )
    started = time.perf_counter()
    try:
        run.writer = layout.Writer(out, **options)
        for split in source.splits:
            run.write_split(split)
        stop(pool)
        with naming(lambda: out):
            run.writer.close()
        manifest = run.manifest(identity, seconds=time.perf_counter() - started)
        with naming(lambda: manifest_path(out)):
            write_manifest(out, manifest)
        unlink(out / PARTIAL_NAME)
    except KeyboardInterrupt:
        run.stop()  # first: no worker writes on once this returns
        fix = (
            "re-run the same command with --overwrite to start over (conversions to object storage do not resume)"
            if is_remote(out)
            else "re-run the same command to resume, or pass --overwrite to start over"
        )
        raise ConversionInterrupted(f"{out} is incomplete ({committed(journal)}); {fix}") from None
    except OocError as error:
        run.stop()
        if not isinstance(error, WriteError):  # the source or an option is wrong: re-running cannot finish
            rmtree(out)
        raise
    except BaseException:
        run.stop()
        raise
    return manifest


def _reading(source_options, *, size, sample_shape, dtype, delimiter) -> SourceOptions:
    """The source options, with what convert's own arguments say about reading the source: --size,
    --sample-shape, a float --dtype (per-sample CSV text parsed as it) and the source's --delimiter;
    what the source options set already stays."""
    reading = replace(source_options or SourceOptions(), size=parse_size(size))
    if sample_shape is not None and reading.sample_shape is None:
        reading = replace(reading, sample_shape=parse_shape(sample_shape))
    if dtype in ("float32", "float64") and reading.dtype is None:
        reading = replace(reading, dtype=dtype)
    if delimiter is not None and reading.delimiter is None:
        reading = replace(reading, delimiter=delimiter)
    return reading


def _checked_options(
    layout, format, chunk_size, compression, shard_size, delimiter, *, limit, repeat, jobs, dask
) -> dict[str, Any]:
    """The layout's options with their defaults; every option refused here, before anything is read
    (``delimiter`` is the output's where the layout writes text, else the source's, checked there)."""
    options = layout.OPTIONS.resolve(
        format, chunk_size=chunk_size, compression=compression, shard_size=shard_size, delimiter=delimiter
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
    return options


def _journal(out, *, overwrite: bool, identity: dict[str, Any], source) -> dict[str, Any]:
    """The journal of the interrupted conversion at ``out`` with these arguments, or a new one once
    ``out`` is free (refused before the source is read for its checksum)."""
    journal = open_output(out, overwrite=overwrite)
    identity["source"] = {
        "path": str(getattr(source, "path", source.name)),
        "sha256": source.sha256(),
        **identity["source"],
    }
    if journal is not None:
        check_resumable(out, journal, identity)
        return journal
    with naming(lambda: out):
        make_dirs(out)  # object stores have no directories: nothing for a URL
    journal = {
        "ooc_journal_version": JOURNAL_VERSION,
        **identity,
        "targets": TargetTally().to_json(),
        "splits": {},
    }
    write_journal(out, journal)
    return journal


@dataclass
class _Conversion:
    """One conversion under way: what it writes from, where, and what it has committed."""

    out: Any
    source: Any
    stored: Schema  # the schema of what is written
    journal: dict[str, Any]
    pool: Pool | None
    limit: int | None
    repeat: int
    progress: Callable[[str, int, int], None] | None
    step: int  # samples a unit: read, written and committed together
    writer: Any = None
    resumed: dict[str, int] = field(default_factory=dict)  # samples kept from an interrupted run, by split

    def __post_init__(self):
        self.tally = TargetTally.from_json(self.journal.get("targets", {}))

    def count(self, split: str) -> int:
        copies = self.repeat if split == "train" else 1
        n = self.source.num_samples(split)
        return n if self.limit is None else min(self.limit, n // copies) * copies

    def write_split(self, split: str) -> None:
        """Begin (or reopen) the split, then write and commit it unit by unit, here or in the pool."""
        count, resuming = self.count(split), split in self.journal["splits"]
        kept = open_split(self.out, self.writer, self.journal, split, count, self.stored)
        if resuming and kept:
            self.resumed[split] = kept
        if self.progress and kept:
            self.progress(split, kept, count)
        if resuming and kept == count and count:
            return  # finished by the interrupted run
        if self.pool is not None:  # the same units, written by workers; committed here in order
            write_parallel(
                self.pool,
                self.out,
                self.writer,
                self.journal,
                self.source,
                split,
                count,
                kept,
                format=self.stored_format,
                options=self.options,
                limit=self.limit,
                progress=self.progress,
                tally=self.tally,
                stored=self.stored,
                step=self.step,
            )
            return
        done = kept
        for x, y in self.source.iter_chunks(split, self.step, self.limit, start=kept):
            x = as_stored(self.source, self.stored, x, y, split=split, start=done)
            self.tally.add(self.source.schema, y, where=self.source.name, split=split)
            with naming(lambda: self.writer.path_of(split, done)):
                self.writer.write(split, done, x, y)
            done += len(x)
            self.journal["targets"] = self.tally.to_json()
            commit(self.out, self.writer, self.journal, split, done)
            if self.progress:
                self.progress(split, done, count)
        if not count:
            commit(self.out, self.writer, self.journal, split, 0)

    @property
    def stored_format(self) -> str:
        return self.journal["format"]

    @property
    def options(self) -> dict[str, Any]:
        return self.journal["options"]

    def manifest(self, identity: dict[str, Any], *, seconds: float) -> dict[str, Any]:
        order = {**self.source.order, **({"grouped_by_class": True} if self.tally.grouped_by_class() else {})}
        manifest = {
            "format": identity["format"],
            "created_by": f"ooc {__version__}",
            "splits": {split: {"count": entry["count"]} for split, entry in self.journal["splits"].items()},
            **self.tally.finish(self.stored).to_manifest(),
            "order": order,
            "options": identity["options"],
            "source": identity["source"],
            "conversion_seconds": round(
                seconds, 3
            ),  # this run's: a resumed conversion's time is not counted twice
        }
        notes = getattr(self.source, "notes", None)  # what was decided for the user (targets by position …)
        if notes:
            manifest["notes"] = list(notes)
        if self.resumed:
            manifest["resumed"] = self.resumed
        manifest["generation"] = secrets.token_hex(8)  # this conversion's: an open store notices a rewrite
        # what the read path checks (targets, and the units of a layout whose bytes carry no checksum),
        # from one read of the written store
        with get_format(identity["format"]).Store(self.out, manifest) as written:
            read_back = written.read_checksums()
        if read_back is not None:
            manifest["read_checksums"] = read_back
        manifest["checksums"] = {"algorithm": CHECKSUM_ALGORITHM, "files": checksums(self.out, self.journal)}
        return manifest

    def stop(self) -> None:
        """After a failure: no worker writes on, open files are closed; what was committed is kept."""
        stop(self.pool)
        abort(self.writer)


def _read_as(options: SourceOptions) -> dict[str, Any]:
    """The source options that change what is read (for the manifest, and to refuse resuming with others)."""
    defaults = asdict(SourceOptions())
    return {
        key: str(value)
        if isinstance(value, os.PathLike)
        else list(value)
        if isinstance(value, tuple)
        else value
        for key, value in asdict(options).items()
        if key != "size" and value != defaults[key]
    }


# -- parallel conversion: --jobs N, --dask ADDRESS ---------------------------------------------------
# A task is a range of samples (a commit unit; tfrecord: whole shards): it reads that range from the
# source itself (it is given the source, which holds paths, not data) with the chunking a one-process
# conversion reads with (so that --repeat's shifts come out the same), and writes the range's pieces
# (``Writer.write_part``). The converting process keeps 2 tasks per worker under way, takes their
# results in sample order (``Writer.absorb_part``: labels, indexes) and commits each range as one
# process does: the journal only ever names completed ranges, so an interrupted parallel conversion
# resumes like any other, with any --jobs.


def _read_step(chunk_size: int | None) -> int:
    if not chunk_size:
        return READ_CHUNK_SAMPLES
    return max(1, -(-READ_CHUNK_SAMPLES // chunk_size)) * chunk_size


# -- stores on object storage (see ooc.remote) ----------------------------------------------------------
