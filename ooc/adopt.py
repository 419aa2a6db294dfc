"""``ooc adopt``: make a store of the recipe's CSV files where they are, without writing a sample.

The manifest (and checksums of every sample and targets file) is written beside the files, and says
where each split's files and targets file are (``ooc.formats.csv``); a split carved out with
``--test-fraction``, or whose targets file does not name its files (``index,label`` rows, one column
of labels, class names), gets a targets file of ooc's own, ``ooc_<split>_target.csv``, naming its
files in the folder they are in; the user's targets files are left as they are.
``ooc train --store csv``, ``ooc verify`` and ``ooc bench`` then work on them in place. ``ooc verify``
checks the files the manifest lists; other files in the folder are the user's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ooc.core.version import __version__
from ooc.errors import OptionError, StoreExistsError
from ooc.formats.csv import as_text
from ooc.manifest import CHECKSUM_ALGORITHM, MANIFEST_NAME, file_checksum, write_manifest
from ooc.schema import TargetTally
from ooc.sources.base import DEFAULT_TEST_FRACTION, Carved
from ooc.sources.recipe import RecipeSource


def adopt(
    path: str | os.PathLike,
    *,
    targets: str | os.PathLike | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    target_kind: str | None = None,
    delimiter: str | None = None,
    dtype: str | None = None,
    progress=None,
) -> dict[str, Any]:
    """Write the manifest that makes the recipe's folder at ``path`` a csv store; returns it."""
    started = time.perf_counter()
    root = Path(path).absolute()
    if (root / MANIFEST_NAME).exists():
        raise StoreExistsError(f"{root} is an ooc store already; nothing to adopt")
    source = RecipeSource.open(
        root, targets=targets, target_kind=target_kind, delimiter=delimiter, dtype=dtype
    )
    splits = _split_files(source, test_fraction=test_fraction, seed=seed)
    tally = TargetTally()
    entries, counts, files = {}, {}, {}
    for split, (entry, rows) in splits.items():
        values = entry.values[rows]
        tally.add(source.schema, values, where=str(entry.targets), split=split)
        whole = (
            entry.as_listed and len(rows) == len(entry.names) and np.array_equal(rows, np.arange(len(rows)))
        )
        targets_file = entry.targets if whole else _write_targets(root, split, entry.names[rows], values)
        entries[split] = {
            "folder": entry.folder.relative_to(root).as_posix() or ".",
            "targets": targets_file.relative_to(root).as_posix(),
            "header": bool(entry.header) if targets_file == entry.targets else False,
        }
        counts[split] = {"count": len(rows)}
        for file in [targets_file, *(entry.folder / name for name in entry.names[rows])]:
            files[file.relative_to(root).as_posix()] = file_checksum(file)
            if progress:
                progress(split, len(files), None)
    manifest = {
        "format": "csv",
        "created_by": f"ooc {__version__}",
        "adopted": True,
        "splits": counts,
        **tally.finish(source.schema).to_manifest(),
        "order": {"kind": "source", **({"grouped_by_class": True} if tally.grouped_by_class() else {})},
        "options": {
            "chunk_size": None,
            "compression": "none",
            "dtype": source.schema.dtype.name,
            "delimiter": source.delimiter,
            "rounding": "float64",  # as np.loadtxt reads the files, like the conversion of the same folder
        },
        **({"notes": source.notes} if source.notes else {}),
        "csv": entries,
        "source": {
            "path": str(root.absolute()),
            "adopted": True,
            **(
                {"test_fraction": test_fraction or DEFAULT_TEST_FRACTION, "seed": seed}
                if "test" not in source.splits
                else {}
            ),
        },
        "conversion_seconds": round(time.perf_counter() - started, 3),
        "checksums": {"algorithm": CHECKSUM_ALGORITHM, "files": files},
    }
    write_manifest(root, manifest)
    return manifest


def _split_files(source: RecipeSource, *, test_fraction, seed) -> dict[str, tuple[Any, np.ndarray]]:
    """Each split's source entry and the rows of it the split holds."""
    if "test" in source.splits:
        if test_fraction is not None:
            raise OptionError(f"--test-fraction: {source.path} has a test split of its own; drop the option")
        return {split: (source.files[split], np.arange(source.num_samples(split))) for split in source.splits}
    carved = Carved(source, test_fraction=test_fraction or DEFAULT_TEST_FRACTION, seed=seed)
    return {split: (source.files["train"], carved.indices[split]) for split in ("train", "test")}


def _write_targets(root: Path, split: str, names: np.ndarray, values: np.ndarray) -> Path:

    path = root / f"ooc_{split}_target.csv"  # target.csv and test_target.csv, if there, are the user's
    if path.exists():
        raise StoreExistsError(
            f"{path} exists; adopting would replace it: move it away, or pass it as --targets"
        )
    rows = [",".join(row) for row in as_text(values.reshape(len(values), -1))]
    path.write_text("".join(f"{name},{row}\n" for name, row in zip(names, rows)), encoding="ascii")
    return path
