"""The table of on-disk layouts: name -> module. Adding a layout is one module and one line here;
the CLI's choices, the conformance tests and the benchmark read this table."""

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
