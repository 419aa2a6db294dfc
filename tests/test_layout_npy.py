"""The npy layout: the conformance suite, read back with np.load."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import CorruptStoreError
from ooc.testing import LIMIT, MNIST, LayoutTests


class TestNpy(LayoutTests):
    format = "npy"

    def standard_read(self, path, n):
        return np.load(path / "train_x.npy", mmap_mode="r")[:n], np.load(path / "train_y.npy")[:n]


def test_read_checks_run_once_a_pass(tmp_path, monkeypatch):
    """A unit is checked the first time it is read in a pass (a split's worth of samples read), not
    at every batch; a byte flipped since is caught by the next pass."""
    import pytest

    import ooc
    from ooc.errors import CorruptStoreError
    from ooc.formats import integrity

    from conftest import MNIST

    ooc.convert(tmp_path / "s", format="npy", source=MNIST, limit=300)  # one unit of 1024: samples 0-299
    store = ooc.open_store(tmp_path / "s")
    crcs = []
    monkeypatch.setattr(
        integrity, "crc", lambda rows, real=integrity.crc: crcs.append(rows.shape) or real(rows)
    )
    for batch in np.array_split(np.random.default_rng(0).permutation(300), 6):
        store.read_stored("train", batch)
    assert sorted(crcs) == [(300,), (300, 28, 28, 1)]  # the targets once an open; the unit once a pass
    with open(tmp_path / "s" / "train_x.npy", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)[0]
        f.seek(-1, 2)
        f.write(bytes([last ^ 0xFF]))
    store._state.chunks.clear()  # as once a pass's other units have evicted the one read whole
    with pytest.raises(CorruptStoreError, match=r"samples 0–299 of split 'train' differ from their checksum"):
        store.read_stored("train", np.arange(50))  # the next pass checks it again


def test_damaged_targets_name_the_targets_file(tmp_path):
    """A flip in train_y.npy names train_y.npy, not the samples' file: what a user inspects or restores."""
    ooc.convert(tmp_path / "s", format="npy", source=MNIST, limit=LIMIT)
    labels = tmp_path / "s" / "train_y.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 0x01  # the last label, still a class 0–9
    labels.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError) as caught:
        ooc.open_store(tmp_path / "s").read("train", [0])
    assert str(caught.value).startswith(
        f"{labels}: the targets of split 'train' differ from their checksum (crc32 "
    ), str(caught.value)
