"""Stores on object storage (``s3://bucket/mnist.zarr``, any fsspec URL): what tells a URL from a
local path, the ``--storage-option key=value`` parser, and ``URL``, the string a remote store's
path is kept as.

A URL stays a string, never a ``Path`` (``Path("s3://b/x")`` would be ``s3:/b/x``). ``URL`` is a
``str`` that also carries the fsspec storage options of its filesystem, so they travel with the
path wherever it goes (writers, stores, pickled stores in worker processes), and that joins with
``/`` like a ``Path`` does: ``URL("s3://b/m.zarr") / "train" / "x"`` is ``s3://b/m.zarr/train/x``.

Credentials and the endpoint come the standard way: the storage options (``key``, ``secret``,
``endpoint_url``, …, given with ``--storage-option``), else the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, profiles), which s3fs
reads through botocore.

Only zarr (through zarr's ``FsspecStore``: async, so a run of chunks is fetched concurrently) and
parquet (pyarrow reading and writing through the fsspec filesystem) support URLs; the other
layouts refuse them in one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ooc.core.checksums import data_checksum
from ooc.errors import OptionError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL (``scheme://…``) rather than a local path."""
    return isinstance(path, str) and bool(_SCHEME.match(path))


class URL(str):
    """A remote store's path: the URL string, with its storage options, joinable with ``/``."""

    storage_options: dict[str, Any]

    def __new__(cls, url: str, storage_options: dict[str, Any] | None = None):
        self = super().__new__(cls, url.rstrip("/"))
        self.storage_options = dict(storage_options or getattr(url, "storage_options", None) or {})
        return self

    def __truediv__(self, name: str) -> URL:
        return URL(f"{self}/{name}", self.storage_options)

    def joinpath(self, *names: str) -> URL:
        url = self
        for name in names:
            url = url / name
        return url

    def __reduce__(self):
        return URL, (str(self), self.storage_options)

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1]

    @property
    def fs(self):
        """The fsspec filesystem (fsspec caches instances: one per set of options)."""
        return filesystem(self)[0]

    @property
    def key(self) -> str:
        """The path inside the filesystem (``bucket/prefix`` for s3)."""
        return filesystem(self)[1]


def filesystem(url: URL) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise OptionError(
            f"{url}: remote stores need fsspec and the filesystem's package; pip install 'ooc[s3]'"
        ) from None
    try:
        return url_to_fs(str(url), **url.storage_options)
    except ImportError as e:
        raise OptionError(f"{url}: {e}; for s3:// pip install 'ooc[s3]'") from None
    except (TypeError, ValueError) as e:
        raise OptionError(f"{url}: bad --storage-option ({e})") from None


def location(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> Path | URL:
    """A store's path as ooc keeps it: a ``URL`` for ``scheme://…``, else a ``Path``."""
    if isinstance(path, URL):
        return URL(path, storage_options) if storage_options else path
    if is_url(path):
        return URL(path, storage_options)
    if storage_options:
        raise OptionError(f"--storage-option applies to URLs (s3://…), not the local path {path}")
    return Path(path)


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["endpoint_url=http://…", "anon=true", "default_block_size=1048576"]`` as a dict: true/false,
    none and numbers are parsed, anything else stays a string; ``a.b=v`` nests (``client_kwargs.region_name=…``)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(
                f"--storage-option {pair!r} is not key=value (e.g. endpoint_url=http://127.0.0.1:9000)"
            )
        target = options
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise OptionError(f"--storage-option {pair!r}: {parent} is already a value")
        target[leaf] = _value(value.strip())
    return options


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -- object helpers used by the manifest, the journal, conversion and verify ----------------------------


def exists(url: URL) -> bool:
    return url.fs.exists(url.key)


def read_bytes(url: URL) -> bytes:
    return url.fs.cat_file(url.key)


def write_bytes(url: URL, data: bytes) -> None:
    """One PUT: an object appears whole or not at all, so no temporary name is needed."""
    url.fs.pipe_file(url.key, data)


def remove(url: URL, *, recursive: bool = False) -> None:
    url.fs.rm(url.key, recursive=recursive)
    url.fs.invalidate_cache()


def list_files(url: URL) -> dict[str, int]:
    """Every object below ``url``: relative name ("/"-separated) -> size."""
    url.fs.invalidate_cache()
    root = url.key.rstrip("/") + "/"
    found = url.fs.find(url.key, detail=True)
    return {
        name[len(root) :]: int(info["size"])
        for name, info in sorted(found.items())
        if name.startswith(root) and info.get("type", "file") == "file"
    }


def checksums(url: URL, names: list[str], batch: int = 64) -> dict[str, str]:
    """``"<crc32 hex> <size>"`` of objects below ``url``, fetched ``batch`` at a time concurrently."""
    result = {}
    for i in range(0, len(names), batch):
        for name, data in fetch(url, names[i : i + batch]).items():
            if isinstance(data, BaseException):
                raise data
            result[name] = data_checksum(data)
    return result


def fetch(url: URL, names: list[str]) -> dict[str, bytes | BaseException]:
    """The bytes of objects below ``url`` (relative names), fetched concurrently; a failed one's
    exception in its place (``FileNotFoundError`` for a missing object)."""
    root = url.key.rstrip("/")
    contents = url.fs.cat([f"{root}/{name}" for name in names], on_error="return")
    return {name: contents[f"{root}/{name}"] for name in names}
