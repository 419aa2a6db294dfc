"""A bounded local cache of what a store on object storage holds (``--cache-dir``, ``--cache-size``):
the stored bytes of each unit fetched once (a zarr chunk object, a parquet row group's byte range)
kept as a file on local disk, so that the epochs after the first read them from disk instead of
fetching them again. Opt-in, for zarr and parquet URLs only (``ooc.stores.open_store``).

Layout: ``<dir>/ooc-cache.json`` (the marker that makes the directory ooc's cache), then
``<dir>/<store>/<unit>.unit``, where ``<store>`` is 16 hex digits of the store's identity (its URL and
its manifest's ``generation``: a store converted again never gets the old bytes) and ``<unit>`` the
unit's name, quoted. Each entry is an 8-byte header (``OOC1`` and the CRC-32 of the bytes) and the
bytes as the store holds them.

- **Owned directory.** The cache creates its directory, or adopts an empty one, and writes the marker;
  a non-empty directory without it is refused. It only ever deletes regular files whose names it
  gives (entries, its own temporaries) inside the store folders of a marked directory: not a file a
  user put there, not a symlink (nor what it points to).
- **Atomic, several processes.** An entry is written to a temporary name in its folder and renamed:
  a reader sees a whole entry or none. Processes may share a directory; each evicts by what a listing
  of the directory shows.
- **Bounded, least recently used.** A hit touches the entry's mtime, so the order survives the run: a
  process lists the directory (order by mtime) when it needs room and evicts the oldest entries until
  the total, headers included, is at most ``max_bytes`` (15/16 of it, so that the next writes need
  no listing).
- **Checked.** An entry is served only if its bytes match its header's CRC-32 and, where the store
  records one for the unit (a zarr chunk object's ``"<crc32> <size>"`` in the manifest), that
  checksum; otherwise it is deleted and the caller fetches the unit again. A parquet row group has no
  checksum of its own in the manifest (one for the whole file): its entry is checked against the CRC
  the cache computed from the bytes the store sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ooc.errors import OptionError

MARKER = "ooc-cache.json"
HEADER = struct.Struct("<4sI")  # magic, CRC-32 of the bytes that follow
MAGIC = b"OOC1"
_STORE = re.compile(r"^[0-9a-f]{16}$")
_ENTRY = re.compile(r"^[A-Za-z0-9_.~%-]+\.unit$")
_TEMPORARY = re.compile(r"^\.[A-Za-z0-9_.~%-]+\.unit\.[0-9a-f]{8}\.tmp$")
SLACK = 16  # a full cache evicts down to 15/16 of its size
STALE_TEMPORARY_SECONDS = 3600  # a temporary this old was left by a killed process


def store_key(url: str, manifest: dict[str, Any]) -> str:
    """The folder of a store's entries: its URL and this conversion's ``generation`` (the manifest's
    own checksum for a store written before ooc recorded generations)."""
    generation = manifest.get("generation") or manifest.get("manifest_crc32") or json.dumps(manifest)
    return hashlib.sha256(f"{url}\0{generation}".encode()).hexdigest()[:16]


def needed_bytes(largest_unit: int, units: int) -> int:
    """What ``units`` entries of ``largest_unit`` bytes take in the cache, headers included."""
    return units * (largest_unit + HEADER.size)


class ChunkCache:
    """The stored bytes of units of remote stores, at most ``max_bytes`` in ``directory`` (see the
    module docstring). Thread-safe; pickles as its directory and size (a worker process lists the
    directory again)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        self.given = Path(directory)  # as the user wrote it: what an error names
        self.directory = self.given.absolute()
        self.max_bytes = int(max_bytes)
        self._claim()
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[int, int]] | None = None  # path -> (mtime ns, bytes), listed lazily
        self._total = 0
        self.hits = self.misses = self.dropped = self.evicted = 0

    def __getstate__(self):
        return {"given": self.directory, "directory": self.directory, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._claim()
        self._reset()

    def __repr__(self):
        return f"ChunkCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    # -- the directory ---------------------------------------------------------------------------
    def _claim(self) -> None:
        """Create the directory, or adopt an empty one, with the marker; refuse anything else."""
        where, marker = self.given, self.directory / MARKER
        if where.exists() and not where.is_dir():
            raise OptionError(f"--cache-dir {where} is a file; choose a new or empty directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if marker.is_file() and not marker.is_symlink():
                return
            if any(name != MARKER for name in os.listdir(self.directory)) or os.path.lexists(marker):
                raise OptionError(
                    f"--cache-dir {where} is not empty and not an ooc cache; choose a new or empty directory"
                )
            try:  # O_EXCL: of two processes claiming one empty directory, one writes the marker
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return
            with os.fdopen(fd, "w") as f:
                json.dump({"ooc_cache": 1, "note": "ooc's chunk cache: ooc deletes its own files here"}, f)
        except OSError as e:
            raise OptionError(
                f"--cache-dir {where}: {e.strerror or e}; choose a directory you can write"
            ) from None

    def _path(self, store: str, unit: str) -> Path:
        return self.directory / store / f"{quote(unit, safe='')}.unit"

    # -- reading and writing -----------------------------------------------------------------------
    def get(self, store: str, unit: str, expected: str | None = None) -> bytes | None:
        """The unit's bytes if cached and intact (``expected``: the store's ``"<crc32> <size>"`` of
        them, if it records one), else None; a damaged entry is deleted."""
        path = self._path(store, unit)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # not cached (or a symlink: never followed, never served)
            with self._lock:
                self.misses += 1
            return None
        with os.fdopen(fd, "rb") as f:
            blob = f.read()
            try:
                os.utime(f.fileno())  # the LRU order, kept on disk for the next run
            except OSError:
                pass
        data = self._intact(blob, expected)
        with self._lock:
            if data is None:
                self.dropped += 1
                self.misses += 1
                self._unlink(path)
                return None
            self.hits += 1
            if self._entries is not None and path in self._entries:
                self._entries[path] = (time.time_ns(), self._entries[path][1])
        return data

    @staticmethod
    def _intact(blob: bytes, expected: str | None) -> bytes | None:
        if len(blob) < HEADER.size:
            return None
        magic, crc = HEADER.unpack_from(blob)
        data = blob[HEADER.size :]
        if magic != MAGIC or zlib.crc32(data) != crc:
            return None
        if expected is not None and expected != f"{crc:08x} {len(data)}":
            return None
        return data

    def put(self, store: str, unit: str, data: bytes) -> None:
        """Keep ``data`` (the unit's bytes as the store holds them), evicting the least recently used
        entries to stay within ``max_bytes``. A unit larger than the whole cache is not kept."""
        path = self._path(store, unit)
        size = HEADER.size + len(data)
        if size > self.max_bytes or (os.path.lexists(path) and not _regular(path)):
            return
        with self._lock:
            self._make_room(size, keep=path)
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "xb") as f:
                f.write(HEADER.pack(MAGIC, zlib.crc32(data)))
                f.write(data)
            os.replace(temporary, path)
        except OSError:  # a full or read-only disk: the read goes on uncached
            self._unlink(temporary)
            return
        with self._lock:
            if self._entries is not None:
                self._total -= self._entries.get(path, (0, 0))[1]
                self._entries[path] = (time.time_ns(), size)
                self._total += size

    def _make_room(self, size: int, *, keep: Path) -> None:
        if self._entries is not None and self._total + size <= self.max_bytes:
            return
        self._list()  # what every process sharing the directory wrote, in least recently used order
        if self._total + size <= self.max_bytes:
            return
        # evict a sixteenth more than needed: a full cache then lists its directory once per sixteenth
        # of its size written, not on every write
        target = self.max_bytes - self.max_bytes // SLACK
        for path in sorted(self._entries, key=lambda p: self._entries[p][0]):
            if self._total + size <= target:
                break
            if path != keep:
                self._unlink(path)
                self.evicted += 1

    def _list(self) -> None:
        """The entries on disk (path -> mtime, size) and their total; stale temporaries deleted."""
        entries, now = {}, time.time()
        for folder in os.scandir(self.directory):
            if not (_STORE.match(folder.name) and folder.is_dir(follow_symlinks=False)):
                continue
            for entry in os.scandir(folder.path):
                if not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
                if _ENTRY.match(entry.name):
                    entries[Path(entry.path)] = (st.st_mtime_ns, st.st_size)
                elif _TEMPORARY.match(entry.name) and now - st.st_mtime > STALE_TEMPORARY_SECONDS:
                    self._unlink(Path(entry.path))
        self._entries, self._total = entries, sum(size for _, size in entries.values())

    def _unlink(self, path: Path) -> None:
        """Delete one of the cache's own files: a regular file with an entry's or a temporary's name in a
        store folder of this directory, nothing else."""
        if not (
            path.parent.parent == self.directory
            and _STORE.match(path.parent.name)
            and not path.parent.is_symlink()
            and (_ENTRY.match(path.name) or _TEMPORARY.match(path.name))
            and _regular(path)
        ):
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if self._entries is not None and path in self._entries:
            self._total -= self._entries.pop(path)[1]

    def total_bytes(self) -> int:
        """Bytes of every entry on disk now, headers included (a fresh listing)."""
        with self._lock:
            self._list()
            return self._total

    @property
    def stats(self) -> dict[str, int]:
        """This process's hits, misses (damaged entries included), entries dropped as damaged and
        entries evicted."""
        return {"hits": self.hits, "misses": self.misses, "dropped": self.dropped, "evicted": self.evicted}


def _regular(path: Path) -> bool:
    try:
        return (os.lstat(path).st_mode & 0o170000) == 0o100000
    except OSError:
        return False
