"""Converting the recipe's own folder (one CSV per sample, a targets file) against reading the same
files the recipe's way (np.loadtxt, file by file), in interleaved rounds on the same files.

    python bench/recipe_folder.py [--limit 20000] [--rounds 3]
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

ROOT = Path("data/bench/recipe")


def recipe_folder(limit: int) -> Path:
    """ooc's csv layout is the recipe's, file for file: converted, then stripped of its manifest."""
    folder = ROOT / f"mnist-csv-{limit}"
    if not (folder / "train_target.csv").is_file():
        ooc.convert(folder, format="csv", limit=limit, overwrite=True)
        (folder / "ooc.json").unlink()
    return folder


def loadtxt_pass(folder: Path) -> tuple[float, int]:
    started, n = time.perf_counter(), 0
    for split in ("train", "test"):
        names = pd.read_csv(folder / f"{split}_target.csv", header=None).iloc[:, 0]
        for name in names:
            np.loadtxt(folder / split / name, delimiter=",", dtype=np.float32)
            n += 1
    return time.perf_counter() - started, n


def convert_pass(folder: Path) -> tuple[float, int]:
    out = ROOT / "converted"
    started = time.perf_counter()
    manifest = ooc.convert(out, format="zarr", source=folder, overwrite=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(out)
    return seconds, sum(split["count"] for split in manifest["splits"].values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = recipe_folder(args.limit)
    rates = {"ooc convert --format zarr": [], "np.loadtxt per file": []}
    for round_ in range(args.rounds):
        for name, run in (("ooc convert --format zarr", convert_pass), ("np.loadtxt per file", loadtxt_pass))[
            :: 1 if round_ % 2 == 0 else -1
        ]:
            seconds, n = run(folder)
            rates[name].append(n / seconds)
            print(
                f"round {round_ + 1}: {name}: {n} samples in {seconds:.1f} s = {n / seconds:,.0f} samples/s",
                flush=True,
            )
    convert, loadtxt = (
        statistics.median(rates["ooc convert --format zarr"]),
        statistics.median(rates["np.loadtxt per file"]),
    )
    print(
        f"\nmedian: convert {convert:,.0f} samples/s, np.loadtxt {loadtxt:,.0f} samples/s: {convert / loadtxt:.1f}x"
    )


if __name__ == "__main__":
    main()
