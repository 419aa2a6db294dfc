"""Shared fixtures: small stores of the real MNIST, one per layout, converted once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ooc
from ooc.formats import FORMATS

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "mnist.npz"
LIMIT = 300  # samples of each split in the shared stores
CHUNK = 64   # small chunks, and a count that is not a multiple of them


@pytest.fixture(scope="session")
def mnist():
    with np.load(MNIST) as d:
        return {k: d[k][:LIMIT] for k in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture(scope="session")
def store_dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    dirs = {}
    for name in FORMATS:
        options = ooc.get_format(name).OPTIONS
        chunk = None if options.default_chunk_size is None else CHUNK
        shard = None if options.default_shard_size is None else CHUNK
        ooc.convert(base / name, format=name, source=MNIST, limit=LIMIT, chunk_size=chunk, shard_size=shard)
        dirs[name] = base / name
    return dirs


@pytest.fixture(params=list(FORMATS))
def fmt(request) -> str:
    return request.param


@pytest.fixture
def store(fmt, store_dirs):
    with ooc.open_store(store_dirs[fmt]) as s:
        yield s


def expected_x(x_uint8: np.ndarray) -> np.ndarray:
    """What every layout must return for these source pixels."""
    return (x_uint8.astype(np.float32) / np.float32(255))[..., None]
