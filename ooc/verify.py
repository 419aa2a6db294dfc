"""``ooc verify``: re-read the files of a store and compare them with the checksums in its manifest.

Each problem is one line naming the file: a checksum that differs, a missing file, a size that
changed (truncated or grown), a file the manifest does not list. ``quick`` checks that every file
exists with its size, but compares the checksums of a random sample only (5 %, at least 3 files):
sizes catch truncation and lost files at the cost of a directory walk, the sample catches
widespread damage without reading the store.

The manifest itself is checked too: its own checksum (``manifest_crc32``: edited or damaged since
the conversion wrote it), and, once the files match, its claims about them (``open_store``'s checks
of counts, shapes and chunk sizes against the data files) and every class label against its
``num_classes``.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ooc import remote
from ooc.errors import OocError
from ooc.fs import is_remote
from ooc.manifest import (
    CHECKSUM_ALGORITHM,
    check_manifest_crc,
    checksum_size,
    file_checksum,
    is_bookkeeping,
    manifest_path,
    read_manifest,
)
from ooc.remote import URL, location
from ooc.stores import open_store

QUICK_SHARE, QUICK_MIN = 0.05, 3


@dataclass
class Report:
    path: Path
    files: int = 0  # files the manifest lists
    checked: int = 0  # of them, files whose checksum was compared
    bytes: int = 0  # bytes read for checksums
    quick: bool = False
    seconds: float | None = None  # how long the check took
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        if self.files == 0 and self.problems:
            return f"{self.path}: not verified"
        if self.problems:
            return (
                f"{self.path}: {len(self.problems)} problem{'s' if len(self.problems) > 1 else ''} in "
                f"{self.files} files; "
                "re-convert the store (the same `ooc convert` with --overwrite) to repair it"
            )
        took = (
            ""
            if self.seconds is None
            else f"checked in {self.seconds:.1f} s ({self.bytes / 1e6 / max(self.seconds, 1e-9):,.1f} MB/s), "
        )
        if self.quick:
            return (
                f"{self.path}: {took}{self.files} files present with their sizes; checksums of {self.checked} "
                "of them, "
                f"chosen at random ({self.bytes:,} bytes), match"
            )
        return f"{self.path}: {took}{self.files} files, {self.bytes:,} bytes: every checksum matches"


def verify(
    path: str | os.PathLike,
    *,
    quick: bool = False,
    rng: random.Random | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> Report:
    """Check the store at ``path`` against its manifest's checksums; see the module docstring.

    ``progress(files_done, files, bytes_done, bytes)`` is called after each file (``bytes``: what
    the checksums have to read)."""
    started = time.perf_counter()
    report = _verify(path, quick=quick, rng=rng, progress=progress)
    report.seconds = time.perf_counter() - started
    return report


def _well_formed(path, listed: dict, report: Report) -> dict[str, str]:
    """The entries that are checksums ("<crc32 hex> <size>"); each other one is a problem: the
    manifest was edited or damaged."""
    good = {}
    for name, entry in listed.items():
        if isinstance(entry, str) and re.fullmatch(r"[0-9a-f]{8} [0-9]+", entry):
            good[name] = entry
        else:
            report.problems.append(
                f"{manifest_path(path)}: the checksum of {name} is {entry!r}, not '<crc32 hex> <size>'; the manifest "
                "was edited or damaged: re-convert the store with `ooc convert --overwrite`"
            )
    return good


def _verify(path, *, quick, rng, progress) -> Report:
    path = location(path)  # a URL (s3://…) is checked object by object, through fsspec
    manifest = read_manifest(path)  # a missing or incomplete store raises, naming the fix
    report = Report(path, quick=quick)
    try:
        check_manifest_crc(manifest_path(path), manifest)
    except OocError as e:
        report.problems.append(str(e))
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or not isinstance(checksums.get("files"), dict):
        report.problems.append(
            f"{path}: the manifest has no checksums (converted by an ooc that did not record them); "
            "re-convert the store with --overwrite to add them"
        )
        return report
    if checksums.get("algorithm") != CHECKSUM_ALGORITHM:
        report.problems.append(
            f"{path}: the checksums are {checksums.get('algorithm')!r}, which this ooc cannot check "
            f"(it knows {CHECKSUM_ALGORITHM}); upgrade ooc"
        )
        return report
    listed: dict[str, str] = _well_formed(path, checksums["files"], report)
    report.files = len(listed)
    names = sorted(listed)
    if quick:
        wanted = min(len(names), max(QUICK_MIN, math.ceil(QUICK_SHARE * len(names))))
        sample = set((rng or random.Random()).sample(names, wanted))
    else:
        sample = set(names)
    to_read = sum(checksum_size(listed[name]) for name in sample)
    if is_remote(path):
        report = _verify_remote(path, listed, names, sample, report)
        if progress:
            progress(len(names), len(names), to_read, to_read)
        if report.ok:
            _check_claims(path, report)
        return report
    report = _verify_local(path, manifest, listed, names, sample, to_read, report, progress)
    if report.ok:  # the files are as written: then what the manifest says about them must hold too
        _check_claims(path, report)
    return report


def _check_claims(path, report: Report) -> None:
    """The manifest against the data files (``open_store``'s checks) and every label against its
    classes: a manifest edited consistently (its own checksum recomputed) is caught here."""

    try:
        with open_store(path) as store:
            for split in store.splits:
                store.stored_targets(split)
    except OocError as e:
        report.problems.append(str(e))


def _verify_local(path, manifest, listed, names, sample, to_read, report: Report, progress) -> Report:
    bytes_done = 0
    for done, name in enumerate(names, 1):
        file = path / name
        expected_crc, expected_size = listed[name].split()
        try:
            size = file.stat().st_size
            if size != int(expected_size):
                change = "truncated" if size < int(expected_size) else "grown"
                report.problems.append(
                    f"{file}: {change} to {size:,} bytes, the manifest says {int(expected_size):,}"
                )
            elif name in sample:
                actual = file_checksum(file)
                report.checked += 1
                report.bytes += size
                if actual != listed[name]:
                    report.problems.append(
                        f"{file}: checksum differs ({CHECKSUM_ALGORITHM} {actual.split()[0]}, "
                        f"the manifest says {expected_crc})"
                    )
        except FileNotFoundError:
            report.problems.append(f"{file}: missing")
        except OSError as e:
            report.problems.append(f"{file}: cannot read ({e.strerror or e})")
        if progress:
            bytes_done += int(expected_size) if name in sample else 0
            progress(done, len(names), bytes_done, to_read)
    for root, dirs, files in (
        os.walk(path) if not manifest.get("adopted") else ()
    ):  # an adopted folder holds the user's other files
        dirs.sort()
        for name in sorted(files):
            relative = (Path(root) / name).relative_to(path).as_posix()
            if relative not in manifest["checksums"]["files"] and not is_bookkeeping(relative):
                report.problems.append(
                    f"{Path(root) / name}: not in the manifest (a file the conversion did not write)"
                )
    return report


def _verify_remote(
    path: URL, listed: dict[str, str], names: list[str], sample: set[str], report: Report
) -> Report:
    """The same checks on a store in object storage: sizes from one listing, checksums of the
    objects fetched many at a time."""

    try:
        present = remote.list_files(path)
        wanted = [
            name for name in names if name in sample and present.get(name) == checksum_size(listed[name])
        ]
        actual = remote.checksums(path, wanted)
    except OSError as e:
        report.problems.append(f"{path}: cannot read ({' '.join(str(e).split())[:200]})")
        return report
    for name in names:
        file, (expected_crc, expected_size) = path / name, listed[name].split()
        if name not in present:
            report.problems.append(f"{file}: missing")
        elif present[name] != int(expected_size):
            change = "truncated" if present[name] < int(expected_size) else "grown"
            report.problems.append(
                f"{file}: {change} to {present[name]:,} bytes, the manifest says {int(expected_size):,}"
            )
        elif name in actual:
            report.checked += 1
            report.bytes += present[name]
            if actual[name] != listed[name]:
                report.problems.append(
                    f"{file}: checksum differs ({CHECKSUM_ALGORITHM} {actual[name].split()[0]}, "
                    f"the manifest says {expected_crc})"
                )
    for name in present:
        if name not in listed and not is_bookkeeping(name):
            report.problems.append(
                f"{path / name}: not in the manifest (a file the conversion did not write)"
            )
    return report
