"""The JSON manifest that makes a directory an ooc store.

It is written last, after every data file is flushed and closed, so a directory without it is never
taken for a complete store, whatever a crash left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ooc.errors import CorruptStoreError, StoreNotFoundError

MANIFEST_NAME = "ooc.json"
PARTIAL_NAME = "ooc.partial"
MANIFEST_VERSION = 1


def manifest_path(store_path: str | os.PathLike) -> Path:
    return Path(store_path) / MANIFEST_NAME


def write_manifest(store_path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write atomically: a temporary file renamed over the final name, after an fsync."""
    final = manifest_path(store_path)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"ooc_manifest_version": MANIFEST_VERSION, **manifest}, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def read_manifest(store_path: str | os.PathLike) -> dict[str, Any]:
    path = Path(store_path)
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such store; create it with `ooc convert --out {path}`")
    if not path.is_dir():
        raise StoreNotFoundError(f"{path} is a file, not an ooc store directory")
    mpath = manifest_path(path)
    if not mpath.exists() and (path / PARTIAL_NAME).exists():
        raise StoreNotFoundError(f"{path} is an incomplete ooc store (its conversion was interrupted); re-run `ooc convert --out {path} --overwrite`")
    if not mpath.exists():
        raise StoreNotFoundError(
            f"{path} is not an ooc store (no {MANIFEST_NAME}); create one with `ooc convert --out PATH`"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptStoreError(f"{mpath} is not valid JSON ({e}); re-convert the store") from None
    if not isinstance(manifest, dict) or "format" not in manifest or "splits" not in manifest:
        raise CorruptStoreError(f"{mpath} lacks 'format' or 'splits'; re-convert the store")
    version = manifest.get("ooc_manifest_version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise CorruptStoreError(
            f"{mpath} has manifest version {version!r}; this ooc reads version {MANIFEST_VERSION} "
            "and older: upgrade ooc"
        )
    return manifest
