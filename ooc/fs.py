"""A store's location, local or remote, through one small set of operations.

ooc keeps a store's path as a ``Path`` (local) or an ``ooc.remote.URL`` (object storage: a string
carrying its fsspec storage options). The functions here take either and do the one thing on both,
pathlib for the first and fsspec for the second, so that the code that writes, reads and removes
stores asks ``is_remote`` only where the two really differ (how a remote conversion is checksummed,
that it does not resume), not to pick between two spellings of the same operation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ooc import remote
from ooc.remote import URL

Location = Path | URL


def is_remote(path) -> bool:
    """Whether ``path`` is on object storage (a ``URL``) rather than a local path."""
    return isinstance(path, URL)


def absolute(path: Location) -> Location:
    """A local path made absolute (another process resolves it in its own directory); a URL as it is."""
    return path if is_remote(path) else Path(path).absolute()


def make_dirs(path: Location) -> None:
    """The directory and its parents; object stores have no directories, so nothing for a URL."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def write_atomic(path: Location, data: bytes) -> None:
    """The file appears whole or not at all: locally a temporary file, fsynced, renamed over ``path``;
    remotely one PUT, which is atomic by itself."""
    if is_remote(path):
        remote.write_bytes(path, data)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def unlink(path: Location) -> None:
    """Delete one file (object)."""
    if is_remote(path):
        remote.remove(path)
    else:
        Path(path).unlink()


def remove_tree(path: Location, *, ignore_errors: bool = False) -> None:
    """Delete a directory (every object below a URL) and what it holds."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=ignore_errors)
        return
    try:
        remote.remove(path, recursive=True)
    except OSError:
        if not ignore_errors:
            raise


def disk_usage(path: Location) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file below ``path``."""
    if is_remote(path):  # objects: what is stored is what is billed
        total = sum(remote.list_files(path).values())
        return total, total
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
