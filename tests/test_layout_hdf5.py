"""The hdf5 layout: the conformance suite, read back with h5py."""

from __future__ import annotations

from ooc.testing import LayoutTests


class TestHdf5(LayoutTests):
    format = "hdf5"

    def standard_read(self, path, n):
        import h5py

        # locking=False as ooc opens it: HDF5 refuses a second open of a file in one process with
        # another locking flag, and this process may still hold the store open
        with h5py.File(path / "data.h5", "r", locking=False) as f:
            return f["train/x"][:n], f["train/y"][:n]
