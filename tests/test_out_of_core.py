"""ooc bench --memory-limit: sizes, the one-line skip where no memory cgroup can be made, and the
report's tables from a tiny run where one can (timings never asserted)."""

from __future__ import annotations

import json

import pytest

import ooc.benchmark.out_of_core as out_of_core
from ooc.benchmark.out_of_core import MemoryCgroup, cgroups_unavailable, copies_for
from ooc.benchmark.run import run_out_of_core_bench
from ooc.core.units import parse_bytes
from ooc.errors import OptionError

from conftest import MNIST


def test_sizes_read_as_cgroups_read_them():
    assert parse_bytes("1G") == 1 << 30
    assert parse_bytes("256M") == parse_bytes("256MiB") == 256 << 20
    assert parse_bytes("4096") == 4096
    with pytest.raises(OptionError, match=r"^--memory-limit 'lots': give a size such as 1G, 512M"):
        parse_bytes("lots")
    assert copies_for(100 << 20, 1 << 30, 3) == 31  # 3 GiB of 100 MiB copies
    assert copies_for(1 << 40, 1 << 20, 3) == 2  # always larger than one copy


def test_no_cgroup_is_one_line_and_no_rows(tmp_path, monkeypatch):
    root = tmp_path / "cgroup"  # neither v2 nor v1: no memory controller below it
    root.mkdir()
    monkeypatch.setattr(out_of_core, "CGROUP_ROOT", root)
    assert cgroups_unavailable() == f"no memory controller under {root} (neither cgroup v2 nor v1)"
    lines = []
    report = run_out_of_core_bench(
        out=tmp_path / "out",
        memory_limit=64 << 20,
        stores_dir=tmp_path / "stores",
        source=MNIST,
        limit=300,
        progress=lines.append,
    )
    assert lines == [
        f"out of core: skipped, cannot make a memory cgroup (no memory controller under {root} "
        "(neither cgroup v2 nor v1))"
    ]
    assert report["out_of_core"]["rows"] == [] and report["out_of_core"]["skipped"]
    assert json.loads((tmp_path / "out" / "out_of_core.json").read_text())["out_of_core"]["rows"] == []
    assert "Skipped: no memory cgroup could be made" in (tmp_path / "out" / "out_of_core.md").read_text()
    assert not (tmp_path / "stores").exists() or not any((tmp_path / "stores").iterdir())  # nothing converted


def test_a_v1_cgroup_is_made_limited_joined_and_removed(tmp_path):
    # a fake v1 hierarchy: the files a kernel would show, written as the kernel would read them
    memory = tmp_path / "memory"
    memory.mkdir()
    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    cgroup = MemoryCgroup(256 << 20, root=tmp_path, name="t").create()
    assert cgroup.version == 1 and cgroup.path == memory / "t"
    assert (memory / "t" / "memory.limit_in_bytes").read_text() == str(256 << 20)
    cgroup.add(1234)
    assert (memory / "t" / "tasks").read_text() == "1234"
    (memory / "t" / "memory.max_usage_in_bytes").write_text("1000\n")
    assert cgroup.peak() == 1000
    for name in list((memory / "t").iterdir()):
        name.unlink()  # the kernel's files vanish with the directory; a plain one must be emptied
    cgroup.remove()
    assert not (memory / "t").exists()


def test_refusals():
    with pytest.raises(
        OptionError, match=r"^--memory-limit measures hdf5, npy, zarr: include one in --formats$"
    ):
        out_of_core.measure_out_of_core(
            None,
            None,
            memory_limit=1,
            factor=3,
            formats=["csv"],
            limit=None,
            batch_size=1,
            model="mlp",
            seed=0,
            seconds=1,
            training=False,
            progress=print,
        )


@pytest.mark.skipif(cgroups_unavailable() is not None, reason="no writable memory cgroup here")
def test_a_tiny_out_of_core_run(tmp_path):
    lines = []
    report = run_out_of_core_bench(
        out=tmp_path / "out",
        memory_limit=128 << 20,
        stores_dir=tmp_path / "stores",
        formats=["hdf5"],
        source=MNIST,
        limit=1000,
        factor=1.0,
        pass_seconds=0.3,
        training=False,
        batch_size=64,
        progress=lines.append,
    )
    (row,) = report["out_of_core"]["rows"]
    assert row.format == "hdf5" and row.train_bytes >= 0.99 * (128 << 20) and row.samples_per_second > 0
    assert row.peak_memory_mb and row.peak_memory_mb <= 128 * 1.048576 + 1  # the limit held
    quality = report["out_of_core"]["quality"]
    assert [(q["mode"], q["order"]) for q in quality["modes"]] == [
        (mode, order) for mode in ("none", "chunk", "global") for order in ("stored", "class-sorted")
    ]
    assert [t["stretch_chunks"] for t in quality["tradeoff"]] == [2, 4, 8, 16, 32]
    text = (tmp_path / "out" / "out_of_core.md").read_text()
    assert "## Shuffle quality" in text and "### Chunk shuffle: stretch × cache" in text
