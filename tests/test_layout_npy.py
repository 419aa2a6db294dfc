"""The npy layout: the conformance suite, read back with np.load."""

from __future__ import annotations

import numpy as np

from conformance import LayoutTests


class TestNpy(LayoutTests):
    format = "npy"

    def standard_read(self, path, n):
        return np.load(path / "train_x.npy", mmap_mode="r")[:n], np.load(path / "train_y.npy")[:n]
