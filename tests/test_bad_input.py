"""Bad input on the command line: every option checked, one line on stderr naming it, exit 1, and
nothing written; bad stores and sources; training that goes wrong. Run in-process (``ooc.cli.main``)
so the table stays fast; signals go to a subprocess."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ooc.cli import main
from ooc.formats import FORMATS
from ooc.manifest import write_manifest

from conftest import MNIST


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["ooc", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code, captured.err


CASES = [
    (("convert", "--format", "zarr", "--limit", -1), "--limit must be a positive number of samples, got -1"),
    (
        ("convert", "--format", "zarr", "--chunk-size", 0),
        "--chunk-size must be a positive number of samples, got 0",
    ),
    (
        ("convert", "--format", "hdf5", "--chunk-size", -8),
        "--chunk-size must be a positive number of samples, got -8",
    ),
    (
        ("convert", "--format", "npy", "--chunk-size", 64),
        "--chunk-size does not apply to npy (it has no chunks); drop the option",
    ),
    (
        ("convert", "--format", "tfrecord", "--chunk-size", 64),
        "--chunk-size does not apply to tfrecord (it has no chunks); drop the option; use --shard-size",
    ),
    (
        ("convert", "--format", "tfrecord", "--shard-size", 0),
        "--shard-size must be a positive number of samples, got 0",
    ),
    (
        ("convert", "--format", "zarr", "--shard-size", 10),
        "--shard-size does not apply to zarr (it is not written in shards); drop the option",
    ),
    (("convert", "--format", "zarr", "--repeat", 0), "--repeat must be a positive number of copies, got 0"),
    (
        ("convert", "--format", "zarr", "--size", "0x5"),
        "--size must be N or HxW in pixels, e.g. 28 or 32x32, got '0x5'",
    ),
    (
        ("convert", "--format", "zarr", "--size", "big"),
        "--size must be N or HxW in pixels, e.g. 28 or 32x32, got 'big'",
    ),
    (
        ("convert", "--format", "hdf5", "--compression", "zstd"),
        "--compression 'zstd' is not available for hdf5: choose one of none, gzip, lzf",
    ),
    (
        ("convert", "--format", "parquet", "--compression", "lz4"),
        "--compression 'lz4' is not available for parquet: choose one of none, snappy, zstd, gzip",
    ),
    (
        ("convert", "--format", "zarr", "--dtype", "int4"),
        "--dtype 'int4': pixels are stored as uint8 or float32 (value / 255); choose one of those",
    ),
    (
        ("convert", "--format", "csv", "--dtype", "float16"),
        "--dtype 'float16': pixels are stored as uint8 or float32 (value / 255); choose one of those",
    ),
    (("convert", "--format", "xls"), f"unknown format 'xls': choose one of {', '.join(FORMATS)}"),
    (("convert", "--format", "zarr", "--out", "a_file"), "a_file is a file; choose another --out"),
    (
        ("convert", "--format", "zarr", "--source", "missing.npz"),
        "missing.npz: no such source file; pass --source PATH to an .npz with x_train, y_train, x_test, "
        "y_test",
    ),
    (
        ("convert", "--format", "zarr", "--source", "a_file"),
        "a_file is not a readable .npz file (File is not a zip file)",
    ),
    (
        ("convert", "--format", "zarr", "--source", MNIST, "--size", 28),
        f"--size applies to image-folder sources only; {MNIST} is not one (an image folder has train/ and "
        "test/ with a sub-folder of images per class); drop --size",
    ),
    (("info", "a_file"), "a_file is a file, not an ooc store directory"),
    (("info", "nowhere"), "nowhere: no such store; create it with `ooc convert --out nowhere`"),
    (("bench", "--repeats", 0), "--repeats must be at least 1, got 0"),
    (("bench", "--batch-size", -1), "--batch-size must be at least 1, got -1"),
    (("bench", "--limit", 0), "--limit must be at least 1, got 0"),
    (("bench", "--scale-repeat", 1), "--scale-repeat must be 0 (skip) or at least 2 copies, got 1"),
    (("bench", "--out", "a_file"), "--out a_file is a file; pass a folder"),
    (("bench", "--formats", "zarr,xls"), f"unknown format 'xls': choose one of {', '.join(FORMATS)}"),
    (
        ("train", "--store", "zarr", "--path", "a_file"),
        "--path a_file is a file; pass the store directory (what `ooc convert --out` wrote)",
    ),
    (
        ("train", "--store", "zarr", "--batch-size", -5),
        "--batch-size must be a positive number of samples, got -5",
    ),
    (
        ("train", "--store", "zarr", "--learning-rate", "inf"),
        "--learning-rate must be a finite number above 0, e.g. 2e-3, got inf",
    ),
    (
        ("convert", "--format", "zarr", "--size", 100000),
        "--size 100000: at most 4096 pixels a side (one 100000x100000 RGB sample would be 27.9 GiB); pass "
        "the size the model takes, e.g. 224",
    ),
    (("train", "--store", "memory", "--limit", 0), "--limit must be a positive number of samples, got 0"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(map(str, a)) for a, _ in CASES])
def test_bad_option(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine\n")
    if args[0] == "train" and "--path" not in args:
        assert run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", MNIST, "--limit", 20)[
            0
        ] in (0, None)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, err = run(monkeypatch, capsys, *args)
    assert (code, err) == (1, f"ooc: error: {message}\n")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "a_file").read_text() == "mine\n"


def test_store_from_a_newer_ooc(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(monkeypatch, capsys, "convert", "--format", "npy", "--source", MNIST, "--limit", 20)
    manifest = tmp_path / "data" / "npy" / "ooc.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "ooc_manifest_version": 7}))
    code, err = run(monkeypatch, capsys, "info", "data/npy")
    assert (code, err) == (
        1,
        "ooc: error: data/npy/ooc.json has manifest version 7; this ooc reads version 2 and older: upgrade "
        "ooc\n",
    )


# Training that goes wrong: one line naming the file or option and the fix, exit status, no traceback,
# nothing half-written under a final name.

TRAIN = ["train", "--store", "zarr", "--model", "mlp", "--epochs", 2, "--batch-size", 32]


@pytest.fixture
def small_zarr(tmp_path, monkeypatch, capsys):
    """tmp_path as the working directory, with data/zarr: 120 MNIST samples a split."""
    monkeypatch.chdir(tmp_path)
    assert run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", MNIST, "--limit", 120)[0] in (
        0,
        None,
    )
    return tmp_path


@pytest.mark.parametrize("loop", ["train_on_batch", "fit"])
def test_a_non_finite_loss_stops_the_run(loop, small_zarr, monkeypatch, capsys):
    code, err = run(
        monkeypatch, capsys, *TRAIN, "--loop", loop, "--learning-rate", 1e30, "--checkpoint-every", 1
    )
    assert (code, err) == (
        1,
        "ooc: error: epoch 1, batch 2: the training loss is nan; stopped without checkpointing those "
        "weights (the last good checkpoint is kept in data/checkpoints/zarr-mlp); lower --learning-rate "
        "(it is 1e+30) and start again\n",
    )
    state = json.loads((small_zarr / "data/checkpoints/zarr-mlp/state.json").read_text())
    assert (state["epoch"], state["batch"]) == (0, 1) and not (small_zarr / "data/models").exists()


def test_disk_full_while_saving_the_model(small_zarr, monkeypatch, capsys):
    import keras

    import ooc.checkpoint

    real_save = keras.Model.save

    def full_at_the_model_out(self, path, *args, **kwargs):
        if "models" not in str(path):
            return real_save(self, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_at_the_model_out)
    monkeypatch.setattr(ooc.checkpoint, "free_space", lambda directory: "12.0 KiB free")
    code, err = run(monkeypatch, capsys, *TRAIN)
    command = "ooc train --store zarr --model mlp --epochs 2 --batch-size 32 --resume"
    assert (code, err) == (
        1,
        "ooc: error: data/models/zarr-mlp.keras: cannot write the trained model (No space left on device, "
        "12.0 KiB free in data/models); the last checkpoint (2 of 2 epochs done) is kept in "
        f"data/checkpoints/zarr-mlp: resume with `{command}`\n",
    )
    assert list((small_zarr / "data/models").iterdir()) == []  # neither the model nor its temporary file


def test_disk_full_while_checkpointing(small_zarr, monkeypatch, capsys):
    import keras

    import ooc.checkpoint

    real_save, saves = keras.Model.save, []

    def full_at_the_second_checkpoint(self, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the epoch's end, after a checkpoint at its batch 2
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", full_at_the_second_checkpoint)
    monkeypatch.setattr(ooc.checkpoint, "free_space", lambda directory: "0 bytes free")
    code, err = run(monkeypatch, capsys, *TRAIN, "--checkpoint-every", 2)
    command = "ooc train --store zarr --model mlp --epochs 2 --batch-size 32 --checkpoint-every 2 --resume"
    ckpt = "data/checkpoints/zarr-mlp"
    assert (code, err) == (
        1,
        f"ooc: error: {ckpt}/model-000002.keras: cannot write the checkpoint (No space left on device, 0 bytes "
        f"free in {ckpt}); the last checkpoint (epoch 1 of 2, after 2 batches) is kept in {ckpt}: resume "
        f"with `{command}`\n",
    )
    assert sorted(p.name for p in (small_zarr / ckpt).iterdir()) == [
        "lock",
        "model-000001.keras",
        "state.json",
    ]
    assert not (small_zarr / "data/models").exists()


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_says_where_the_checkpoint_is(signum, status, small_zarr):
    args = ["train", "--store", "zarr", "--model", "mlp", "--epochs", "500", "--checkpoint-every", "1"]
    killed = subprocess.Popen(
        [sys.executable, "-m", "ooc", *args],
        cwd=small_zarr,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(
            signal.SIGINT, signal.SIG_DFL
        ),  # a shell's background jobs ignore it
    )
    state = small_zarr / "data/checkpoints/zarr-mlp/state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signum)
    err = killed.communicate(timeout=60)[1].decode()
    done = json.loads(state.read_text())
    where = (
        f"epoch {done['epoch'] + 1} of 500, after {done['batch']} batch"
        + ("" if done["batch"] == 1 else "es")
        if done["batch"]
        else f"{done['epoch']} of 500 epochs done"
    )
    command = shlex.join(["ooc", *args, "--resume"])
    assert (killed.returncode, err) == (
        status,
        f"ooc: interrupted: training stopped; the last checkpoint ({where}) is kept in "
        f"data/checkpoints/zarr-mlp: resume with `{command}`\n",
    )


# Bad stores and sources: the same one line, where a library's traceback was.


@pytest.mark.parametrize("command", ["info", "verify"])
@pytest.mark.parametrize("how", ["directory", "permission"])
def test_an_unreadable_manifest(command, how, small_zarr, monkeypatch, capsys):
    manifest = small_zarr / "data/zarr/ooc.json"
    if how == "directory":
        manifest.unlink()
        manifest.mkdir()
    else:  # tests run as root, which reads any file whatever its mode
        def denied(path, *args, **kwargs):
            if Path(path).name == "ooc.json":
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return open(path, *args, **kwargs)

        monkeypatch.setattr("ooc.manifest.open", denied, raising=False)
    why = "Is a directory" if how == "directory" else "Permission denied"
    assert run(monkeypatch, capsys, command, "data/zarr") == (
        1,
        f"ooc: error: data/zarr/ooc.json: cannot read the manifest ({why}); make it a readable file "
        "(check its permissions) or re-convert the store\n",
    )


def test_a_checksum_entry_that_is_not_a_checksum(small_zarr, monkeypatch, capsys):
    path = small_zarr / "data/zarr/ooc.json"
    manifest = json.loads(path.read_text())
    manifest["checksums"]["files"]["zarr.json"] = {"crc32": 7}
    path.write_text(json.dumps(manifest))
    monkeypatch.setattr(sys, "argv", ["ooc", "verify", "data/zarr", "--quiet"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        "data/zarr/ooc.json: the checksum of zarr.json is {'crc32': 7}, not '<crc32 hex> <size>'; the "
        "manifest was edited or damaged: re-convert the store with `ooc convert --overwrite`"
    )


def test_a_parquet_store_whose_manifest_dtype_was_edited(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(monkeypatch, capsys, "convert", "--format", "parquet", "--source", MNIST, "--limit", 120)
    path = tmp_path / "data/parquet/ooc.json"
    manifest = json.loads(path.read_text())
    manifest["x"] = {"dtype": "float32", "decode": "none"}
    manifest["options"]["dtype"] = "float32"
    write_manifest(path.parent, {k: v for k, v in manifest.items() if k != "manifest_crc32"})  # a consistent lie
    assert run(monkeypatch, capsys, "train", "--store", "parquet", "--model", "mlp", "--epochs", 1) == (
        1,
        "ooc: error: data/parquet/train.parquet: its image column is fixed_size_binary[784], but the manifest "
        "declares float32 images of shape (28, 28, 1) (fixed_size_list<item: float>[784]): the manifest was "
        "edited; re-convert with `ooc convert --format parquet --overwrite`\n",
    )


def test_a_class_folder_whose_name_is_not_utf8(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for split in (b"train", b"test"):
        for name in (b"cat", b"d\xffg"):
            folder = b"photos/" + split + b"/" + name
            os.makedirs(folder)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(folder, b"0.png"))
    code, err = run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", "photos")
    assert (code, err) == (
        1,
        f"ooc: error: {tmp_path}/photos/train/d\\xffg: the name is not valid UTF-8, and ooc records class "
        "and file names as UTF-8 text; rename it\n",
    )
    assert not (tmp_path / "data").exists()


def test_a_store_with_samples_a_model_does_not_take(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", np.random.default_rng(0).random((200, 4), np.float32))
    np.save("y.npy", np.arange(200) % 2)
    run(monkeypatch, capsys, "convert", "--format", "npy", "--source", "x.npy", "--targets", "y.npy")
    assert run(monkeypatch, capsys, "train", "--store", "npy", "--model", "lenet") == (
        1,
        "ooc: error: --model lenet takes images (height, width, channels); the store holds samples of shape "
        "(4,): choose --model mlp, or your own model\n",
    )


def test_a_class_number_that_cannot_be_meant(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x, y = np.zeros((10, 4), np.float32), np.arange(10)
    np.savez("ids.npz", x_train=x, y_train=np.where(y == 3, 2**40, y), x_test=x, y_test=y)
    assert run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", "ids.npz") == (
        1,
        f"ooc: error: {tmp_path}/ids.npz: the train targets hold class 1099511627776; ooc takes at most "
        "16,777,216 classes (2**24), numbered 0, 1, …: renumber them, or pass --target-kind regression if they "
        "are numbers to predict\n",
    )
    assert not (tmp_path / "data/zarr").exists()


def test_an_empty_source(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    empty = np.zeros((0, 4), np.float32)
    np.savez("empty.npz", x_train=empty, y_train=empty[:, 0], x_test=empty, y_test=empty[:, 0])
    assert run(monkeypatch, capsys, "convert", "--format", "zarr", "--source", "empty.npz") == (
        1,
        f"ooc: error: {tmp_path}/empty.npz holds no train samples (train 0, test 0): pass --source a file "
        "that holds samples\n",
    )
    assert not (tmp_path / "data").exists()


def test_a_store_without_a_test_split_trains_and_says_so(tmp_path, monkeypatch, capsys):
    """The demanding user's choice: the model is trained and saved, the missing evaluation said up front."""
    import ooc
    from ooc.schema import schema_for
    from ooc.sources import ArraySource

    monkeypatch.chdir(tmp_path)
    x, y = np.random.default_rng(0).random((200, 4), np.float32), np.arange(200) % 2
    schema = schema_for(x.shape, x.dtype, y.shape, y.dtype, where="arrays")
    ooc.convert("data/npy", format="npy", source=ArraySource(tmp_path, {"train": (x, y)}, schema, []))
    monkeypatch.setattr(
        sys, "argv", ["ooc", "train", "--store", "npy", "--model", "mlp", "--report", "r.json"]
    )
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert (
        "note: data/npy has no test split, so this run ends without a test evaluation (the model is still "
        "saved); for one, convert with a test split: `ooc convert ... --test-fraction 0.1`\n"
    ) in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["test"] is None
    assert (tmp_path / "data/models/npy-mlp.keras").is_file()
