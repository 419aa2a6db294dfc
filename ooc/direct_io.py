"""Reads that bypass the page cache, for stores larger than the memory a process may use.

Out of core, a buffered read only passes through a page cache that cannot keep it: the kernel
reclaims as fast as it fills, on the reading thread, and the store read at about 0.6 of the
disk's speed (hdf5, 3 GB under 1 GiB). ``O_DIRECT`` reads go from the disk to an aligned buffer:
no page cache, no reclaim. A store that fits in memory keeps buffered reads, whose later epochs
come from the cache. ``ooc bench --memory-limit`` measures both.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from pathlib import Path

ALIGN = 4096  # O_DIRECT wants offsets, lengths and buffers aligned to the device's block: 4 KiB covers them
_buffers = threading.local()  # each reader thread's aligned buffer, grown as needed


def available_memory() -> int:
    """Bytes this process may still fill: the kernel's MemAvailable, or less if its memory cgroup
    (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) leaves less."""
    free = _meminfo_available()
    for limit_file, usage_file in _cgroup_files():
        try:
            limit = int(Path(limit_file).read_text().split()[0])
            usage = int(Path(usage_file).read_text().split()[0])
        except (OSError, ValueError, IndexError):  # "max", no such file: no limit there
            continue
        free = min(free, max(0, limit - usage))
    return free


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: as if unbounded, so buffered reads stay


def _cgroup_files() -> list[tuple[str, str]]:
    files = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, where = line.split(":", 2)
        if controllers == "":  # v2
            files.append((f"/sys/fs/cgroup{where}/memory.max", f"/sys/fs/cgroup{where}/memory.current"))
        elif "memory" in controllers.split(","):
            base = f"/sys/fs/cgroup/memory{where}"
            files.append((f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes"))
    return files


def larger_than_memory(data_bytes: int) -> bool:
    """Whether a store of ``data_bytes`` cannot stay in the page cache of this process."""
    return data_bytes > available_memory()


def read_into(path: str | os.PathLike, offset: int, out: memoryview, *, direct: bool) -> int:
    """Read ``len(out)`` bytes of ``path`` from ``offset`` into ``out`` (fewer at its end); with
    ``direct`` by ``O_DIRECT`` through this thread's aligned buffer, plainly where the filesystem
    refuses it (tmpfs). Returns the bytes read."""
    if direct:
        try:
            return _read_direct(path, offset, out)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
    with open(path, "rb", buffering=0) as file:
        return os.preadv(file.fileno(), [out], offset)


def _read_direct(path, offset: int, out: memoryview) -> int:
    start = offset // ALIGN * ALIGN
    end = -(-(offset + len(out)) // ALIGN) * ALIGN
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < end - start:
        buffer = _buffers.buffer = mmap.mmap(-1, -(-(end - start) // (1 << 20)) * (1 << 20))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [memoryview(buffer)[: end - start]], start)
    finally:
        os.close(fd)
    usable = max(0, min(len(out), got - (offset - start)))
    out[:usable] = memoryview(buffer)[offset - start : offset - start + usable]
    return usable


def read_file(path: str | os.PathLike, *, direct: bool) -> bytearray:
    """A whole file's bytes (``read_into`` from 0)."""
    size = os.stat(path).st_size
    data = bytearray(size)
    got = read_into(path, 0, memoryview(data), direct=direct)
    if got != size:
        raise EOFError(f"{path}: read {got} of its {size} bytes")
    return data


def advise_will_need(path, ranges) -> None:
    """``posix_fadvise(WILLNEED)`` of the byte ranges ``(offset, length)`` of a local file, in file
    order, adjacent ones merged: the kernel queues their reads and returns. Where the call is missing
    or refused it does nothing (a hint)."""
    if not ranges or not hasattr(os, "posix_fadvise"):
        return
    merged: list[list[int]] = []
    for offset, length in sorted(ranges):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset + length - merged[-1][0])
        else:
            merged.append([offset, length])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # the read that follows says what is wrong with the file
    try:
        for offset, length in merged:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
