"""Where a conversion writes: ``--out`` made free for a new store, or its interrupted conversion found
to resume; never a byte of a directory ooc did not make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ooc import fs
from ooc.errors import OptionError, StoreExistsError, WriteError
from ooc.journal import JOURNAL_VERSION, naming
from ooc.manifest import MANIFEST_NAME, PARTIAL_NAME, is_bookkeeping, manifest_path
from ooc.remote import REMOTE_FORMATS, URL, require_local


def remove_store(path: Path, *, overwrite: bool = True) -> None:
    """Delete the store (complete or interrupted) at ``path``, and nothing that ooc did not write."""
    if fs.is_remote(path):
        return remove_remote(path, overwrite=overwrite)
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
        with naming(lambda: path):
            shutil.rmtree(path)


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
        leftovers = list(out.iterdir())
        if leftovers and all(
            p.is_file() and is_bookkeeping(p.name) and p.name != MANIFEST_NAME for p in leftovers
        ):
            for p in leftovers:
                p.unlink()
    remove_store(out, overwrite=overwrite)
    return None


def check_remote(out: URL, format: str, *, jobs: int, dask: str | None) -> None:
    if format not in REMOTE_FORMATS:
        require_local(format, out)
    if jobs > 1 or dask is not None:
        raise OptionError(
            f"{out}: --jobs and --dask write local files only; convert to object storage with one process"
        )


def remove_remote(out: URL, *, overwrite: bool) -> None:
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
    with naming(lambda: out):
        remote.remove(out, recursive=True)
    return None


def unlink(path) -> None:
    fs.unlink(path)


def rmtree(path) -> None:
    fs.remove_tree(path, ignore_errors=True)
