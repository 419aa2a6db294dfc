"""The recipe's own folder, made the way its code writes it (``np.savetxt(path, image / 255)`` with its
defaults: ``%.18e``, space-separated; ``pd.DataFrame(labels).to_csv("target.csv", header=False)``),
in each dialect: what ooc converts and what ``ooc.batches`` reads of it adopted in place, against
the recipe's loader (``np.loadtxt(file)`` per file) and against Python merely reading the files'
bytes. Interleaved rounds on the warm page cache (one unmeasured read first); the bare read runs
twice a round (A and A'), the control of how much the machine drifts within a round.

    python bench/recipe_folder.py [--limit 20000] [--rounds 3] [--dialects whitespace,comma,tab,semicolon]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

import ooc
from ooc.formats.text import DELIMITERS
from ooc.sources import SourceOptions

ROOT = Path("data/bench/recipe")
TEST_SHARE = 6  # test/ holds limit // 6 samples, MNIST's proportion
BATCH = 128


def recipe_folder(dialect: str, limit: int) -> Path:
    """train/ and test/ of np.savetxt files in ``dialect`` and the recipe's two targets files,
    written once (a ``.complete`` marker says the folder is whole)."""
    folder = ROOT / f"{dialect}-{limit}"
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    with np.load("data/mnist.npz") as mnist:
        parts = {
            "train": (mnist["x_train"][:limit], mnist["y_train"][:limit], "target.csv"),
            "test": (
                mnist["x_test"][: limit // TEST_SHARE],
                mnist["y_test"][: limit // TEST_SHARE],
                "test_target.csv",
            ),
        }
    for split, (images, labels, targets) in parts.items():
        (folder / split).mkdir(parents=True)
        for i, image in enumerate(images):
            np.savetxt(folder / split / f"{i:05d}.csv", image / 255, delimiter=DELIMITERS[dialect].decode())
        pd.DataFrame(labels).to_csv(folder / targets, header=False)
    (folder / ".complete").touch()
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted((folder / "train").glob("*.csv")) + sorted((folder / "test").glob("*.csv"))


def bare_read(folder: Path) -> int:
    """What any reader must at least do: open each file and read its bytes, in Python."""
    files = _files(folder)
    for path in files:
        with open(path, "rb") as f:
            f.read()
    return len(files)


def loadtxt(folder: Path) -> int:
    """The recipe's loader: np.loadtxt(file) with its defaults, the labels by pandas."""
    n = 0
    for split, targets in (("train", "target.csv"), ("test", "test_target.csv")):
        labels = pd.read_csv(folder / targets, header=None).iloc[:, 1].to_numpy()
        delimiter = (
            None if folder.name.startswith("whitespace") else DELIMITERS[folder.name.split("-")[0]].decode()
        )
        for path, _label in zip(sorted((folder / split).glob("*.csv")), labels):
            np.loadtxt(path, delimiter=delimiter)
            n += 1
    return n


def convert(folder: Path) -> int:
    out = ROOT / "converted"
    manifest = ooc.convert(
        out,
        format="zarr",
        source=folder,
        source_options=SourceOptions(targets=folder / "target.csv"),
        overwrite=True,
    )
    shutil.rmtree(out)
    return sum(split["count"] for split in manifest["splits"].values())


def adopt(folder: Path) -> int:
    """What adopting costs once: every file read and checksummed, nothing written but the manifest."""
    unadopt(folder)
    manifest = ooc.adopt(folder, targets=folder / "target.csv")
    return sum(split["count"] for split in manifest["splits"].values())


def adopted_batches(folder: Path) -> int:
    """One shuffled epoch of each split of the folder adopted in place."""
    store, n = ooc.open_store(folder), 0
    for split in ("train", "test"):
        for x, _y in ooc.batches(store, split, batch_size=BATCH, shuffle=True, seed=0):
            n += len(x)
    store.close()
    return n


def unadopt(folder: Path) -> None:
    """A folder with a manifest is a store, not a source: convert() must see the bare folder."""
    for name in ("ooc.json", "ooc_train_target.csv", "ooc_test_target.csv"):
        (folder / name).unlink(missing_ok=True)


PASSES = {
    "bare read A": bare_read,
    "np.loadtxt per file": loadtxt,
    "ooc convert --format zarr": convert,
    "ooc adopt": adopt,
    "ooc.batches, adopted": adopted_batches,
    "bare read A'": bare_read,
}


def measure(folder: Path, rounds: int) -> dict[str, float]:
    bare_read(folder)  # the page cache, warm
    rates: dict[str, list[float]] = {name: [] for name in PASSES}
    names = list(PASSES)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # each pass leads a round once
        for name in order:
            if name == "ooc convert --format zarr":
                unadopt(folder)  # a folder with a manifest is a store, not a source
            if name == "ooc.batches, adopted" and not (folder / "ooc.json").is_file():
                ooc.adopt(folder, targets=folder / "target.csv")  # not measured: the pass is the reading
            started = time.perf_counter()
            n = PASSES[name](folder)
            seconds = time.perf_counter() - started
            rates[name].append(n / seconds)
            print(
                f"  round {round_ + 1}: {name}: {n} files in {seconds:.2f} s = {n / seconds:,.0f} files/s",
                flush=True,
            )
    unadopt(folder)
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dialects", default="whitespace,comma,tab,semicolon")
    args = parser.parse_args()
    table = []
    for dialect in args.dialects.split(","):
        folder = recipe_folder(dialect, args.limit)
        size = sum(p.stat().st_size for p in _files(folder)) / len(_files(folder))
        print(f"{dialect}: {len(_files(folder))} files of {size / 1024:.1f} KB", flush=True)
        table.append((dialect, measure(folder, args.rounds)))
    print(
        "\n| dialect | bare read | A' / A | np.loadtxt | convert | × loadtxt | of bare | adopt | batches "
        "| × loadtxt | of bare |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dialect, m in table:
        bare, again, load = m["bare read A"], m["bare read A'"], m["np.loadtxt per file"]
        conv, read = m["ooc convert --format zarr"], m["ooc.batches, adopted"]
        print(
            f"| {dialect} | {bare:,.0f} | {again / bare:.2f} | {load:,.0f} | {conv:,.0f} | "
            f"{conv / load:.1f} | {conv / bare:.2f} | {m['ooc adopt']:,.0f} | {read:,.0f} | {read / load:.1f} | "
            f"{read / bare:.2f} |"
        )


if __name__ == "__main__":
    main()
