"""Converting a source into a store: stream chunks to a layout's writer, then write the manifest."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from ooc import __version__
from ooc.errors import OptionError, StoreExistsError
from ooc.formats import get_format
from ooc.manifest import MANIFEST_NAME, PARTIAL_NAME, manifest_path, write_manifest
from ooc.sources import IdxSource, ImageFolderSource, NpzSource, RepeatedSource, as_source, parse_size

# Source chunks hold at least this many samples (rounded up to whole store chunks): big enough to
# amortise per-call costs, small enough that memory stays flat whatever the dataset's size.
READ_CHUNK_SAMPLES = 8192


def convert(
    out: str | os.PathLike,
    *,
    format: str,
    source: NpzSource | IdxSource | ImageFolderSource | RepeatedSource | str | os.PathLike | None = None,
    limit: int | None = None,
    chunk_size: int | None = None,
    shard_size: int | None = None,
    compression: str | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    repeat: int = 1,
    size: int | tuple[int, int] | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``source`` (default: the bundled MNIST) to a new ``format`` store at ``out``.

    ``size`` (N, (H, W) or "HxW") resizes the images of an image-folder source.

    Returns the manifest. On any failure, including Ctrl-C, the partly written store is removed,
    so nothing half-written is left looking like a store.
    """
    layout = get_format(format)
    options = layout.OPTIONS.resolve(format, chunk_size=chunk_size, compression=compression, dtype=dtype, shard_size=shard_size)
    if limit is not None and limit < 1:
        raise OptionError(f"--limit must be a positive number of samples, got {limit}")
    if repeat < 1:
        raise OptionError(f"--repeat must be a positive number of copies, got {repeat}")
    size = parse_size(size)
    source = as_source(source, size=size)
    if repeat > 1:
        source = RepeatedSource(source, repeat)
    out = Path(out)
    _prepare_output(out, overwrite=overwrite)

    started = time.perf_counter()
    writer = layout.Writer(out, **options)
    try:
        splits = {}
        label_max = -1
        for split in source.splits:
            copies = repeat if split == "train" else 1
            count = source.num_samples(split) if limit is None else min(limit, source.num_samples(split) // copies) * copies
            writer.begin_split(split, count, source.sample_shape, source.label_dtype(split))
            step = _read_step(options["chunk_size"])
            done = 0
            for x, y in source.iter_chunks(split, step, limit):
                if y.size and (y.min() < 0):
                    raise OptionError(f"{source.name}: y_{split} holds negative labels; labels must be class numbers 0, 1, …")
                writer.write(split, done, x, y)
                label_max = max(label_max, int(y.max()) if y.size else -1)
                done += len(x)
                if progress:
                    progress(split, done, count)
            splits[split] = {"count": count}
        writer.close()
        manifest = {
            "format": format,
            "created_by": f"ooc {__version__}",
            "splits": splits,
            "sample_shape": list(source.sample_shape),
            "num_classes": label_max + 1,
            "x_dtype": options["dtype"],
            "options": options,
            "source": {"path": str(source.path), "sha256": source.sha256(), "limit": limit, "repeat": repeat,
                       "size": None if size is None else list(size)},
            "conversion_seconds": round(time.perf_counter() - started, 3),
        }
        if getattr(source, "classes", None):  # an image folder's class names, by label
            manifest["source"]["classes"] = list(source.classes)
        write_manifest(out, manifest)
        (out / PARTIAL_NAME).unlink()
    except BaseException:
        writer.abort()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return manifest


def _read_step(chunk_size: int | None) -> int:
    if not chunk_size:
        return READ_CHUNK_SAMPLES
    return max(1, -(-READ_CHUNK_SAMPLES // chunk_size)) * chunk_size


def remove_store(path: Path, *, overwrite: bool = True) -> None:
    """Delete the store (complete or interrupted) at ``path``, and nothing that ooc did not write."""
    if path.exists() and not path.is_dir():
        raise StoreExistsError(f"{path} is a file; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        complete, partial = manifest_path(path).exists(), (path / PARTIAL_NAME).exists()
        if not (complete or partial):
            raise StoreExistsError(f"{path} exists, is not empty and is not an ooc store (no {MANIFEST_NAME}); refusing to touch it, choose another --out or remove it yourself")
        if not overwrite:
            what = "a store" if complete else "an interrupted conversion"
            raise StoreExistsError(f"{path} already holds {what}; pass --overwrite to replace it")
        shutil.rmtree(path)


def _prepare_output(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` an empty directory, deleting an old store only when allowed and only if it is one."""
    remove_store(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    # marks the directory as ooc's own until the manifest exists, so --overwrite may clear it
    (out / PARTIAL_NAME).write_text("conversion in progress or interrupted\n")
