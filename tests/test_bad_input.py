"""Bad input on the command line: every option checked, one line on stderr naming it, exit 1, and
nothing written. Run in-process (``ooc.cli.main``) so the table stays fast."""

from __future__ import annotations

import json
import sys

import pytest

from ooc.cli import main
from ooc.formats import FORMATS

from conftest import MNIST


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["ooc", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code, captured.err


CASES = [
    (("convert", "--format", "zarr", "--limit", -1), "--limit must be a positive number of samples, got -1"),
    (
        ("convert", "--format", "zarr", "--chunk-size", 0),
        "--chunk-size must be a positive number of samples, got 0",
    ),
    (
        ("convert", "--format", "hdf5", "--chunk-size", -8),
        "--chunk-size must be a positive number of samples, got -8",
    ),
    (
        ("convert", "--format", "npy", "--chunk-size", 64),
        "--chunk-size does not apply to npy (it has no chunks); drop the option",
    ),
    (
        ("convert", "--format", "tfrecord", "--chunk-size", 64),
        "--chunk-size does not apply to tfrecord (it has no chunks); drop the option; use --shard-size",
    ),
    (
        ("convert", "--format", "tfrecord", "--shard-size", 0),
        "--shard-size must be a positive number of samples, got 0",
    ),
    (
        ("convert", "--format", "zarr", "--shard-size", 10),
        "--shard-size does not apply to zarr (it is not written in shards); drop the option",
    ),
    (("convert", "--format", "zarr", "--repeat", 0), "--repeat must be a positive number of copies, got 0"),
    (
        ("convert", "--format", "zarr", "--size", "0x5"),
        "--size must be N or HxW in pixels, e.g. 28 or 32x32, got '0x5'",
    ),
    (
        ("convert", "--format", "zarr", "--size", "big"),
        "--size must be N or HxW in pixels, e.g. 28 or 32x32, got 'big'",
    ),
    (
        ("convert", "--format", "hdf5", "--compression", "zstd"),
        "--compression 'zstd' is not available for hdf5: choose one of none, gzip, lzf",
    ),
    (
        ("convert", "--format", "parquet", "--compression", "lz4"),
        "--compression 'lz4' is not available for parquet: choose one of none, snappy, zstd, gzip",
    ),
    (
        ("convert", "--format", "zarr", "--dtype", "int4"),
        "--dtype 'int4': pixels are stored as uint8 or float32 (value / 255); choose one of those",
    ),
    (
        ("convert", "--format", "csv", "--dtype", "float16"),
        "--dtype 'float16': pixels are stored as uint8 or float32 (value / 255); choose one of those",
    ),
    (("convert", "--format", "xls"), f"unknown format 'xls': choose one of {', '.join(FORMATS)}"),
    (("convert", "--format", "zarr", "--out", "a_file"), "a_file is a file; choose another --out"),
    (
        ("convert", "--format", "zarr", "--source", "missing.npz"),
        "missing.npz: no such source file; pass --source PATH to an .npz with x_train, y_train, x_test, "
        "y_test",
    ),
    (
        ("convert", "--format", "zarr", "--source", "a_file"),
        "a_file is not a readable .npz file (File is not a zip file)",
    ),
    (
        ("convert", "--format", "zarr", "--source", MNIST, "--size", 28),
        f"--size applies to image-folder sources only; {MNIST} is not one (an image folder has train/ and "
        "test/ with a sub-folder of images per class); drop --size",
    ),
    (("info", "a_file"), "a_file is a file, not an ooc store directory"),
    (("info", "nowhere"), "nowhere: no such store; create it with `ooc convert --out nowhere`"),
    (("bench", "--repeats", 0), "--repeats must be at least 1, got 0"),
    (("bench", "--batch-size", -1), "--batch-size must be at least 1, got -1"),
    (("bench", "--limit", 0), "--limit must be at least 1, got 0"),
    (("bench", "--scale-repeat", 1), "--scale-repeat must be 0 (skip) or at least 2 copies, got 1"),
    (("bench", "--out", "a_file"), "--out a_file is a file; pass a folder"),
    (("bench", "--formats", "zarr,xls"), f"unknown format 'xls': choose one of {', '.join(FORMATS)}"),
    (
        ("train", "--store", "zarr", "--path", "a_file"),
        "--path a_file is a file; pass the store directory (what `ooc convert --out` wrote)",
    ),
    (
        ("train", "--store", "zarr", "--batch-size", -5),
        "--batch-size must be a positive number of samples, got -5",
    ),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(map(str, a)) for a, _ in CASES])
def test_bad_option(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine\n")
    if args[0] == "train" and "--path" not in args:
        assert run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", MNIST, "--limit", 20)[
            0
        ] in (0, None)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, err = run(monkeypatch, capsys, *args)
    assert (code, err) == (1, f"ooc: error: {message}\n")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "a_file").read_text() == "mine\n"


def test_store_from_a_newer_ooc(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(monkeypatch, capsys, "convert", "--format", "npy", "--source", MNIST, "--limit", 20)
    manifest = tmp_path / "data" / "npy" / "ooc.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "ooc_manifest_version": 7}))
    code, err = run(monkeypatch, capsys, "info", "data/npy")
    assert (code, err) == (
        1,
        "ooc: error: data/npy/ooc.json has manifest version 7; this ooc reads version 2 and older: upgrade "
        "ooc\n",
    )
