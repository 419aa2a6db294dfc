"""A source listed class by class: MNIST as an image folder (train/0/*.png … train/9/*.png), which
is how image folders list their samples. Converted with the default write order (a seeded shuffle)
and with --order source, then trained with the chunk shuffle and with the exact global shuffle:
the test accuracies say whether a layout's chunks carry the source's order into training.

    python bench/class_sorted.py [--epochs 5] [--model lenet-wide] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import ooc
from ooc.sources import SourceOptions
from ooc.train import train

ROOT = Path("data/bench/class-sorted")


def image_folder(root: Path) -> Path:
    folder = root / "mnist-png"
    if (folder / "test" / "9").is_dir():
        return folder
    with np.load("data/mnist.npz") as d:
        for split in ("train", "test"):
            x, y = d[f"x_{split}"], d[f"y_{split}"]
            for label in range(10):
                (folder / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i, (image, label) in enumerate(zip(x, y)):
                Image.fromarray(image).save(folder / split / str(label) / f"{i:05d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", default="lenet-wide")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    folder = image_folder(ROOT)
    rows = []
    for order in ("auto", "source"):
        out = ROOT / f"zarr-{order}"
        started = time.perf_counter()
        manifest = ooc.convert(
            out, format="zarr", source=folder, overwrite=True, source_options=SourceOptions(order=order)
        )
        seconds = time.perf_counter() - started
        print(f"--order {order}: {manifest['order']}, converted in {seconds:.1f} s", flush=True)
        store = ooc.open_store(out)
        for shuffle in ("chunk", "global"):
            report = train(
                store,
                model=args.model,
                epochs=args.epochs,
                batch_size=args.batch_size,
                shuffle=shuffle,
                strategy=None,
                log=lambda line: None,
            )
            rows.append((order, shuffle, report["test"]["accuracy"], report["history"][-1]["seconds"]))
            print(f"  --shuffle {shuffle}: test accuracy {report['test']['accuracy']:.4f}", flush=True)
    print("\n| write order | --shuffle | test accuracy | last epoch s |\n| --- | --- | ---: | ---: |")
    for order, shuffle, accuracy, seconds in rows:
        print(f"| {order} | {shuffle} | {accuracy:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
