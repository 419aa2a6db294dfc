"""Stores on object storage, against a real S3-compatible HTTP server on 127.0.0.1 (moto's standalone
server, started here by ``ooc.benchmark.s3_server.LocalS3Server``): nothing is mocked at the Python level, s3fs
and zarr speak HTTP to it.
Credentials and the endpoint come from the standard AWS_* variables, as a user's would."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import ooc
from ooc.errors import (
    CorruptStoreError,
    FormatMismatchError,
    OptionError,
    StoreExistsError,
    StoreNotFoundError,
)
from ooc.remote import URL, location, parse_storage_options
from ooc.verify import verify

from conftest import BUCKET, LIMIT, MNIST, REMOTE_LAYOUTS


@pytest.mark.parametrize("fmt", REMOTE_LAYOUTS)
def test_remote_store_reads_the_same_batches_as_local(fmt, remote_stores, store_dirs):
    rng = np.random.default_rng(0)
    with ooc.open_store(remote_stores[fmt]) as remote, ooc.open_store(store_dirs[fmt]) as local:
        assert isinstance(remote.path, URL) and str(remote.path) == remote_stores[fmt]
        assert (
            remote.manifest["checksums"]
            == json.loads((store_dirs[fmt] / "ooc.json").read_text())["checksums"]
        )
        for shuffle in ("global", "chunk", "none"):
            for batch in ooc.epoch_batches(
                LIMIT, batch_size=50, shuffle=shuffle, seed=1, chunk_size=remote.chunk_size
            ):
                x, y = remote.read("train", batch)
                x_local, y_local = local.read("train", batch)
                assert np.array_equal(x, x_local) and np.array_equal(y, y_local)
        indices = rng.integers(0, LIMIT, 120)  # repeats, any order, many chunks at once
        for split in ("train", "test"):
            assert all(
                np.array_equal(a, b) for a, b in zip(remote.read(split, indices), local.read(split, indices))
            )
    again = pickle.loads(pickle.dumps(ooc.open_store(remote_stores[fmt])))  # what a worker process gets
    assert isinstance(again.path, URL) and np.array_equal(
        again.read("test", [5, 1])[0], local.read("test", [5, 1])[0]
    )


def test_storage_options_instead_of_the_environment(remote_stores, s3_endpoint, monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    options = parse_storage_options(
        [
            f"endpoint_url={s3_endpoint}",
            "key=testing",
            "secret=testing",
            "client_kwargs.region_name=us-east-1",
        ]
    )
    assert options == {
        "endpoint_url": s3_endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    with ooc.open_store(remote_stores["zarr"], storage_options=options) as store:
        assert store.read("train", [3])[1].tolist() == [1]


def test_parse_storage_options():
    assert parse_storage_options(
        ["anon=true", "use_ssl=False", "default_block_size=1048576", "x=1.5", "token=none", "s=a=b"]
    ) == {"anon": True, "use_ssl": False, "default_block_size": 1048576, "x": 1.5, "token": None, "s": "a=b"}
    with pytest.raises(OptionError, match=r"^--storage-option 'anon' is not key=value"):
        parse_storage_options(["anon"])
    with pytest.raises(OptionError, match=r"^--storage-option applies to URLs"):
        location("data/zarr", {"anon": True})


def test_verify_and_info_of_a_remote_store(remote_stores, s3_endpoint):
    import s3fs

    report = verify(remote_stores["zarr"])
    assert report.ok and report.files == report.checked > 0, report.problems
    done = subprocess.run(
        [sys.executable, "-m", "ooc", "info", remote_stores["parquet"]],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert done.returncode == 0, done.stderr
    assert f"path:        {remote_stores['parquet']}" in done.stdout and "format:      parquet" in done.stdout

    url = f"s3://{BUCKET}/damaged/zarr"
    ooc.convert(url, format="zarr", source=MNIST, limit=100, chunk_size=32)
    fs = s3fs.S3FileSystem()
    fs.pipe_file(f"{BUCKET}/damaged/zarr/train/x/c/1/0/0/0", b"garbage")
    fs.rm_file(f"{BUCKET}/damaged/zarr/train/x/c/2/0/0/0")
    fs.pipe_file(f"{BUCKET}/damaged/zarr/stray", b"x")
    problems = verify(url).problems
    assert len(problems) == 3, problems
    assert problems[0].startswith(f"{url}/train/x/c/1/0/0/0: truncated to 7 bytes, the manifest says ")
    assert problems[1] == f"{url}/train/x/c/2/0/0/0: missing"
    assert problems[2] == f"{url}/stray: not in the manifest (a file the conversion did not write)"
    with pytest.raises(CorruptStoreError, match=r"chunk file is missing \(samples 64–95"):
        ooc.open_store(url).read("train", [70])


def test_remote_conversion_refusals(s3_endpoint, remote_stores):
    url = remote_stores["zarr"]
    with pytest.raises(StoreExistsError, match=r"already holds a store; pass --overwrite"):
        ooc.convert(url, format="zarr", source=MNIST, limit=10)
    with pytest.raises(StoreNotFoundError, match=r"no ooc store there"):
        ooc.open_store(f"s3://{BUCKET}/nothing-here")
    with pytest.raises(FormatMismatchError, match=r"holds a zarr store, not parquet"):
        ooc.open_store(url, expect_format="parquet")
    with pytest.raises(OptionError, match=r"--jobs and --dask write local files only"):
        ooc.convert(f"s3://{BUCKET}/jobs", format="zarr", source=MNIST, limit=10, jobs=2)

    # an interrupted remote conversion is refused, then started over with --overwrite
    import s3fs

    s3fs.S3FileSystem().pipe_file(f"{BUCKET}/interrupted/ooc.partial", b"{}")
    with pytest.raises(StoreNotFoundError, match=r"is an incomplete ooc store"):
        ooc.open_store(f"s3://{BUCKET}/interrupted")
    with pytest.raises(
        StoreExistsError,
        match=r"conversions to object storage do not resume: pass --overwrite to start over$",
    ):
        ooc.convert(f"s3://{BUCKET}/interrupted", format="parquet", source=MNIST, limit=10)
    ooc.convert(f"s3://{BUCKET}/interrupted", format="parquet", source=MNIST, limit=10, overwrite=True)
    assert ooc.open_store(f"s3://{BUCKET}/interrupted").num_samples("test") == 10


def test_local_only_layouts_refuse_urls(s3_endpoint, tmp_path):
    for fmt in ("csv", "hdf5", "npy", "tfrecord"):
        message = f"s3://{BUCKET}/{fmt}: {fmt} supports local paths only; convert to zarr or parquet for object storage"
        with pytest.raises(OptionError) as error:
            ooc.convert(f"s3://{BUCKET}/{fmt}", format=fmt, source=MNIST, limit=10)
        assert str(error.value) == message
        with pytest.raises(OptionError) as error:
            ooc.open_store(f"s3://{BUCKET}/{fmt}", expect_format=fmt)
        assert str(error.value) == message
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ooc",
            "convert",
            "--format",
            "csv",
            "--source",
            str(MNIST),
            "--limit",
            "10",
            "--out",
            f"s3://{BUCKET}/mnist-csv",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"ooc: error: s3://{BUCKET}/mnist-csv: csv supports local paths only; convert to zarr or parquet "
        "for object storage\n"
    )


def test_cli_convert_and_train_from_s3(s3_endpoint, tmp_path):
    url = f"s3://{BUCKET}/cli/mnist.zarr"
    env = {
        k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"
    }  # the endpoint as a --storage-option
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ooc",
            "convert",
            "--format",
            "zarr",
            "--source",
            str(MNIST),
            "--limit",
            "256",
            "--chunk-size",
            "64",
            "--out",
            url,
            "--storage-option",
            f"endpoint_url={s3_endpoint}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote zarr store {url} (train 256, test 256)")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ooc",
            "train",
            "--store",
            "zarr",
            "--path",
            url,
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--report",
            "run.json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["store"]["path"] == url and report["store"]["format"] == "zarr"
    assert len(report["history"]) == 1 and 0 <= report["test"]["accuracy"] <= 1
    done = subprocess.run(
        [sys.executable, "-m", "ooc", "verify", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 0 and "every checksum matches" in done.stdout, done.stdout + done.stderr


def test_bench_remote_measurement(store_dirs):  # starts its own server, in a process of its own
    from ooc.benchmark.run import measure_remote_reads

    result = measure_remote_reads(
        {"zarr": store_dirs["zarr"], "parquet": store_dirs["parquet"]},
        batch_size=64,
        repeats=1,
        progress=lambda line: None,
    )
    assert [r["name"] for r in result["results"]] == ["zarr", "parquet"]
    for row in result["results"]:
        for mode in ("chunk_warm", "global_warm"):
            assert row["remote"][mode]["samples_per_second"] > 0 and row["remote"][mode]["seconds"]["n"] == 1
        assert row["bytes"] > 0
