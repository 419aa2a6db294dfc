"""Reads past the page cache (``ooc.direct_io``): exact bytes at any offset, the plain read where
``O_DIRECT`` is refused, and the decision a store makes from the memory it may use."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import ooc
from ooc import direct_io


@pytest.fixture()
def data_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3 * direct_io.ALIGN + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("offset, length", [(0, 10), (5, 4096), (4095, 2), (4096, 8192), (12000, 411)])
def test_read_into_gives_the_exact_bytes(data_file, direct, offset, length):
    path, data = data_file
    out = bytearray(length)
    got = direct_io.read_into(path, offset, memoryview(out), direct=direct)
    assert got == min(length, len(data) - offset)
    assert bytes(out[:got]) == data[offset : offset + got]


def test_a_filesystem_without_o_direct_is_read_plainly(data_file, monkeypatch):
    path, data = data_file
    real_open = os.open

    def refuse_direct(file, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(file, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", refuse_direct)
    assert direct_io.read_file(path, direct=True) == data


def test_a_file_cut_short_is_an_eof_error(data_file, monkeypatch):
    path, data = data_file
    monkeypatch.setattr(direct_io.os, "stat", lambda p: os.stat_result((0,) * 6 + (len(data) + 10, 0, 0, 0)))
    with pytest.raises(EOFError, match="blob: read .* of its"):
        direct_io.read_file(path, direct=True)


def test_the_memory_cgroup_bounds_the_available_memory(tmp_path, monkeypatch):
    (tmp_path / "memory.limit_in_bytes").write_text("1073741824\n")
    (tmp_path / "memory.usage_in_bytes").write_text("73741824\n")
    monkeypatch.setattr(
        direct_io,
        "_cgroup_files",
        lambda: [(str(tmp_path / "memory.limit_in_bytes"), str(tmp_path / "memory.usage_in_bytes"))],
    )
    assert direct_io.available_memory() == 1_000_000_000
    (tmp_path / "memory.limit_in_bytes").write_text("max\n")  # v2's "no limit"
    assert direct_io.available_memory() == direct_io._meminfo_available()


@pytest.mark.parametrize("layout", ["hdf5", "npy", "zarr"])
def test_a_store_larger_than_memory_reads_past_the_page_cache(layout, store_dirs, monkeypatch):
    monkeypatch.setattr(direct_io, "available_memory", lambda: 1000)
    with ooc.open_store(store_dirs[layout]) as store:
        assert store._reads_direct()
    monkeypatch.setattr(direct_io, "available_memory", lambda: 1 << 40)
    with ooc.open_store(store_dirs[layout]) as store:
        assert not store._reads_direct()
