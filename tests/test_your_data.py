"""A user's own data: the recipe's CSV folder (converted, or adopted in place), arrays, HDF5 and Zarr
groups, tables, hand-made sources; every refusal in one line, nothing stored but what the source holds."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import ooc
from ooc.errors import OptionError, SourceError, StoreExistsError
from ooc.formats import FORMATS, get_format
from ooc.schema import schema_for
from ooc.sources import SourceOptions
from ooc.verify import verify

from conftest import MNIST


def recipe_folder(root, shape, *, n=30, classes=3, header=True, seed=0):
    """The classic recipe's layout, as it writes it: train/00001.csv … (np.savetxt of each sample)
    and target.csv of 'filename,label' rows. Returns the samples and labels in file order."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = np.arange(n) % classes
    (root / "train").mkdir(parents=True)
    for i, sample in enumerate(x):
        np.savetxt(
            root / "train" / f"{i + 1:05d}.csv",
            sample.reshape(1, -1) if len(shape) == 1 else sample,
            delimiter=",",
        )
    rows = [f"{i + 1:05d}.csv,{label}" for i, label in enumerate(y)]
    (root / "target.csv").write_text("\n".join((["filename,label"] if header else []) + rows) + "\n")
    return x, y


def everything(store, split):
    return store.read_stored(split, np.arange(store.num_samples(split)))


@pytest.mark.parametrize("shape", [(64, 64), (300,), (100, 3)], ids=["64x64", "one-line-300", "100x3"])
def test_the_recipes_folder_converts_to_every_layout(tmp_path, shape):
    x, y = recipe_folder(tmp_path / "data", shape)
    for fmt in FORMATS:
        options = get_format(fmt).OPTIONS
        chunk = (
            {"chunk_size": 8}
            if options.default_chunk_size
            else {"shard_size": 8}
            if options.default_shard_size
            else {}
        )
        manifest = ooc.convert(
            tmp_path / fmt,
            format=fmt,
            source=tmp_path / "data",
            **chunk,
            source_options=SourceOptions(targets=tmp_path / "data" / "target.csv"),
        )
        assert manifest["sample_shape"] == list(shape) and manifest["x"] == {
            "dtype": "float32",
            "decode": "none",
        }
        assert manifest["target"] == {"kind": "classes", "shape": [], "dtype": "int64", "num_classes": 3}
        assert manifest["order"] == {"kind": "shuffled", "seed": 0}
        store = ooc.open_store(tmp_path / fmt)
        assert (store.num_samples("train"), store.num_samples("test")) == (27, 3)  # 10 % carved, stratified
        got = {split: everything(store, split) for split in ("train", "test")}
        seen_x = np.concatenate([got["train"][0], got["test"][0]])
        order = np.lexsort(seen_x.reshape(30, -1).T[::-1])
        assert (
            seen_x[order].tobytes() == x[np.lexsort(x.reshape(30, -1).T[::-1])].tobytes()
        )  # every sample, exactly
        assert sorted(got["test"][1].tolist()) == [0, 1, 2]
        for split in ("train", "test"):
            for sample, label in zip(*got[split]):
                assert y[np.flatnonzero((x == sample).all(axis=tuple(range(1, x.ndim))))[0]] == label


def test_a_recipe_folder_with_its_own_test_split_and_vector_targets(tmp_path):
    x, _ = recipe_folder(tmp_path / "data", (4, 5), n=12)
    rng = np.random.default_rng(1)
    (tmp_path / "data" / "target.csv").unlink()
    targets = rng.standard_normal((12, 2)).astype(np.float32)
    (tmp_path / "data" / "train_target.csv").write_text(
        "".join(f"{i + 1:05d}.csv,{a},{b}\n" for i, (a, b) in enumerate(targets[:8]))
    )
    (tmp_path / "data" / "test").mkdir()
    for i in range(8, 12):
        os.rename(
            tmp_path / "data" / "train" / f"{i + 1:05d}.csv", tmp_path / "data" / "test" / f"{i + 1:05d}.csv"
        )
    (tmp_path / "data" / "test_target.csv").write_text(
        "".join(f"{i + 1:05d}.csv,{a},{b}\n" for i, (a, b) in zip(range(8, 12), targets[8:]))
    )
    ooc.convert(
        tmp_path / "s", format="npy", source=tmp_path / "data", source_options=SourceOptions(order="source")
    )
    store = ooc.open_store(tmp_path / "s")
    assert store.schema.target_kind == "regression" and store.schema.target_shape == (2,)
    assert (
        everything(store, "train")[0].tobytes() == x[:8].tobytes()
        and everything(store, "test")[0].tobytes() == x[8:].tobytes()
    )
    assert everything(store, "train")[1].tobytes() == targets[:8].tobytes()


def test_adopt_makes_a_store_in_place_without_writing_a_sample(tmp_path, capsys):
    x, y = recipe_folder(tmp_path / "data", (6, 7), n=40, header=True)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "train").iterdir()}
    manifest = ooc.adopt(tmp_path / "data", targets=tmp_path / "data" / "target.csv")
    assert manifest["adopted"] and manifest["splits"] == {"train": {"count": 36}, "test": {"count": 4}}
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "train").iterdir()} == before
    store = ooc.open_store(tmp_path / "data")
    assert store.format_name == "csv" and store.sample_shape == (6, 7)
    converted = ooc.convert(
        tmp_path / "z", format="zarr", source=tmp_path / "data", source_options=SourceOptions(order="source")
    )
    assert converted["splits"] == manifest["splits"]
    copy = ooc.open_store(tmp_path / "z")
    for split in ("train", "test"):
        a, b = everything(store, split), everything(copy, split)
        assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    report = verify(tmp_path / "data")
    assert (
        report.ok and report.files == 42
    )  # 40 samples, the train targets (the user's), the test targets (written)
    (tmp_path / "data" / "train" / "00003.csv").write_text("1,2\n")
    assert not verify(tmp_path / "data").ok
    with pytest.raises(StoreExistsError, match=r"is an ooc store already; nothing to adopt$"):
        ooc.adopt(tmp_path / "data")


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            lambda d: (d / "target.csv").unlink(),
            r"/train holds sample files but no targets file names them: pass --targets FILE for train/ "
            r"\(rows 'filename,label', 'index,label' or 'label'\) or add .*/data/train_target.csv$",
        ),
        (
            lambda d: (d / "train" / "00004.csv").unlink(),
            r"/train/00004.csv: no such file, but .*target.csv names it \(1 missing in all\); "
            r"restore the files or remove their rows$",
        ),
        (
            lambda d: (d / "train" / "extra.csv").write_text("1,2,3\n"),
            r"/train/extra.csv has no row in .*target.csv \(1 files without one\); "
            r"add their rows or move the files away$",
        ),
        (
            lambda d: (d / "train" / "00007.csv").write_text("1,2,3\n"),
            r"/train/00007.csv: expected 12 comma-separated numbers \(3 lines of 4, like the "
            r"first file\); fix or remove the file, or name the files' dialect with --delimiter$",
        ),
    ],
)
def test_a_broken_recipe_folder_is_named(tmp_path, damage, message):
    recipe_folder(tmp_path / "data", (3, 4), n=30)
    damage(tmp_path / "data")
    with pytest.raises(SourceError, match=message):
        ooc.convert(tmp_path / "s", format="zarr", source=tmp_path / "data")
    assert not (tmp_path / "s").exists()


def test_array_sources(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 100, 3)).astype(np.float32)
    y = rng.standard_normal(50)  # float64 regression
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ooc.convert(
        tmp_path / "a",
        format="hdf5",
        source=tmp_path / "x.npy",
        source_options=SourceOptions(targets=tmp_path / "y.npy"),
    )
    store = ooc.open_store(tmp_path / "a")
    assert store.schema.describe() == ("(100, 3) float32", "() float64 regression")
    assert store.manifest["order"] == {"kind": "shuffled", "seed": 0}
    xs = np.concatenate([everything(store, "train")[0], everything(store, "test")[0]])
    ys = np.concatenate([everything(store, "train")[1], everything(store, "test")[1]])
    assert np.array_equal(np.sort(ys), np.sort(y)) and np.array_equal(
        np.sort(xs, axis=None), np.sort(x, axis=None)
    )

    import h5py
    import zarr

    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["images"], f["labels"] = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), np.arange(40) % 4
    ooc.convert(
        tmp_path / "h",
        format="npy",
        source=tmp_path / "data.h5",
        source_options=SourceOptions(x="images", y="labels", order="source", test_fraction=0.25),
    )
    store = ooc.open_store(tmp_path / "h")
    assert (
        store.schema.decode == "pixels"
        and store.sample_shape == (8, 8, 3)
        and store.num_samples("test") == 10
    )
    group = zarr.open_group(tmp_path / "data.zarr", mode="w")
    for split, n in (("train", 30), ("test", 10)):
        group.create_array(f"{split}/x", data=rng.integers(-5, 5, (n, 7), dtype=np.int16))
        group.create_array(f"{split}/y", data=(rng.random((n, 3)) > 0.5).astype(np.uint8))
    ooc.convert(
        tmp_path / "z",
        format="parquet",
        source=tmp_path / "data.zarr",
        source_options=SourceOptions(order="source"),
    )
    store = ooc.open_store(tmp_path / "z")
    assert store.schema.target_kind == "multilabel"
    assert everything(store, "test")[0].tobytes() == group["test/x"][:].tobytes()


def test_table_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    columns = {f"f{i}": rng.standard_normal(200).astype(np.float32) for i in range(5)}
    columns["label"] = np.sort(
        rng.integers(0, 4, 200)
    )  # class by class: the table cannot be shuffled when written
    pq.write_table(pa.table(columns), tmp_path / "table.parquet", row_group_size=64)
    manifest = ooc.convert(
        tmp_path / "s",
        format="zarr",
        source=tmp_path / "table.parquet",
        chunk_size=16,
        source_options=SourceOptions(target_column="label"),
    )
    assert manifest["order"] == {"kind": "source", "grouped_by_class": True}
    store = ooc.open_store(tmp_path / "s")
    assert (store.num_samples("train"), store.num_samples("test"), store.sample_shape) == (180, 20, (5,))
    features = np.stack([columns[f"f{i}"] for i in range(5)], axis=1)
    train, test = everything(store, "train"), everything(store, "test")
    rows = {row.tobytes(): label for row, label in zip(features, columns["label"])}
    assert (
        len(rows) == 200
        and all(rows[row.tobytes()] == label for row, label in zip(*train))
        and len(test[0]) == 20
    )
    import pandas as pd

    pd.DataFrame(columns).to_csv(tmp_path / "table.csv", index=False)
    ooc.convert(
        tmp_path / "c",
        format="npy",
        source=tmp_path / "table.csv",
        source_options=SourceOptions(target_column="label"),
    )
    assert np.array_equal(everything(ooc.open_store(tmp_path / "c"), "train")[0], train[0])
    with pytest.raises(
        SourceError,
        match=r"table.csv has no column 'y' \(it has f0, f1, f2, f3, f4, label\); name the target with "
        r"--target-column$",
    ):
        ooc.convert(
            tmp_path / "x",
            format="npy",
            source=tmp_path / "table.csv",
            source_options=SourceOptions(target_column="y"),
        )
    with pytest.raises(OptionError, match=r"^--order shuffle: .*table.csv is read front to back only"):
        ooc.convert(
            tmp_path / "x",
            format="npy",
            source=tmp_path / "table.csv",
            source_options=SourceOptions(target_column="label", order="shuffle"),
        )


class Handmade:
    """A source object written in Python, which declares uint8 pixels but yields float32 values."""

    name = "handmade"
    splits = ("train", "test")
    schema = schema_for((4, 3, 3), np.uint8, (4,), np.int64, where="handmade")

    def num_samples(self, split):
        return 4

    def iter_chunks(self, split, chunk_size, limit=None, start=0):
        yield np.full((4, 3, 3, 1), 0.5, np.float32), np.arange(4)

    def sha256(self):
        return "0" * 64


def test_a_source_object_must_yield_what_it_declares(tmp_path):
    with pytest.raises(
        SourceError,
        match=r"^handmade: split train at sample 0 yields x of float32 \(3, 3, 1\), but the source declares "
        r"uint8 \(3, 3, 1\); nothing was converted: fix the source$",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=Handmade())
    assert not (tmp_path / "s").exists()
    with pytest.raises(
        SourceError,
        match=r"^object is not an ooc source: it lacks name, splits, schema, num_samples, iter_chunks, sha256",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=object())


def test_floats_are_stored_as_they_are(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32)  # negative, standardised
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:5], y_test=np.arange(5) % 2)
    with pytest.raises(
        OptionError,
        match=r"^--dtype uint8: the source holds float32 samples, which ooc stores as they are; drop --dtype$",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=tmp_path / "f.npz", dtype="uint8")
    ooc.convert(tmp_path / "s", format="csv", source=tmp_path / "f.npz")
    assert ooc.open_store(tmp_path / "s").read("train", np.arange(20))[0].tobytes() == x.tobytes()


def test_raw_pixels_on_request(tmp_path):
    ooc.convert(tmp_path / "s", format="npy", source=MNIST, limit=20, source_options=SourceOptions(raw=True))
    store = ooc.open_store(tmp_path / "s")
    with np.load(MNIST) as d:
        assert store.read("train", np.arange(20))[0].tobytes() == d["x_train"][:20, ..., None].tobytes()
    assert store.manifest["x"] == {"dtype": "uint8", "decode": "none"}


def test_cli_converts_a_recipe_folder_and_info_says_what_it_holds(tmp_path):
    recipe_folder(tmp_path / "data", (100, 3), n=30)
    run = [sys.executable, "-m", "ooc"]
    done = subprocess.run(
        [
            *run,
            "convert",
            "--format",
            "zarr",
            "--source",
            "data",
            "--targets",
            "data/target.csv",
            "--out",
            "z",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    info = subprocess.run([*run, "info", "z"], cwd=tmp_path, capture_output=True, text=True).stdout
    lines = dict(line.split(":", 1) for line in info.splitlines())
    assert (lines["samples"].strip(), lines["targets"].strip()) == ("(100, 3) float32", "3 classes (int64)")
    assert lines["order"].strip() == "shuffled when written (seed 0)"
    bad = subprocess.run(
        [*run, "convert", "--format", "csv", "--source", "data", "--out", "c", "--target-kind", "wrong"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stderr) == (
        1,
        "ooc: error: --target-kind 'wrong': choose one of classes, onehot, multilabel, regression\n",
    )
    assert not (tmp_path / "c").exists()
    adopted = subprocess.run([*run, "adopt", "data"], cwd=tmp_path, capture_output=True, text=True)
    assert adopted.returncode == 0 and re.match(
        r"adopted data as a csv store \(train 27, test 3; 32 files checksummed\)", adopted.stdout
    )
