"""The conversion's journal, ``ooc.partial``: what an interrupted conversion committed, so that
running it again resumes it (see ``ooc.convert``).

::

    {"ooc_journal_version": 1, "format": "zarr", "options": {"chunk_size": 1024, ...},
     "source": {"path": ..., "sha256": ..., "limit": null, "repeat": 1, "size": null},
     "targets": {"label_max": 9, ...},
     "splits": {"train": {"count": 60000, "done": 24576, "state": {...},
                          "files": {"train/x/c/0/0/0/0": "<crc32> <size>", ...}}}}

Samples are committed one source read at a time: the writer hands them to the OS
(``Resumable.commit``), the files that no later write changes are checksummed, then the journal is
replaced atomically (written beside, renamed over). Resuming checks that the journal was made with
the same format, options and source; re-checks every kept file against its checksum (a split with a
changed or missing file starts over); and lets the layout reopen the split where it can.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ooc import remote
from ooc.errors import OocError, StoreExistsError, WriteError
from ooc.formats.base import Resumable
from ooc.fs import is_remote
from ooc.manifest import PARTIAL_NAME, file_checksum, is_bookkeeping
from ooc.schema import Schema, check_chunk

JOURNAL_VERSION = 1


def as_stored(source, stored: Schema, x: np.ndarray, y: np.ndarray, *, split: str, start: int) -> np.ndarray:
    """A source chunk, checked against what the source declares, in the stored dtype (pixels stored
    decoded are the one conversion ooc makes, and the manifest says so)."""
    check_chunk(source.schema, x, y, where=source.name, split=split, start=start)
    return source.schema.decoded(x) if stored.dtype != source.schema.dtype else x


def abort(writer) -> None:
    if writer is not None:
        try:
            writer.abort()
        except Exception:
            pass


def open_split(out: Path, writer, journal: dict[str, Any], split: str, count: int, schema: Schema) -> int:
    """Begin ``split``, or reopen it where the journal says the interrupted run got to (after
    re-checking the files it kept); returns the first sample still to write."""
    entry = journal["splits"].get(split)
    if entry is None or entry["count"] != count or not isinstance(writer, Resumable):
        with naming(lambda: writer.path_of(split, 0)):
            writer.begin_split(split, count, schema)
        start, kept = 0, {}
    else:
        done = entry["done"] if intact(out, entry["files"]) else 0
        with naming(lambda: writer.path_of(split, done)):
            start = writer.resume_split(split, count, schema, done, entry["state"] if done else {})
        kept = entry if start == done and start else {}  # gone back: what is final gets checksummed again
    journal["splits"][split] = {
        "count": count,
        "done": start,
        "state": kept.get("state", {}),
        "files": kept.get("files", {}),
    }
    write_journal(out, journal)
    return start


def commit(out: Path, writer, journal: dict[str, Any], split: str, done: int) -> None:
    """Samples ``[0, done)`` are written: flush them, checksum the files they made final, then say so."""
    entry = journal["splits"][split]
    resumable = isinstance(writer, Resumable)
    with naming(lambda: writer.path_of(split, max(done - 1, 0))):
        entry["state"] = writer.commit(split, done) if resumable else {}
        # a remote store is checksummed once, at the end (it cannot resume: nothing to keep per commit)
        for path in writer.final_files(split, done) if resumable and not is_remote(out) else ():
            name = path.relative_to(out).as_posix()
            if name not in entry["files"]:
                entry["files"][name] = file_checksum(path)
    entry["done"] = done
    write_journal(out, journal)


def intact(out: Path, files: dict[str, str]) -> bool:
    """Whether every kept file still has the checksum the journal recorded (one read of each)."""
    for name, checksum in files.items():
        try:
            if file_checksum(out / name) != checksum:
                return False
        except OSError:
            return False
    return True


def checksums(out: Path, journal: dict[str, Any]) -> dict[str, str]:
    """Every file of the finished store: the journal's checksum where it has one, else computed now."""
    if is_remote(out):  # every object read back once, many at a time
        with naming(lambda: out):
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
                with naming(lambda: Path(root) / name):
                    files[relative] = known.get(relative) or file_checksum(Path(root) / name)
    return files


def committed(journal: dict[str, Any]) -> str:
    parts = [f"{split} {entry['done']}/{entry['count']}" for split, entry in journal["splits"].items()]
    return ", ".join(parts) + " samples" if parts else "no samples committed yet"


def write_journal(out: Path, journal: dict[str, Any]) -> None:
    """Replace the journal atomically: a reader (or a resumed run) sees the old one or the new one."""
    path = out / PARTIAL_NAME
    if is_remote(out):  # one PUT replaces the object whole
        with naming(lambda: path):
            remote.write_bytes(path, (json.dumps(journal) + "\n").encode("utf-8"))
        return
    tmp = path.with_name(path.name + ".tmp")
    with naming(lambda: tmp):
        tmp.write_text(json.dumps(journal) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def check_resumable(out: Path, journal: dict[str, Any], identity: dict[str, Any]) -> None:
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
def naming(path: Callable[[], Path]) -> Iterator[None]:
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
