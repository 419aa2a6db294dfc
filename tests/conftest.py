"""Shared fixtures: small stores of the real MNIST, one per layout, converted once per session when first used."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

import ooc
from ooc.formats import FORMATS

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "mnist.npz"
LIMIT = 300  # samples of each split in the shared stores
CHUNK = 64  # small chunks, and a count that is not a multiple of them


@pytest.fixture(scope="session")
def mnist():
    with np.load(MNIST) as d:
        return {k: d[k][:LIMIT] for k in ("x_train", "y_train", "x_test", "y_test")}


class _Stores(Mapping):
    """Small MNIST stores by layout, each converted the first time a test asks for it: ``-k zarr``
    converts zarr only."""

    def __init__(self, base: Path):
        self._base, self._made = base, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            options = ooc.get_format(name).OPTIONS
            chunk = None if options.default_chunk_size is None else CHUNK
            shard = None if options.default_shard_size is None else CHUNK
            ooc.convert(
                self._base / name, format=name, source=MNIST, limit=LIMIT, chunk_size=chunk, shard_size=shard
            )
            self._made[name] = self._base / name
        return self._made[name]

    def __iter__(self):
        return iter(FORMATS)

    def __len__(self):
        return len(FORMATS)


@pytest.fixture(scope="session")
def store_dirs(tmp_path_factory) -> Mapping[str, Path]:
    return _Stores(tmp_path_factory.mktemp("stores"))


BUCKET = "ooc-test"  # the bucket of the S3 tests (tests/test_s3.py, tests/test_cache.py)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 for the session, with the AWS_* variables pointing at it."""
    from ooc.benchmark.s3_server import LocalS3Server

    with LocalS3Server() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.environment.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(key, raising=False)
        server.create_bucket(BUCKET)
        yield server.endpoint


@pytest.fixture(scope="session")
def remote_stores(s3_endpoint, store_dirs):
    """zarr and parquet converted straight to s3://, with the options of the shared local stores."""
    urls = {}
    for fmt in ("zarr", "parquet"):
        urls[fmt] = f"s3://{BUCKET}/shared/{fmt}"
        ooc.convert(urls[fmt], format=fmt, source=MNIST, limit=LIMIT, chunk_size=CHUNK)
    return urls


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


@pytest.fixture(scope="session")
def pool():
    """Worker processes for the several-readers tests; spawned: a fresh interpreter per worker, as
    users' worker processes often are (fork after TensorFlow is unsafe)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor
