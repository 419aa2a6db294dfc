"""The recipe's folder made exactly as the recipe's own code writes it (``np.savetxt(path, image)``
with its defaults, ``pd.DataFrame(labels).to_csv("data/target.csv", header=False)``), in every
dialect and targets form real folders have: converted and adopted, every sample is what
``np.loadtxt(file)`` reads, with its own label; every ambiguity is refused in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ooc
from ooc.errors import SourceError
from ooc.formats import FORMATS
from ooc.formats.text import BOM
from ooc.manifest import write_manifest
from ooc.sources import SourceOptions

N_TRAIN, N_TEST = 24, 8


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)) / 255  # float64, as the recipe has them


def make_recipe_folder(root: Path, *, delimiter: str = " ", edit=lambda text: text) -> dict:
    """train/ and test/ of np.savetxt files (``delimiter`` passed on, %.18e), target.csv and
    test_target.csv by pandas with its index column; ``edit`` rewrites each file's bytes."""
    labels = {}
    for split, n, seed in (("train", N_TRAIN, 1), ("test", N_TEST, 2)):
        (root / split).mkdir(parents=True)
        for i, image in enumerate(_images(n, seed)):
            path = root / split / f"{i + 1:05d}.csv"
            np.savetxt(path, image, delimiter=delimiter)
            path.write_bytes(edit(path.read_bytes()))
        labels[split] = np.random.default_rng(seed).integers(0, 10, n)
        name = "target.csv" if split == "train" else "test_target.csv"
        pd.DataFrame(labels[split]).to_csv(root / name, header=False)
    return labels


def _loadtxt(folder: Path) -> np.ndarray:
    """The recipe's own reading: np.loadtxt with its defaults, file by file, then float32 (Keras')."""
    return np.stack([np.loadtxt(f).astype(np.float32) for f in sorted(folder.glob("*.csv"))])


def _all(store, split):
    x, y = store.read(split, np.arange(store.num_samples(split)))
    return x, y


def _source_order(**options) -> SourceOptions:
    return SourceOptions(order="source", **options)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe") / "data"
    return root, make_recipe_folder(root)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_recipes_folder_converts_to_every_layout(recipe, fmt, tmp_path):
    root, labels = recipe
    if fmt == "tfrecord":
        pytest.importorskip("tensorflow")
    ooc.convert(tmp_path / fmt, format=fmt, source=root, source_options=_source_order())
    with ooc.open_store(tmp_path / fmt) as store:
        for split in ("train", "test"):
            x, y = _all(store, split)
            assert x.dtype == np.float32 and x.shape[1:] == (28, 28)
            assert np.array_equal(x.view(np.uint32), _loadtxt(root / split).view(np.uint32))
            assert np.array_equal(y, labels[split])


def test_the_recipes_folder_is_adopted_in_place(tmp_path):
    root = tmp_path / "data"
    labels = make_recipe_folder(root)
    manifest = ooc.adopt(root, targets=root / "target.csv")
    assert manifest["options"]["delimiter"] == "whitespace"
    assert manifest["notes"] == [
        "targets matched to files by position: target.csv row 1 → train/00001.csv",
        "targets matched to files by position: test_target.csv row 1 → test/00001.csv",
    ]
    with ooc.open_store(root) as store:
        for split in ("train", "test"):
            x, y = _all(store, split)
            assert np.array_equal(x.view(np.uint32), _loadtxt(root / split).view(np.uint32))
            assert np.array_equal(y, labels[split])
    assert (root / "target.csv").read_text().startswith("0,")  # the user's file is left as it was


DIALECTS = {
    "comma": dict(delimiter=","),
    "tab": dict(delimiter="\t"),
    "semicolon": dict(delimiter=";"),
    "crlf": dict(edit=lambda t: t.replace(b"\n", b"\r\n")),
    "bom": dict(edit=lambda t: BOM + t),
    "trailing delimiters": dict(delimiter=",", edit=lambda t: t.replace(b"\n", b",\n")),
    "blank lines": dict(edit=lambda t: b"\n" + t.replace(b"\n", b"\n\n")),
    "runs of spaces and tabs": dict(edit=lambda t: b"  " + t.replace(b" ", b" \t  ")),
    "no final newline": dict(delimiter=",", edit=lambda t: t[:-1]),
}


@pytest.fixture(scope="module")
def whitespace_store(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "npy"
    ooc.convert(out, format="npy", source=recipe[0], source_options=_source_order())
    return ooc.open_store(out)


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_dialect_gives_the_identical_store(dialect, whitespace_store, tmp_path):
    root = tmp_path / "data"
    make_recipe_folder(root, **DIALECTS[dialect])
    ooc.convert(tmp_path / "npy", format="npy", source=root, source_options=_source_order())
    with ooc.open_store(tmp_path / "npy") as store:
        for split in ("train", "test"):
            x, y = _all(store, split)
            expected_x, expected_y = _all(whitespace_store, split)
            assert np.array_equal(x.view(np.uint32), expected_x.view(np.uint32)) and np.array_equal(
                y, expected_y
            )


def test_a_file_in_another_dialect_than_the_first_is_named(tmp_path):
    root = tmp_path / "data"
    make_recipe_folder(root)
    np.savetxt(root / "train" / "00003.csv", _images(1, 5)[0], delimiter=",")
    with pytest.raises(
        SourceError,
        match=rf"^{root}/train/00003.csv: expected 784 whitespace-separated numbers \(28 lines of 28, like the "
        r"first file\); fix or remove the file, or name the files' dialect with --delimiter$",
    ):
        ooc.convert(tmp_path / "z", format="npy", source=root)
    assert not (tmp_path / "z").exists()


def test_float64_text_is_stored_without_rounding_and_nan_inf_are_kept(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((12, 5, 3)) * 10.0 ** rng.integers(-20, 20, (12, 5, 3))
    samples[0, 0, :] = [np.nan, np.inf, -np.inf]
    for i, sample in enumerate(samples):
        np.savetxt(root / "train" / f"{i}.csv", sample)
    pd.DataFrame(rng.standard_normal(12)).to_csv(root / "target.csv", header=False)
    for dtype in ("float64", "float32"):
        ooc.convert(
            tmp_path / dtype,
            format="npy",
            source=root,
            dtype=dtype,
            source_options=_source_order(test_fraction=0.25),
        )
        with ooc.open_store(tmp_path / dtype) as store:
            x, _ = _all(store, "train")
            test, _ = _all(store, "test")
            got = np.concatenate([x, test])
            assert got.dtype == dtype
            want = np.stack([np.loadtxt(root / "train" / f"{i}.csv", dtype=dtype) for i in range(12)])
            order = [
                np.flatnonzero((want == g).all(axis=(1, 2)) | np.isnan(want[:, 0, 0]) & np.isnan(g[0, 0]))[0]
                for g in got
            ]
            assert sorted(order) == list(range(12))
            assert np.array_equal(got, want[order], equal_nan=True)


# -- targets files: every form the recipe's readers use, and every ambiguity ---------------------------
def _plain_folder(root: Path, n: int = 6) -> None:
    (root / "train").mkdir(parents=True)
    for i in range(n):
        np.savetxt(root / "train" / f"{i + 1}.csv", np.full((2, 3), i / 10))


TARGET_FORMS = {
    "filename,label": (
        "1.csv,3\n2.csv,1\n3.csv,4\n4.csv,1\n5.csv,5\n6.csv,9\n",
        [3, 1, 4, 1, 5, 9],
        None,
        False,
    ),
    "filename,label with a header": (
        "filename,label\n2.csv,1\n1.csv,3\n3.csv,4\n4.csv,1\n5.csv,5\n6.csv,9\n",
        [3, 1, 4, 1, 5, 9],
        None,
        False,
    ),
    "index,label (pandas to_csv)": ("0,3\n1,1\n2,4\n3,1\n4,5\n5,9\n", [3, 1, 4, 1, 5, 9], None, True),
    "index,label with pandas' header": (",0\n0,3\n1,1\n2,4\n3,1\n4,5\n5,9\n", [3, 1, 4, 1, 5, 9], None, True),
    "id,label with a header": ("id,label\n1,3\n2,1\n3,4\n4,1\n5,5\n6,9\n", [3, 1, 4, 1, 5, 9], None, True),
    "a single column of labels": ("3\n1\n4\n1\n5\n9\n", [3, 1, 4, 1, 5, 9], None, True),
    "class names": ("cat\ndog\ncat\nbird\ndog\ncat\n", [1, 2, 1, 0, 2, 1], ("bird", "cat", "dog"), True),
    "class names with a header": (
        "file,label\n1.csv,cat\n2.csv,dog\n3.csv,cat\n4.csv,bird\n5.csv,dog\n6.csv,cat\n",
        [1, 2, 1, 0, 2, 1],
        ("bird", "cat", "dog"),
        False,
    ),
}


@pytest.mark.parametrize("form", list(TARGET_FORMS))
def test_every_targets_form_is_read(form, tmp_path):
    text, labels, names, by_position = TARGET_FORMS[form]
    _plain_folder(tmp_path)
    (tmp_path / "t.csv").write_text(text)
    source = ooc.sources.RecipeSource.open(tmp_path, targets=tmp_path / "t.csv")
    by_file = dict(zip(source.files["train"].names.tolist(), source.targets("train").tolist()))
    assert [by_file[f"{i + 1}.csv"] for i in range(6)] == labels
    assert source.schema.class_names == names
    row = 2 if text.split("\n")[0] in (",0", "id,label") else 1
    assert source.notes == (
        [f"targets matched to files by position: t.csv row {row} → train/1.csv"] if by_position else []
    )


def test_vector_targets_and_natural_order(tmp_path):
    _plain_folder(tmp_path, n=12)  # 1.csv … 12.csv: 10.csv comes after 9.csv, not after 1.csv
    pd.DataFrame(np.arange(24).reshape(12, 2) / 4).to_csv(tmp_path / "t.csv", header=False)
    source = ooc.sources.RecipeSource.open(tmp_path, targets=tmp_path / "t.csv")
    assert source.files["train"].names.tolist() == [f"{i}.csv" for i in range(1, 13)]
    assert np.array_equal(source.targets("train"), (np.arange(24).reshape(12, 2) / 4).astype(np.float32))


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "0,3\n1,1\n2,4\n",
            r"t.csv has 3 target rows but {folder} holds 6 sample files: rows matched by position "
            r"need one row per file; add the missing rows, or name each row's file in a first column$",
        ),
        (
            "0,3\n1,1\n3,4\n4,1\n5,5\n6,9\n",
            r"t.csv: row 3 has index 3, expected 2: an index column must count "
            r"the files 0, 1, 2, … \(or 1, 2, …\) in name order; fix the index or name each row's file$",
        ),
        (
            "1.csv,3\n2.csv,1\n3.csv,4\n4.csv,1\n5.csv,5\nseven.csv,9\n",
            r"{folder}/seven.csv: no such file, but "
            r".*t.csv names it \(1 missing in all\); restore the files or remove their rows$",
        ),
        (
            "a,3\nb,1\nc,4\nd,1\ne,5\nf,9\n",
            r"t.csv: row 1 names 'a', which matches no file in {folder}; name the "
            r"files as they are, or give 'index,label' rows \(matched to the files in name order\)$",
        ),
        ("0,3\n1,1,2\n", r"t.csv: row 2 has 3 fields, row 1 has 2; give every row the same fields$"),
        (
            "0,3\n1,x\n2,4\n3,1\n4,5\n5,9\n",
            r"t.csv: row 2 holds 'x' among numbers; targets are numbers, or one "
            r"class name a row$",
        ),
    ],
    ids=[
        "counts differ",
        "the index skips",
        "a name matches no file",
        "names that are no files",
        "ragged",
        "text among numbers",
    ],
)
def test_ambiguous_targets_are_refused_in_one_line(tmp_path, text, message):
    _plain_folder(tmp_path)
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(
        SourceError, match=message.format(folder=re.escape(str(tmp_path / "train")))
    ) as caught:
        ooc.sources.RecipeSource.open(tmp_path, targets=tmp_path / "t.csv")
    assert "\n" not in str(caught.value)


# -- what ooc writes, the recipe reads ------------------------------------------------------------------
def test_the_csv_layout_is_what_the_recipes_loader_reads(recipe, tmp_path):
    root, labels = recipe
    ooc.convert(tmp_path / "out", format="csv", source=root, source_options=_source_order())
    files = sorted((tmp_path / "out" / "train").glob("*.csv"))
    x = np.stack([np.loadtxt(file) for file in files]).astype(np.float32)  # the recipe's own loader
    y = pd.read_csv(tmp_path / "out" / "target.csv", header=None).iloc[:, 1].to_numpy()
    assert np.array_equal(x, _loadtxt(root / "train")) and np.array_equal(y, labels["train"])
    ooc.convert(
        tmp_path / "comma", format="csv", source=root, delimiter="comma", source_options=_source_order()
    )
    first = np.loadtxt(min((tmp_path / "comma" / "train").glob("*.csv")), delimiter=",").astype(np.float32)
    assert np.array_equal(first, x[0])


def test_a_csv_store_written_before_the_delimiter_option_still_reads(tmp_path):
    """Then: comma-separated samples, train_target.csv, no delimiter in the manifest's options."""
    ooc.convert(tmp_path / "s", format="csv", limit=20, delimiter="comma")
    expected = _all(ooc.open_store(tmp_path / "s"), "train")
    (tmp_path / "s" / "target.csv").rename(tmp_path / "s" / "train_target.csv")
    manifest = json.loads((tmp_path / "s" / "ooc.json").read_text())
    del manifest["options"]["delimiter"]
    files = manifest["checksums"]["files"]
    files["train_target.csv"] = files.pop("target.csv")
    del manifest["ooc_manifest_version"], manifest["manifest_crc32"]
    write_manifest(tmp_path / "s", manifest)
    x, y = _all(ooc.open_store(tmp_path / "s"), "train")
    assert np.array_equal(x, expected[0]) and np.array_equal(y, expected[1])


def test_the_command_line_converts_and_adopts_the_recipes_folder(tmp_path):
    root = tmp_path / "data"
    make_recipe_folder(root)

    def ooc_cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ooc", *args], capture_output=True, text=True, cwd=tmp_path
        )

    done = ooc_cli(
        "convert", "--format", "zarr", "--source", "data", "--targets", "data/target.csv", "--out", "z", "-q"
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0]
        == "targets matched to files by position: target.csv row 1 → train/00001.csv"
    )
    done = ooc_cli("adopt", "data", "--targets", "data/target.csv")
    assert done.returncode == 0, done.stderr
    info = ooc_cli("info", "data")
    assert (
        "note:        targets matched to files by position: target.csv row 1 → train/00001.csv" in info.stdout
    )
    bad = ooc_cli("convert", "--format", "zarr", "--source", "data", "--delimiter", "pipe", "--out", "p")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "ooc: error: --delimiter 'pipe': choose one of comma, whitespace, tab, semicolon"
    ]
    assert not (tmp_path / "p").exists()


def test_a_manifest_with_an_unknown_rounding_is_refused(tmp_path):
    ooc.convert(tmp_path / "s", format="csv", limit=20)
    manifest = json.loads((tmp_path / "s" / "ooc.json").read_text())
    manifest["options"]["rounding"] = "float16"
    del manifest["ooc_manifest_version"], manifest["manifest_crc32"]
    write_manifest(tmp_path / "s", manifest)
    with pytest.raises(
        Exception,
        match=r"'options' is .*, expected a rounding of float32 or float64 \(csv folders\); re-convert the store$",
    ):
        ooc.open_store(tmp_path / "s")
