"""The table of on-disk layouts: name -> module. Adding a layout is one module and one line here;
the CLI's choices, the conformance tests and the benchmark read this table."""

from __future__ import annotations

import importlib
from types import ModuleType

from ooc.errors import UnknownFormatError

FORMATS: dict[str, str] = {
    "csv": "ooc.formats.csv",
    "hdf5": "ooc.formats.hdf5",
    "zarr": "ooc.formats.zarr",
    "npy": "ooc.formats.npy",
    "parquet": "ooc.formats.parquet",
    "tfrecord": "ooc.formats.tfrecord",
}


def get_format(name: str) -> ModuleType:
    try:
        module_name = FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}") from None
    return importlib.import_module(module_name)
