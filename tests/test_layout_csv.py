"""The csv layout: the conformance suite, read back with np.loadtxt as the recipe does; what it puts on
disk is the classic recipe's layout, byte for byte."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ooc
from ooc.errors import CorruptStoreError
from ooc.testing import LayoutTests

from conftest import LIMIT, expected_x


class TestCsv(LayoutTests):
    format = "csv"

    def standard_read(self, path, n):
        # the recipe's own loader: np.loadtxt with its defaults, the labels in column 1 of target.csv
        labels = pd.read_csv(path / "target.csv", header=None).iloc[:, 1].to_numpy()
        files = sorted((path / "train").glob("*.csv"))[:n]
        x = np.stack([np.loadtxt(file).astype(np.float32) for file in files])
        return x[..., None], labels[:n]


def test_files_are_the_recipes(store_dirs, mnist):
    root = store_dirs["csv"]
    names = sorted(p.name for p in (root / "train").iterdir())
    assert (
        names[0] == "001.csv" and names[-1] == "300.csv" and len(names) == LIMIT
    )  # padded to the count's width
    values = np.loadtxt(root / "train" / "001.csv")  # whitespace-separated: np.loadtxt's default
    assert values.shape == (28, 28)
    assert np.array_equal(values.astype(np.float32)[..., None], expected_x(mnist["x_train"][0]))
    first_line = (root / "train" / "001.csv").read_text().splitlines()[5]  # pixels 3, 18, 18, 18
    assert first_line.split(" ")[12:16] == ["0.011764706", "0.07058824", "0.07058824", "0.07058824"]
    target = pd.read_csv(root / "target.csv", header=None)
    assert target.iloc[0].tolist() == ["001.csv", 5]
    assert np.array_equal(target.iloc[:, 1].to_numpy(), mnist["y_train"])


@pytest.fixture
def csv_copy(store_dirs, tmp_path):
    import shutil

    shutil.copytree(store_dirs["csv"], tmp_path / "csv")
    return tmp_path / "csv"


def test_a_file_with_the_wrong_number_of_values_is_named(csv_copy):
    bad = csv_copy / "train" / "042.csv"
    lines = bad.read_text().splitlines()
    lines[3] = " ".join(lines[3].split(" ")[:-1])  # one value short
    bad.write_text("\n".join(lines) + "\n")
    store = ooc.open_store(csv_copy)
    store.read("train", [40, 42])  # the neighbours are fine
    with pytest.raises(
        CorruptStoreError,
        match=rf"^{bad}: expected 784 numeric values \(28 lines of 28\), found 783 values or a non-numeric "
        r"one; re-convert with `ooc convert --format csv --overwrite`$",
    ):
        store.read("train", [41])


def test_a_missing_file_or_short_target_is_named(csv_copy):
    (csv_copy / "test" / "007.csv").unlink()
    store = ooc.open_store(csv_copy)
    with pytest.raises(CorruptStoreError, match=rf"^{csv_copy / 'test' / '007.csv'}: file is missing"):
        store.read("test", [6])
    target = csv_copy / "target.csv"
    target.write_text("".join(target.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(
        CorruptStoreError,
        match=rf"^{target}: expected 300 'file,label' rows with integer labels, found 299 rows",
    ):
        ooc.open_store(csv_copy).labels("train")


def test_lines_that_make_up_for_each_other_are_refused(csv_copy):
    # 042.csv one line long, 043.csv one line short: together the right number of values for two
    # samples, which a parse of the joined files alone would have taken as two images
    long, short = csv_copy / "train" / "042.csv", csv_copy / "train" / "043.csv"
    lines = long.read_text().splitlines()
    long.write_text("\n".join(lines + lines[-1:]) + "\n")
    short.write_text("\n".join(short.read_text().splitlines()[:-1]) + "\n")
    store = ooc.open_store(csv_copy)
    with pytest.raises(
        CorruptStoreError,
        match=rf"^{long}: expected 784 values \(28 lines of 28\), found 812 in 29 lines; re-convert",
    ):
        store.read("train", [41, 42])


def _arrow_float32(tokens: list[str]) -> np.ndarray:
    """pyarrow's parse, correctly rounded: the reference (np.float32(str) rounds through float64)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(tokens), pa.float32()).to_numpy()


def _fast_parse(texts: list[bytes], rows: int, columns: int) -> np.ndarray | None:
    from ooc.formats.csv import _parse_files

    out = np.empty((len(texts), rows, columns), np.float32)
    return out if _parse_files(texts, out) else None


def _float32_midpoints(values: np.ndarray) -> np.ndarray:
    """The float64 halfway between each float32 and the next one up."""
    return (values.astype(np.float64) + np.nextafter(values, np.float32(np.inf)).astype(np.float64)) / 2


def test_the_compiled_parser_is_correctly_rounded():
    from ooc.formats.base import U8_TO_FLOAT32
    from ooc.formats.csv import as_text

    _PIXEL_TEXT = as_text(U8_TO_FLOAT32)

    rng = np.random.default_rng(0)
    low, high = np.array([1e-6, 1e6], np.float32).view(np.uint32)
    floats = rng.integers(low, high, 3000, dtype=np.uint32).view(np.float32)  # the range data is written in
    floats[::2] *= -1
    tokens = [str(v) for v in _PIXEL_TEXT]
    tokens += [np.format_float_positional(v, unique=True) for v in floats]
    tokens += (
        [f"{v:.9g}" for v in floats] + [f"{v:.6e}" for v in floats] + [f"{v:.17g}" for v in floats[:500]]
    )
    tokens += [f"{d}.{rng.integers(0, 10**9)}" for d in rng.integers(0, 10**6, 500)] + [
        "-0.0",
        "+1",
        ".5",
        "5.",
        "1E3",
        "0",
    ]
    tokens += [f"{m:.17g}" for m in _float32_midpoints(floats[:300])]  # round to a midpoint in float64
    expected = _arrow_float32(tokens)
    answered = 0
    for token, value in zip(tokens, expected):
        parsed = _fast_parse([token.encode() + b"\n"], 1, 1)
        if parsed is not None:
            assert parsed.view(np.uint32)[0, 0, 0] == value.view(np.uint32), token
            answered += 1
    assert answered > len(tokens) * 0.9
    # any float32 at all: exact, or declined
    anywhere = rng.integers(1, 0x7F800000, 2000, dtype=np.uint32).view(np.float32)
    tokens = [f"{v:.9g}" for v in anywhere]
    for token, value in zip(tokens, _arrow_float32(tokens)):
        parsed = _fast_parse([token.encode() + b"\n"], 1, 1)
        assert parsed is None or parsed.view(np.uint32)[0, 0, 0] == value.view(np.uint32), token
    # every pixel text ooc writes is answered by the fast path, 28 lines of 28 per file
    texts = [
        "\n".join(",".join(_PIXEL_TEXT[rng.integers(0, 256, 28)]) for _ in range(28)) + "\n" for _ in range(3)
    ]
    parsed = _fast_parse([t.encode() for t in texts], 28, 28)
    assert parsed is not None and parsed.shape == (3, 28, 28)
    assert np.array_equal(parsed.ravel(), _arrow_float32("".join(texts).replace("\n", ",").split(",")[:-1]))
    assert set(np.unique(parsed)) <= set(U8_TO_FLOAT32)


@pytest.mark.parametrize(
    "token", ["1.0000000596046448", "1e-45", "3.5e38", "nan", "1e0001", "12345678901234567890"]
)
def test_what_the_compiled_parser_declines_is_read_exactly(csv_copy, token):
    """A midpoint in float64, a subnormal, an overflow, nan, a long exponent, 20 digits: the batch
    goes to pyarrow's parser, still exact (np.loadtxt gives 1.0 for the first)."""
    victim = csv_copy / "train" / "005.csv"
    lines = victim.read_text().splitlines()
    lines[0] = " ".join([token] + lines[0].split(" ")[1:])
    victim.write_text("\n".join(lines) + "\n")
    assert _fast_parse([victim.read_bytes()], 28, 28) is None
    x, _ = ooc.open_store(csv_copy).read("train", [3, 4])
    assert x[1, 0, 0, 0].view(np.uint32) == _arrow_float32([token])[0].view(np.uint32)
    assert np.array_equal(x[1, 0, 1:], ooc.open_store(csv_copy).read("train", [4])[0][0, 0, 1:])
