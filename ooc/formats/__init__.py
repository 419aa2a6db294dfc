"""The on-disk layouts: the table name -> module, the contract, the read engine, one module per layout.

Belongs here: ``FORMATS`` (adding a layout is one module and one line here: the CLI's choices, the
conformance suite and the benchmark read the table and the layouts' declarations, ``layouts()``), the
contract (``base``), what every read checks (``integrity``), the chunk engine (``chunked``,
``readahead``), the per-sample text parser (``text``) and the layouts. Does not belong here: which
samples form a batch (``ooc.sampling``), iterating over batches (``ooc.loader``), converting (``ooc.convert``)
or the benchmark; no layout imports another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ooc.errors import OptionError, UnknownFormatError
from ooc.remote import is_url

FORMATS: dict[str, str] = {
    "csv": "ooc.formats.csv",
    "hdf5": "ooc.formats.hdf5",
    "zarr": "ooc.formats.zarr",
    "npy": "ooc.formats.npy",
    "parquet": "ooc.formats.parquet",
    "tfrecord": "ooc.formats.tfrecord",
}


def layouts(declares=lambda module: True) -> list[str]:
    """The layouts whose module satisfies ``declares`` (e.g. ``lambda m: m.OPTIONS.remote``), in the
    table's order: what the CLI's choices and help, remote paths and the benchmark read (importing
    every layout module costs ~20 ms: their storage libraries load at first use)."""
    return [name for name in FORMATS if declares(get_format(name))]


def get_format(name: str) -> ModuleType:
    try:
        module_name = FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}") from None
    return importlib.import_module(module_name)


def require_local_unless_remote(name: str, path) -> None:
    """Refuse a URL for a layout that reads and writes local files only (its ``OPTIONS.remote``)."""
    if is_url(path) and not get_format(name).OPTIONS.remote:
        able = " or ".join(other for other in FORMATS if get_format(other).OPTIONS.remote)
        raise OptionError(f"{path}: {name} supports local paths only; convert to {able} for object storage")
