"""Sizes in bytes as people write them (``1G``, ``512MiB``) and as reports print them."""

from __future__ import annotations

import re

from ooc.errors import OptionError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, option: str = "--memory-limit") -> int:
    """``"1G"``, ``"256M"``, ``"512MiB"``, ``"1073741824"``: bytes (K, M, G, T are powers of 1024, as
    cgroups read them). ``option`` is what the error names."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise OptionError(f"{option} {text!r}: give a size such as 1G, 512M or 268435456 (bytes)")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def human_bytes(size: int) -> str:
    """Bytes in binary units, as the limit was given: 1 GiB, 256 MiB, 1.4 GiB."""
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.3g} {unit}iB"
    return f"{size} B"
