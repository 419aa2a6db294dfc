"""Shared fixtures: the conformance suite's (``ooc.testing``: small stores of the real MNIST, one per
layout, converted once per session when first used), the S3 test server, the layout parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

import ooc
from ooc.formats import FORMATS, layouts

pytest.register_assert_rewrite("ooc.testing")  # imported below before pytest loads it as a plugin

from ooc.testing import CHUNK, LIMIT, MNIST, expected_x, layout_sizes  # noqa: E402, F401  (the tests' constants)

pytest_plugins = ["ooc.testing"]  # the suite's fixtures: mnist, store_dirs, pool

ROOT = Path(__file__).resolve().parent.parent


REMOTE_LAYOUTS = layouts(lambda m: m.OPTIONS.remote)  # what each layout declares
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
    """The layouts that declare object storage converted straight to s3://, with the options of the
    shared local stores."""
    urls = {}
    for fmt in REMOTE_LAYOUTS:
        urls[fmt] = f"s3://{BUCKET}/shared/{fmt}"
        ooc.convert(urls[fmt], format=fmt, source=MNIST, limit=LIMIT, **layout_sizes(fmt, CHUNK))
    return urls


@pytest.fixture(params=list(FORMATS))
def fmt(request) -> str:
    return request.param


@pytest.fixture
def store(fmt, store_dirs):
    with ooc.open_store(store_dirs[fmt]) as s:
        yield s
