"""The JSON manifest that makes a directory an ooc store.

It is written last, after every data file is flushed and closed, so a directory without it is never
taken for a complete store, whatever a crash left behind. While a conversion runs, ``ooc.partial``
(its journal, see ``ooc.convert``) marks the directory as ooc's own and incomplete.

``checksums`` (absent from stores written before ooc recorded them) maps every file of the store
but the manifest to ``"<crc32 hex> <size in bytes>"``, which ``ooc verify`` checks. CRC-32, not a
cryptographic hash: it guards against damage, not tampering, and zlib computes it at ~6.5 GB/s on
one core against ~2 GB/s for sha256 and ~1.3 GB/s for blake2b (measured on 64 MiB), so checksumming
every file costs a conversion next to nothing.

``manifest_crc32`` is the manifest's own checksum: CRC-32 of its canonical JSON (sorted keys) without
``checksums`` (which ``ooc verify`` checks against the files) and without itself. ``open_store`` and
``ooc verify`` refuse a manifest edited or damaged since it was written; a manifest without it (from
an older ooc) is not checked. ``generation`` is a random id each conversion writes, so that an open
store notices that it was rewritten under it (``Store``'s generation check).
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from ooc import remote
from ooc.core.checksums import CHECKSUM_ALGORITHM, checksum_size, data_checksum, file_checksum  # noqa: F401  (the manifest's forms)
from ooc.errors import CorruptStoreError, StoreNotFoundError
from ooc.fs import is_remote, write_atomic
from ooc.remote import URL, location

MANIFEST_NAME = "ooc.json"
PARTIAL_NAME = "ooc.partial"
LOCK_NAME = "ooc.lock"  # held by the conversion writing the directory (ooc.output.owning)
MANIFEST_VERSION = 2  # 2: samples of any shape and dtype, declared decoding and target kind (ooc.schema)


def manifest_path(store_path: str | os.PathLike) -> Path:
    return location(store_path) / MANIFEST_NAME


def is_bookkeeping(relative: str) -> bool:
    """Whether a path inside a store (relative, "/"-separated) is the manifest's or the journal's
    (or their temporaries), not data: the files checksums do not cover."""
    return "/" not in relative and relative.startswith((MANIFEST_NAME, PARTIAL_NAME, LOCK_NAME))


def manifest_crc(manifest: dict[str, Any]) -> str:
    """The manifest's own checksum (see the module docstring): 8 hex digits."""
    content = {k: v for k, v in manifest.items() if k not in ("checksums", "manifest_crc32")}
    return f"{zlib.crc32(json.dumps(content, sort_keys=True).encode('utf-8')):08x}"


def check_manifest_crc(where, manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose content no longer matches its own checksum, in one line."""
    recorded = manifest.get("manifest_crc32")
    if recorded is not None and recorded != manifest_crc(manifest):
        raise CorruptStoreError(
            f"{where}: its content does not match its checksum (edited or damaged since `ooc convert` wrote "
            "it); re-convert the store"
        )


def manifest_signature(store_path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of a local store's manifest, None if it has none (or lives in object
    storage): what ``Store`` compares to notice a rewrite without reading the manifest again."""
    if is_remote(store_path):
        return None
    try:
        st = os.stat(manifest_path(store_path))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def write_manifest(store_path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write atomically: a temporary file renamed over the final name, after an fsync (remote: one PUT,
    which is atomic by itself). Adds the version and the manifest's own checksum."""
    final = manifest_path(store_path)
    manifest = {"ooc_manifest_version": MANIFEST_VERSION, **manifest}
    manifest["manifest_crc32"] = manifest_crc(manifest)
    write_atomic(final, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def read_manifest(store_path: str | os.PathLike) -> dict[str, Any]:
    return read_manifest_signed(store_path)[0]


def read_manifest_signed(store_path: str | os.PathLike) -> tuple[dict[str, Any], tuple[int, int, int] | None]:
    """The manifest and the ``manifest_signature`` of the very file its bytes were read from."""
    path = location(store_path)
    if is_remote(path):
        return _check_read(manifest_path(path), _read_remote(path)), None
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such store; create it with `ooc convert --out {path}`")
    if not path.is_dir():
        raise StoreNotFoundError(f"{path} is a file, not an ooc store directory")
    mpath = manifest_path(path)
    if not mpath.exists() and (path / PARTIAL_NAME).exists():
        raise StoreNotFoundError(
            f"{path} is an incomplete ooc store (its conversion was interrupted); re-run the same `ooc "
            f"convert --out {path}` to resume it, or add --overwrite to start over"
        )
    if not mpath.exists():
        raise StoreNotFoundError(
            f"{path} is not an ooc store (no {MANIFEST_NAME}); create one with `ooc convert --out PATH`"
        )
    try:
        with open(mpath, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:  # a directory in its place, no read permission
        raise CorruptStoreError(
            f"{mpath}: cannot read the manifest ({e.strerror or e}); make it a readable file (check its "
            "permissions) or re-convert the store"
        ) from None
    return _check_read(mpath, data), (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_remote(path: URL) -> bytes:
    """The manifest object's bytes; the errors say what is there instead, like the local ones."""

    try:
        return remote.read_bytes(manifest_path(path))
    except FileNotFoundError:
        pass
    except OSError as e:  # no such bucket, no access, endpoint unreachable
        raise StoreNotFoundError(
            f"{path}: cannot read {MANIFEST_NAME} ({' '.join(str(e).split())[:200]}); check the URL and the "
            "credentials "
            "(AWS_* variables or --storage-option)"
        ) from None
    if remote.exists(path / PARTIAL_NAME):
        raise StoreNotFoundError(
            f"{path} is an incomplete ooc store (its conversion was interrupted); re-run the `ooc convert "
            f"--out {path}` with --overwrite to start over"
        )
    raise StoreNotFoundError(
        f"{path}: no ooc store there (no {MANIFEST_NAME}); create one with `ooc convert --out {path}`"
    )


def _check_read(mpath, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptStoreError(f"{mpath} is not valid JSON ({e}); re-convert the store") from None
    if not isinstance(manifest, dict) or "format" not in manifest or "splits" not in manifest:
        raise CorruptStoreError(f"{mpath} lacks 'format' or 'splits'; re-convert the store")
    version = manifest.get("ooc_manifest_version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise CorruptStoreError(
            f"{mpath} has manifest version {version!r}; this ooc reads version {MANIFEST_VERSION} "
            "and older: upgrade ooc"
        )
    if version < MANIFEST_VERSION:
        raise CorruptStoreError(
            f"{mpath} has manifest version {version}, from an ooc that stored MNIST-shaped pixels only; "
            f"re-convert the store with `ooc convert --overwrite` (this ooc reads version {MANIFEST_VERSION})"
        )
    return manifest
