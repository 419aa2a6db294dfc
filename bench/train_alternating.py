"""Epoch time of stores against memory, epoch by epoch on ONE model: the finest-grained 5 % check.

    python bench/train_alternating.py data/bench/hdf5 data/bench/zarr           # 9 rounds
    python bench/train_alternating.py --twice-memory data/bench/zarr            # with an A/A control

One process, one ``lenet`` (batch 512, chunk shuffle, seed 0). Each round runs one epoch of the
shared loop (``ooc.train``'s epoch function, validation included but not timed) from memory, then
one from each store, on the same model: neighbouring epochs are seconds apart, so a machine's drift
from minute to minute cancels in each pair. Round 1 (it traces the graph) is not counted. Printed: each
target's median epoch time, and the median (min–max) of its epochs divided by memory's of the same
round. ``--twice-memory`` adds a second in-memory target: its ratios show what noise alone gives.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--twice-memory", action="store_true")
    args = parser.parse_args()

    import keras

    from ooc.checkpoint import Progress
    from ooc.models import Task, build_model
    from ooc.sources import as_source
    from ooc.stores import MemoryStore, open_store
    from ooc.train import _epochs_with_train_on_batch, split_validation

    memory = MemoryStore.from_source(as_source(None))
    targets = {"memory": memory}
    if args.twice_memory:
        targets["memory (again)"] = MemoryStore.from_source(as_source(None))
    targets.update({str(p): open_store(p) for p in args.stores})
    keras.utils.set_random_seed(0)
    train_idx, val_idx = split_validation(memory.labels("train"), val_fraction=0.1, seed=0)
    net = build_model(
        "lenet", input_shape=memory.sample_shape, task=Task.of(memory.schema), learning_rate=2e-3
    )
    seconds: dict[str, list[float]] = {name: [] for name in targets}
    epoch = 0
    for round_ in range(args.rounds):
        for name, store in targets.items():
            history = _epochs_with_train_on_batch(
                net,
                store,
                train_idx,
                val_idx,
                epochs=epoch + 1,
                batch_size=512,
                shuffle="chunk",
                seed=0,
                log=lambda line: None,
                before_epoch=None,
                after_batch=None,
                progress=Progress(epoch=epoch),
                checkpoints=None,
                on_error="raise",
            )
            epoch += 1
            if round_:
                seconds[name].append(history[-1]["seconds"])
        if round_:
            print(
                f"round {round_}: " + " | ".join(f"{name} {s[-1]:.3f} s" for name, s in seconds.items()),
                flush=True,
            )
    print(
        "\n| target | epoch s, median | paired ratio to in-memory, median (min–max) |\n| --- | ---: | ---: |"
    )
    for name, s in seconds.items():
        ratios = [a / b for a, b in zip(s, seconds["memory"])]
        print(
            f"| {name} | {statistics.median(s):.3f} | {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}–{max(ratios):.3f}) |"
        )


if __name__ == "__main__":
    main()
