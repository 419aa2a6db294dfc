"""The ``"<crc32 hex> <size>"`` form in which manifests and journals record each file."""

from __future__ import annotations

import os
import zlib

CHECKSUM_ALGORITHM = "crc32"


def data_checksum(data: bytes) -> str:
    """``"<crc32 hex> <size>"`` of bytes in memory (``file_checksum``'s form)."""
    return f"{zlib.crc32(data):08x} {len(data)}"


def checksum_size(entry: str) -> int:
    """The size in bytes a ``"<crc32 hex> <size>"`` entry records."""
    return int(entry.split()[1])


def file_checksum(path: str | os.PathLike) -> str:
    """``"<crc32 hex> <size>"`` of a file's bytes, streamed: the manifest's and the journal's entry."""
    crc = size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return f"{crc:08x} {size}"
