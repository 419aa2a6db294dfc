"""Where a conversion writes: ``--out`` owned by one conversion at a time (``owning``), made free for
a new store, or its interrupted conversion found to resume; never a byte of a directory ooc did not
make."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ooc import fs, remote
from ooc.errors import OptionError, StoreBusyError, StoreExistsError, WriteError
from ooc.formats import require_local_unless_remote
from ooc.journal import JOURNAL_VERSION, naming
from ooc.manifest import LOCK_NAME, MANIFEST_NAME, PARTIAL_NAME, is_bookkeeping, manifest_path
from ooc.remote import URL


@contextmanager
def owning(out: Path) -> Iterator[None]:
    """Hold ``out`` for one conversion: an exclusive lock on ``out/ooc.lock`` (which holds the pid),
    taken before any other byte there is touched, so that a second ``ooc convert`` to the same
    ``--out`` is refused in one line instead of writing into the first's files. Released (and the
    lock file removed) when the block ends; a directory made here and left empty is removed too.
    Object storage has no locks: a URL is not held."""
    if fs.is_remote(out):
        yield
        return
    _refuse_foreign(out)
    made = not out.exists()
    with naming(lambda: out):
        out.mkdir(parents=True, exist_ok=True)
        fd = _lock(out / LOCK_NAME)
    try:
        yield
    finally:
        try:
            if os.fstat(fd).st_ino == os.stat(out / LOCK_NAME).st_ino:
                os.unlink(out / LOCK_NAME)
        except OSError:
            pass  # removed with the store (a conversion that failed on its source)
        os.close(fd)
        if made:
            try:
                out.rmdir()  # only if empty: a conversion refused before writing anything
            except OSError:
                pass


def _lock(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive flock, the pid written in it; a lock file
    unlinked by the conversion that held it (it ended) is not taken: the new file at the name is."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreBusyError(
                f"{path.parent} is being written by another ooc convert (pid {holder}); wait for it or "
                "choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)


def _contents(path: Path) -> list[Path]:
    """What a directory holds besides a conversion's lock file."""
    return [p for p in path.iterdir() if p.name != LOCK_NAME]


def _refuse_foreign(path: Path) -> None:
    """Refuse ``path`` unless it is free or ooc's own: missing, empty, or holding a store, an
    interrupted conversion or a conversion's lock."""
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not (
            manifest_path(path).exists() or (path / PARTIAL_NAME).exists() or (path / LOCK_NAME).exists()
        ):
            raise StoreExistsError(
                f"{path} exists, is not empty and is not an ooc store (no {MANIFEST_NAME}); refusing to touch "
                "it, choose another --out or remove it yourself"
            )


def remove_store(path: Path, *, overwrite: bool = True) -> None:
    """Delete the store (complete or interrupted) at ``path``, and nothing that ooc did not write.
    The manifest goes first, so that a reader sees at once that the store is no longer there (see
    ``Store``'s generation check); a conversion's lock file stays (``owning`` removes it)."""
    if fs.is_remote(path):
        return remove_remote(path, overwrite=overwrite)
    _refuse_foreign(path)
    if path.is_dir() and _contents(path):
        complete, partial = manifest_path(path).exists(), (path / PARTIAL_NAME).exists()
        if not (complete or partial):
            raise StoreExistsError(
                f"{path} exists, is not empty and is not an ooc store (no {MANIFEST_NAME}); refusing to touch "
                "it, choose another --out or remove it yourself"
            )
        if not overwrite:
            what = "a store" if complete else "an interrupted conversion"
            raise StoreExistsError(f"{path} already holds {what}; pass --overwrite to replace it")
        with naming(lambda: path):
            if complete:
                manifest_path(path).unlink()
            for child in _contents(path):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            if not (path / LOCK_NAME).exists():
                path.rmdir()


def open_output(out: Path, *, overwrite: bool) -> dict[str, Any] | None:
    """The journal of the interrupted conversion at ``out``, to resume; or None once ``out`` is free
    for a new store (an old one deleted only with ``overwrite``, and only if ooc made it)."""
    if fs.is_remote(out):
        return remove_remote(out, overwrite=overwrite)
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
        leftovers = _contents(out)
        if leftovers and all(
            p.is_file() and is_bookkeeping(p.name) and p.name != MANIFEST_NAME for p in leftovers
        ):
            for p in leftovers:
                p.unlink()
    remove_store(out, overwrite=overwrite)
    return None


def check_remote(out: URL, format: str, *, jobs: int, dask: str | None) -> None:
    require_local_unless_remote(format, out)
    if jobs > 1 or dask is not None:
        raise OptionError(
            f"{out}: --jobs and --dask write local files only; convert to object storage with one process"
        )


def remove_remote(out: URL, *, overwrite: bool) -> None:
    """Make ``out`` free for a new store: refuse anything ooc did not write there, and an existing
    store or interrupted conversion without ``overwrite``. A remote conversion is not resumed: one
    interrupted restarts with --overwrite. Returns None (no journal to resume)."""

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
    with naming(lambda: out):
        remote.remove(out, recursive=True)
    return None


def unlink(path) -> None:
    fs.unlink(path)


def rmtree(path) -> None:
    fs.remove_tree(path, ignore_errors=True)
