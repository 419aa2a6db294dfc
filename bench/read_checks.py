"""Cost of issue 18's read-path CRC checks: a chunk-shuffled pass over the MNIST train split of an hdf5
and an npy store (default options), with and without the checks, in interleaved rounds.

    python bench/read_checks.py [rounds] [formats]  # prints samples/s per round and the median ratio
                                                  # formats: comma-separated, default hdf5,npy
    python bench/read_checks.py train [rounds]    # the same, for training LeNet (epochs 2-3 of 512)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ooc

ROOT = Path(__file__).resolve().parent.parent


def one_pass(path: Path, *, checks: bool, seed: int) -> float:
    store = ooc.open_store(path)
    if not checks:
        without_checks(store)
    n = store.num_samples("train")
    plan = ooc.epoch_batches(
        n, batch_size=128, shuffle="chunk", seed=seed, chunk_size=store.chunk_size or 1024
    )
    store.labels("train")
    started = time.perf_counter()
    for batch in plan:
        store.read("train", batch)
    seconds = time.perf_counter() - started
    store.close()
    return n / seconds


def without_checks(store):
    """The same store, as if converted without read_checksums."""
    store.manifest = {k: v for k, v in store.manifest.items() if k != "read_checksums"}
    return store


def one_training(path: Path, *, checks: bool) -> float:
    """Median epoch seconds of epochs 2-3 (the first also traces the graph)."""
    from ooc.train import train

    store = ooc.open_store(path)
    report = train(store if checks else without_checks(store), epochs=3, batch_size=512, model="lenet",
                   log=lambda line: None)  # fmt: skip
    store.close()
    return statistics.median(e["seconds"] for e in report["history"][1:])


def main_train(rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("hdf5", "npy"):
            path = Path(tmp) / fmt
            ooc.convert(path, format=fmt, source=ROOT / "data" / "mnist.npz")
            seconds = {True: [], False: []}
            for r in range(rounds):
                for checks in (r % 2 == 0, r % 2 != 0):
                    seconds[checks].append(one_training(path, checks=checks))
            on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
            print(f"{fmt}: training epoch with checks {on:.2f} s, without {off:.2f} s; ratio {on / off:.3f}")
            print(f"  with: {seconds[True]}  without: {seconds[False]}")


def main(rounds: int = 7, formats: str = "hdf5,npy") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats.split(","):
            path = Path(tmp) / fmt
            ooc.convert(path, format=fmt, source=ROOT / "data" / "mnist.npz")
            one_pass(path, checks=True, seed=0)  # warm the page cache
            rates = {True: [], False: []}
            for r in range(rounds):
                for checks in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                    rates[checks].append(one_pass(path, checks=checks, seed=r))
            on, off = statistics.median(rates[True]), statistics.median(rates[False])
            print(
                f"{fmt}: with checks {on:,.0f} samples/s, without {off:,.0f} samples/s (medians of {rounds}); "
                f"ratio {on / off:.3f}"
            )
            print(f"  with:    {', '.join(f'{v:,.0f}' for v in rates[True])}")
            print(f"  without: {', '.join(f'{v:,.0f}' for v in rates[False])}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    if sys.argv[1:2] == ["train"]:
        main_train(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 7, *sys.argv[2:3])
