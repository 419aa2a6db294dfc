"""Training epoch time of stores against memory, in interleaved rounds: the 5 % question alone, with
more rounds and epochs than ``ooc bench`` spends on it (its rounds are memory, store warm, store
cold, ``--repeats`` times, ``--epochs`` 3), on stores it has already converted.

    python bench/train_interleaved.py data/bench/hdf5 data/bench/zarr    # 4 rounds of 5 epochs each

One process; each round trains memory, then every store (``lenet``, batch 512, chunk shuffle, seed 0,
as ``ooc bench``). A run's epoch time is the median of its epochs 2..N; the ratio printed at the end
divides a store's median over the rounds by memory's. A shared 2-core machine drifts by several
percent from minute to minute: interleaving spreads that drift over every target alike.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ooc.benchmark.run import measure_training
from ooc.sources import as_source
from ooc.stores import MemoryStore, open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    memory = MemoryStore.from_source(as_source(None))
    epochs: dict[str, list[float]] = {"memory": [], **{str(p): [] for p in args.stores}}
    for round_ in range(args.rounds):
        for name in epochs:
            store = memory if name == "memory" else open_store(name)
            run = measure_training(store, epochs=args.epochs, batch_size=512, model="lenet", seed=0)
            epochs[name].append(run["epoch_seconds"]["median"])
        print(
            f"round {round_ + 1}: "
            + " | ".join(f"{name} {times[-1]:.3f} s" for name, times in epochs.items()),
            flush=True,
        )
    memory_epoch = statistics.median(epochs["memory"])
    print("\n| target | epoch s, median of rounds | ratio to in-memory |\n| --- | ---: | ---: |")
    for name, times in epochs.items():
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(times) / memory_epoch:.3f} |")


if __name__ == "__main__":
    main()
