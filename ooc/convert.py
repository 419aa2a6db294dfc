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
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


from ooc import __version__
from ooc.errors import ConversionInterrupted, OocError, OptionError, StoreExistsError, WriteError
from ooc.formats import get_format
from ooc.manifest import (CHECKSUM_ALGORITHM, MANIFEST_NAME, PARTIAL_NAME, file_checksum, is_bookkeeping, manifest_path,
                          write_manifest)
from ooc.sources import IdxSource, ImageFolderSource, NpzSource, RepeatedSource, as_source, parse_size

# Source chunks hold at least this many samples (rounded up to whole store chunks): big enough to
# amortise per-call costs, small enough that memory stays flat whatever the dataset's size. Each is
# also the unit a conversion commits, and resumes from.
READ_CHUNK_SAMPLES = 8192
JOURNAL_VERSION = 1


def convert(
    out: str | os.PathLike,
    *,
    format: str,
    source: NpzSource | IdxSource | ImageFolderSource | RepeatedSource | str | os.PathLike | None = None,
    limit: int | None = None,
    chunk_size: int | None = None,
    shard_size: int | None = None,
    compression: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    repeat: int = 1,
    size: int | tuple[int, int] | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``source`` (default: the bundled MNIST) to a new ``format`` store at ``out``, or finish
    the interrupted conversion with the same arguments there (``overwrite`` starts over instead).

    ``size`` (N, (H, W) or "HxW") resizes the images of an image-folder source.

    Returns the manifest. Ctrl-C raises ``ConversionInterrupted`` (a KeyboardInterrupt) and a
    failed write ``WriteError`` (an OSError) naming the file: both keep what was committed, for the
    next run to resume. A source that cannot be converted removes the partial store.
    """
    layout = get_format(format)
    options = layout.OPTIONS.resolve(format, chunk_size=chunk_size, compression=compression, dtype=dtype, shard_size=shard_size)
    if limit is not None and limit < 1:
        raise OptionError(f"--limit must be a positive number of samples, got {limit}")
    if repeat < 1:
        raise OptionError(f"--repeat must be a positive number of copies, got {repeat}")
    size = parse_size(size)
    source = as_source(source, size=size)
    if repeat > 1:
        source = RepeatedSource(source, repeat)
    out = Path(out)
    journal = _open_output(out, overwrite=overwrite)  # refuses before the source is read for its checksum

    started = time.perf_counter()
    identity = {"format": format, "options": options,
                "source": {"path": str(source.path), "sha256": source.sha256(), "limit": limit, "repeat": repeat,
                           "size": None if size is None else list(size)}}
    if journal is None:
        out.mkdir(parents=True, exist_ok=True)
        journal = {"ooc_journal_version": JOURNAL_VERSION, **identity, "label_max": -1, "splits": {}}
        _write_journal(out, journal)
    else:
        _check_resumable(out, journal, identity)
    writer = None
    resumed = {}
    try:
        writer = layout.Writer(out, **options)
        for split in source.splits:
            copies = repeat if split == "train" else 1
            count = source.num_samples(split) if limit is None else min(limit, source.num_samples(split) // copies) * copies
            resuming = split in journal["splits"]
            kept = _open_split(out, writer, journal, split, count, source.sample_shape, source.label_dtype(split))
            if resuming and kept:
                resumed[split] = kept
            if progress and kept:
                progress(split, kept, count)
            if resuming and kept == count and count:
                continue  # finished by the interrupted run
            done = kept
            for x, y in source.iter_chunks(split, _read_step(options["chunk_size"]), limit, start=kept):
                if y.size and (y.min() < 0):
                    raise OptionError(f"{source.name}: y_{split} holds negative labels; labels must be class numbers 0, 1, …")
                with _naming(lambda: writer.path_of(split, done)):
                    writer.write(split, done, x, y)
                journal["label_max"] = max(journal["label_max"], int(y.max()) if y.size else -1)
                done += len(x)
                _commit(out, writer, journal, split, done)
                if progress:
                    progress(split, done, count)
            if not count:
                _commit(out, writer, journal, split, 0)
        with _naming(lambda: out):
            writer.close()
        manifest = {
            "format": format,
            "created_by": f"ooc {__version__}",
            "splits": {split: {"count": entry["count"]} for split, entry in journal["splits"].items()},
            "sample_shape": list(source.sample_shape),
            "num_classes": journal["label_max"] + 1,
            "x_dtype": options["dtype"],
            "options": options,
            "source": identity["source"],
            "conversion_seconds": round(time.perf_counter() - started, 3),
        }
        if resumed:  # samples kept from the interrupted run; conversion_seconds counts this run only
            manifest["resumed"] = resumed
        if getattr(source, "classes", None):  # an image folder's class names, by label
            manifest["source"]["classes"] = list(source.classes)
        manifest["checksums"] = {"algorithm": CHECKSUM_ALGORITHM, "files": _checksums(out, journal)}
        with _naming(lambda: manifest_path(out)):
            write_manifest(out, manifest)
        (out / PARTIAL_NAME).unlink()
    except KeyboardInterrupt:
        _abort(writer)
        raise ConversionInterrupted(f"{out} is incomplete ({_committed(journal)}); re-run the same command to resume, "
                                    "or pass --overwrite to start over") from None
    except OocError as error:
        _abort(writer)
        if not isinstance(error, WriteError):  # the source or an option is wrong: re-running cannot finish
            shutil.rmtree(out, ignore_errors=True)
        raise
    except BaseException:
        _abort(writer)
        raise
    return manifest


def _open_split(out: Path, writer, journal: dict[str, Any], split: str, count: int, sample_shape, label_dtype) -> int:
    """Begin ``split``, or reopen it where the journal says the interrupted run got to (after
    re-checking the files it kept); returns the first sample still to write."""
    entry = journal["splits"].get(split)
    if entry is None or entry["count"] != count:
        with _naming(lambda: writer.path_of(split, 0)):
            writer.begin_split(split, count, sample_shape, label_dtype)
        start, kept = 0, {}
    else:
        done = entry["done"] if _intact(out, entry["files"]) else 0
        with _naming(lambda: writer.path_of(split, done)):
            start = writer.resume_split(split, count, sample_shape, label_dtype, done, entry["state"] if done else {})
        kept = entry if start == done else {}  # gone back: what is final gets checksummed again
    journal["splits"][split] = {"count": count, "done": start, "state": kept.get("state", {}), "files": kept.get("files", {})}
    _write_journal(out, journal)
    return start


def _commit(out: Path, writer, journal: dict[str, Any], split: str, done: int) -> None:
    """Samples ``[0, done)`` are written: flush them, checksum the files they made final, then say so."""
    entry = journal["splits"][split]
    with _naming(lambda: writer.path_of(split, max(done - 1, 0))):
        entry["state"] = writer.commit(split, done)
        for path in writer.final_files(split, done):
            name = path.relative_to(out).as_posix()
            if name not in entry["files"]:
                entry["files"][name] = file_checksum(path)
    entry["done"] = done
    _write_journal(out, journal)


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
    known = {name: checksum for entry in journal["splits"].values() for name, checksum in entry["files"].items()}
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
    tmp = path.with_name(path.name + ".tmp")
    with _naming(lambda: tmp):
        tmp.write_text(json.dumps(journal) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _check_resumable(out: Path, journal: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume a journal written for another store, naming what differs."""
    def shown(value):
        return "none" if value is None else "x".join(map(str, value)) if isinstance(value, list) else str(value)

    differences = []
    if journal.get("format") != identity["format"]:  # then the options differ too, as a matter of course
        differences.append(f"--format {journal.get('format')}, not {identity['format']}")
    for key, value in identity["options"].items() if not differences else ():
        if journal.get("options", {}).get(key) != value:
            differences.append(f"--{key.replace('_', '-')} {shown(journal.get('options', {}).get(key))}, not {shown(value)}")
    old, new = journal.get("source", {}), identity["source"]
    if old.get("sha256") != new["sha256"]:
        differences.append(f"--source {old.get('path')} (sha256 {str(old.get('sha256'))[:12]}…), not {new['path']} (sha256 {new['sha256'][:12]}…)")
    for key in ("limit", "repeat", "size"):
        if old.get(key) != new[key]:
            differences.append(f"--{key} {shown(old.get(key))}, not {shown(new[key])}")
    if differences:
        raise StoreExistsError(f"{out} holds an interrupted conversion with other arguments ({'; '.join(differences)}); "
                               "re-run it with those to resume, or pass --overwrite to start over")


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
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        complete, partial = manifest_path(path).exists(), (path / PARTIAL_NAME).exists()
        if not (complete or partial):
            raise StoreExistsError(f"{path} exists, is not empty and is not an ooc store (no {MANIFEST_NAME}); refusing to touch it, choose another --out or remove it yourself")
        if not overwrite:
            what = "a store" if complete else "an interrupted conversion"
            raise StoreExistsError(f"{path} already holds {what}; pass --overwrite to replace it")
        shutil.rmtree(path)


def _open_output(out: Path, *, overwrite: bool) -> dict[str, Any] | None:
    """The journal of the interrupted conversion at ``out``, to resume; or None once ``out`` is free
    for a new store (an old one deleted only with ``overwrite``, and only if ooc made it)."""
    partial = out / PARTIAL_NAME
    if not overwrite and partial.is_file() and not manifest_path(out).exists():
        try:
            journal = json.loads(partial.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            journal = None
        if not isinstance(journal, dict) or journal.get("ooc_journal_version") != JOURNAL_VERSION:
            raise StoreExistsError(f"{out} holds an interrupted conversion that cannot be resumed (its {PARTIAL_NAME} is not "
                                   "a journal this ooc can read); pass --overwrite to start over")
        return journal
    if out.is_dir() and not partial.exists():  # killed while writing its first journal: nothing else was written
        leftovers = list(out.iterdir())
        if leftovers and all(p.is_file() and is_bookkeeping(p.name) and p.name != MANIFEST_NAME for p in leftovers):
            for p in leftovers:
                p.unlink()
    remove_store(out, overwrite=overwrite)
    return None
