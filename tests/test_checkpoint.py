"""Checkpoints and --resume: a killed run, resumed, trains exactly the batches and weights of one that was not."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ooc
from ooc.errors import CheckpointError, CorruptStoreError, OptionError
from ooc.train import batch_reader, train

from conftest import MNIST

QUIET = dict(log=lambda line: None)
RUN = dict(epochs=2, batch_size=32, seed=5, **QUIET)  # 270 train samples: 9 batches per epoch


class Killed(Exception):
    """Stands for the kill: raised from after_batch, so the run stops between two batches."""


@pytest.fixture(scope="module")
def hdf5_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "hdf5"
    ooc.convert(
        path, format="hdf5", source=MNIST, limit=300, chunk_size=64
    )  # chunked: the chunk shuffle has chunks
    with ooc.open_store(path) as store:
        yield store


def recorder(seq, kill_at=None, exception=KeyboardInterrupt):
    """after_batch: record (epoch, batches done, the batch's sample indices); raise at ``kill_at``."""

    def after_batch(epoch, batch, indices):
        seq.append((epoch, batch, np.asarray(indices).tolist()))
        if (epoch, batch) == kill_at:
            raise exception()

    return after_batch


def same_model(path_a, path_b):
    import keras

    a, b = keras.saving.load_model(path_a), keras.saving.load_model(path_b)
    weights = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    optimizer = [np.asarray(v) for v in a.optimizer.variables], [np.asarray(v) for v in b.optimizer.variables]
    return (
        weights
        and len(a.get_weights()) == len(b.get_weights())
        and all(np.array_equal(x, y) for x, y in zip(*optimizer))
    )


def without_timing(history):
    return [
        {k: v for k, v in e.items() if k not in ("seconds", "cpu_seconds", "samples_per_second")}
        for e in history
    ]


@pytest.mark.any_backend
def test_resume_mid_epoch_is_the_uninterrupted_run(hdf5_store, tmp_path):
    reference_seq, killed_seq, resumed_seq = [], [], []
    reference = train(
        hdf5_store, **RUN, after_batch=recorder(reference_seq), model_path=tmp_path / "reference.keras"
    )
    ckpt = tmp_path / "ckpt"
    with pytest.raises(
        KeyboardInterrupt
    ):  # killed after batch 5 of epoch 2; the last checkpoint is at batch 3
        train(
            hdf5_store,
            **RUN,
            checkpoint_dir=ckpt,
            checkpoint_every=3,
            after_batch=recorder(killed_seq, kill_at=(1, 5)),
        )
    state = json.loads((ckpt / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["optimizer_iterations"]) == (1, 3, 12)
    assert (
        state["config"]["seed"] == 5 and len(state["history"]) == 1 and state["rng"] == []
    )  # the LeNets draw no random numbers
    assert sorted(p.name for p in ckpt.iterdir()) == ["lock", state["model_file"], "state.json"]

    resumed = train(
        hdf5_store,
        **RUN,
        checkpoint_dir=ckpt,
        checkpoint_every=3,
        resume=True,
        after_batch=recorder(resumed_seq),
        model_path=tmp_path / "resumed.keras",
    )
    assert len(reference_seq) == 18 and resumed_seq[0][:2] == (1, 4)  # epoch 2 from its 4th batch
    assert killed_seq[: 9 + 3] + resumed_seq == reference_seq  # the same batches, in the same order
    assert same_model(tmp_path / "reference.keras", tmp_path / "resumed.keras")  # bit for bit, optimizer too
    assert without_timing(resumed["history"]) == without_timing(reference["history"])
    assert resumed["test"] == reference["test"]
    assert resumed["checkpoint"] == {
        "dir": str(ckpt),
        "every": 3,
        "resumed_at": {"epochs_done": 1, "batches_done": 3},
    }

    finished = train(hdf5_store, **RUN, checkpoint_dir=ckpt, resume=True)  # nothing left to train: evaluates
    assert finished["test"] == reference["test"] and finished["checkpoint"]["resumed_at"] == {
        "epochs_done": 2,
        "batches_done": 0,
    }


def test_a_kill_while_writing_a_checkpoint_keeps_the_previous_one(hdf5_store, tmp_path, monkeypatch):
    import ooc.checkpoint

    train(hdf5_store, **RUN, model_path=tmp_path / "reference.keras")
    ckpt = tmp_path / "ckpt"
    real_fsync, calls = ooc.checkpoint._fsync, []

    def killed_in_second_checkpoint(
        path,
    ):  # called for the model file, then for the directory after the commit
        calls.append(path)
        if len(calls) == 3:  # the second checkpoint's model file is being flushed; a half state.json.tmp
            (ckpt / "state.json.tmp").write_text('{"half": ')
            raise KeyboardInterrupt
        real_fsync(path)

    monkeypatch.setattr(ooc.checkpoint, "_fsync", killed_in_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(hdf5_store, **RUN, checkpoint_dir=ckpt, checkpoint_every=3)
    monkeypatch.setattr(ooc.checkpoint, "_fsync", real_fsync)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "lock",
        "model-000001.keras",
        "state.json",
        "state.json.tmp",
    ]  # the second model file was killed under its temporary name, and removed
    assert json.loads((ckpt / "state.json").read_text())["batch"] == 3
    lines = []
    resumed = train(
        hdf5_store,
        **{**RUN, "log": lines.append},
        checkpoint_dir=ckpt,
        checkpoint_every=3,
        resume=True,
        model_path=tmp_path / "resumed.keras",
    )
    assert f"resuming from {ckpt}: epoch 1/2 after 3 of its 9 batches" in lines
    assert same_model(tmp_path / "reference.keras", tmp_path / "resumed.keras")
    assert resumed["history"][-1]["epoch"] == 2
    assert [p.name for p in ckpt.glob("model-*.keras")] == [
        json.loads((ckpt / "state.json").read_text())["model_file"]
    ]


@pytest.mark.any_backend
def test_fit_resumes_at_epoch_ends(hdf5_store, tmp_path):
    fit = dict(RUN, loop="fit")
    reference_seq, killed_seq, resumed_seq = [], [], []
    reference = train(
        hdf5_store, **fit, after_batch=recorder(reference_seq), model_path=tmp_path / "reference.keras"
    )
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        train(
            hdf5_store,
            **fit,
            checkpoint_dir=ckpt,
            after_batch=recorder(killed_seq, kill_at=(1, 5), exception=Killed),
        )
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 1
    resumed = train(
        hdf5_store,
        **fit,
        checkpoint_dir=ckpt,
        resume=True,
        after_batch=recorder(resumed_seq),
        model_path=tmp_path / "resumed.keras",
    )
    assert killed_seq[:9] + resumed_seq == reference_seq and len(reference_seq) == 18
    assert same_model(tmp_path / "reference.keras", tmp_path / "resumed.keras")
    assert without_timing(resumed["history"]) == without_timing(reference["history"])

    # and mid-epoch: a checkpoint every 3 batches, a kill after batch 5 of epoch 2 (its checkpoint: batch 3)
    mid_seq, mid_resumed_seq = [], []
    with pytest.raises(Killed):
        train(
            hdf5_store,
            **fit,
            checkpoint_dir=tmp_path / "mid",
            checkpoint_every=3,
            after_batch=recorder(mid_seq, kill_at=(1, 5), exception=Killed),
        )
    state = json.loads((tmp_path / "mid" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (1, 3)
    train(
        hdf5_store,
        **fit,
        checkpoint_dir=tmp_path / "mid",
        checkpoint_every=3,
        resume=True,
        after_batch=recorder(mid_resumed_seq),
        model_path=tmp_path / "mid.keras",
    )
    assert mid_seq[: 9 + 3] + mid_resumed_seq == reference_seq  # the same batches, none twice
    assert same_model(tmp_path / "reference.keras", tmp_path / "mid.keras")


@pytest.mark.any_backend
def test_random_generator_state_survives_a_checkpoint(tmp_path):
    """The LeNets have none; a model with dropout would: model.save does not keep it, state.json does."""
    import keras

    from ooc.checkpoint import restore_rng, rng_state

    def make():
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(2)])
        net.compile("sgd", "mse")
        return net

    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)
    net = make()
    net.train_on_batch(x, y)
    net.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert rng_state(loaded) != rng_state(net) == [[1, 1]]  # reset by the round trip
    restore_rng(loaded, rng_state(net))
    net.train_on_batch(x, y), loaded.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), loaded.get_weights()))


def raises(error_class, message, function, *args, **kwargs):
    with pytest.raises(error_class) as error:
        function(*args, **kwargs)
    assert str(error.value) == message


def test_resume_refuses_another_config_or_no_checkpoint(hdf5_store, tmp_path):
    ckpt = tmp_path / "ckpt"
    raises(
        CheckpointError,
        f"nothing to resume: {ckpt} holds no checkpoint (state.json); drop --resume to start the run afresh",
        train,
        hdf5_store,
        **RUN,
        checkpoint_dir=ckpt,
        resume=True,
    )
    one_epoch = dict(RUN, epochs=1, checkpoint_dir=ckpt)
    train(hdf5_store, **one_epoch)
    raises(
        CheckpointError,
        f"cannot resume from {ckpt}: it was made with --epochs 1, not --epochs 2; pass --epochs 1 or drop "
        "--resume to start afresh",
        train,
        hdf5_store,
        **RUN,
        checkpoint_dir=ckpt,
        resume=True,
    )
    raises(
        CheckpointError,
        f"cannot resume from {ckpt}: it was made with --learning-rate 0.002, not --learning-rate 0.001; pass "
        "--learning-rate 0.002 or drop --resume to start afresh",
        train,
        hdf5_store,
        **one_epoch,
        learning_rate=1e-3,
        resume=True,
    )
    raises(
        CheckpointError,
        f"cannot resume from {ckpt}: it was made with --shuffle chunk, not --shuffle global; pass --shuffle "
        "chunk or drop --resume to start afresh",
        train,
        hdf5_store,
        **one_epoch,
        shuffle="global",
        resume=True,
    )
    arrays = {s: hdf5_store.read(s, np.arange(hdf5_store.num_samples(s))) for s in ("train", "test")}
    memory = ooc.MemoryStore({s: (x[..., 0], y) for s, (x, y) in arrays.items()})
    raises(
        CheckpointError,
        f"cannot resume from {ckpt}: it was made with --store hdf5, not --store memory; pass --store hdf5 or "
        "drop --resume to start afresh",
        train,
        memory,
        **one_epoch,
        resume=True,
    )
    (ckpt / "state.json").write_text("{")
    raises(
        CheckpointError,
        f"{ckpt / 'state.json'} is not a readable checkpoint (JSONDecodeError: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)); drop --resume to start the run afresh",
        train,
        hdf5_store,
        **one_epoch,
        resume=True,
    )


def test_option_errors_name_the_option(hdf5_store, tmp_path):
    cases = [
        (
            dict(checkpoint_every=-1),
            "--checkpoint-every must be a number of batches (0: at epoch ends only), got -1",
        ),
        (dict(val_fraction=1.0), "--val-fraction must be in [0, 1), got 1.0"),
        (dict(val_fraction=-0.1), "--val-fraction must be in [0, 1), got -0.1"),
        (dict(learning_rate=0.0), "--learning-rate must be a finite number above 0, e.g. 2e-3, got 0.0"),
        (dict(on_error="ignore"), "unknown --on-error 'ignore': choose one of raise, skip"),
        (dict(shuffle="random"), "unknown --shuffle 'random': choose one of chunk, global, none"),
        (
            dict(model="vgg"),
            "unknown --model 'vgg': choose one of lenet, lenet-wide, mlp, a .keras file or module:function",
        ),
        (
            dict(loop="fit", on_error="skip"),
            "--on-error skip needs --loop train_on_batch: model.fit cannot drop unreadable samples from a "
            "batch",
        ),
        (dict(resume=True), "--resume needs a --checkpoint-dir to resume from"),
        (
            dict(model_path=tmp_path / "m.h5"),
            f"--model-out must end in .keras (the Keras format), got {tmp_path / 'm.h5'}",
        ),
        (
            dict(report_path=tmp_path),
            f"--report {tmp_path} is a directory; pass a file name, e.g. {tmp_path / 'report.json'}",
        ),
    ]
    for options, message in cases:
        raises(OptionError, message, train, hdf5_store, **{**RUN, **options})
    (tmp_path / "file").write_text("")
    raises(
        CheckpointError,
        f"--checkpoint-dir {tmp_path / 'file'} is a file; pass a directory",
        train,
        hdf5_store,
        **RUN,
        checkpoint_dir=tmp_path / "file",
    )


def test_skip_drops_only_the_unreadable_samples():
    x = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2)
    store = ooc.MemoryStore({"train": (x, np.arange(10))})
    original = store._read_sorted

    def broken(split, indices, state):
        if 3 in indices or 7 in indices:
            raise CorruptStoreError(f"sample {3 if 3 in indices else 7} is broken")
        return original(split, indices, state)

    store._read_sorted = broken
    indices, got_x, got_y, skipped, first = batch_reader(store, "skip")("train", np.array([7, 1, 3, 5]))
    assert (
        indices.tolist() == [7, 1, 3, 5]
        and got_y.tolist() == [1, 5]
        and skipped == 2
        and first == "sample 7 is broken"
    )
    assert np.array_equal(got_x, store.read("train", [1, 5])[0])
    with pytest.raises(CorruptStoreError, match="^sample 3 is broken$"):
        batch_reader(store, "raise")("train", np.array([1, 3]))


def test_on_error_skip_trains_past_a_corrupt_csv_file(tmp_path):
    ooc.convert(tmp_path / "csv", format="csv", source=MNIST, limit=200)
    store = ooc.open_store(tmp_path / "csv")
    (tmp_path / "csv" / "train" / "013.csv").write_text("garbage\n")
    with pytest.raises(CorruptStoreError) as error:
        store.read("train", [12])
    run = dict(epochs=2, batch_size=32, seed=1, val_fraction=0)
    with pytest.raises(CorruptStoreError):
        train(store, **run, **QUIET)
    lines = []
    report = train(store, **run, on_error="skip", log=lines.append)
    for epoch in (1, 2):
        assert f"epoch {epoch}: skipped 1 unreadable samples (first: {error.value})" in lines
    assert [e["skipped"] for e in report["history"]] == [1, 1]
    assert all(
        round(e["samples_per_second"] * e["seconds"]) == 199 for e in report["history"]
    )  # the rest of the batch trained
    assert report["config"]["on_error"] == "skip" and report["test"]["skipped"] == 0


def _ooc(*args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "ooc", *map(str, args)], cwd=cwd, capture_output=True, text=True, **kwargs
    )


@pytest.mark.any_backend
def test_cli_sigkill_then_resume(tmp_path):
    assert _ooc("convert", "--format", "npy", "--source", MNIST, "--limit", 600, cwd=tmp_path).returncode == 0
    args = ["train", "--store", "npy", "--epochs", 2, "--batch-size", 32, "--checkpoint-every", 3]
    full = _ooc(
        *args,
        "--checkpoint-dir",
        "ck-full",
        "--report",
        "full.json",
        "--model-out",
        "full.keras",
        cwd=tmp_path,
    )
    assert full.returncode == 0, full.stderr
    killed = subprocess.Popen(
        [sys.executable, "-m", "ooc", *map(str, args), "--report", "resumed.json"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = tmp_path / "data" / "checkpoints" / "npy-lenet" / "state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL and state.exists() and not (tmp_path / "resumed.json").exists()
    resumed = _ooc(*args, "--resume", "--report", "resumed.json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from data/checkpoints/npy-lenet: epoch " in resumed.stdout
    full_report, resumed_report = (
        json.loads((tmp_path / name).read_text()) for name in ("full.json", "resumed.json")
    )
    assert resumed_report["checkpoint"]["resumed_at"]["epochs_done"] < 2  # killed while training, not after
    assert resumed_report["test"]["accuracy"] == full_report["test"]["accuracy"]
    assert resumed_report["test"] == full_report["test"]
    assert without_timing(resumed_report["history"]) == without_timing(full_report["history"])


def test_cli_option_errors(tmp_path):
    assert _ooc("convert", "--format", "npy", "--source", MNIST, "--limit", 100, cwd=tmp_path).returncode == 0

    def error(*args):
        result = _ooc("train", "--store", "npy", *args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        return result.stderr

    assert (
        error("--path", "data/npy/ooc.json")
        == "ooc: error: --path data/npy/ooc.json is a file; pass the store directory (what `ooc convert "
        "--out` wrote)\n"
    )
    assert (
        error("--checkpoint-every", -2)
        == "ooc: error: --checkpoint-every must be a number of batches (0: at epoch ends only), got -2\n"
    )
    assert (
        error("--resume")
        == "ooc: error: nothing to resume: data/checkpoints/npy-lenet holds no checkpoint (state.json); drop "
        "--resume to start the run afresh\n"
    )


def test_two_runs_cannot_share_a_checkpoint_directory(tmp_path):
    from ooc.checkpoint import Checkpointer

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ooc.checkpoint import Checkpointer; "
            f"c = Checkpointer({str(tmp_path / 'ck')!r}, {{}}, every=0); print('locked', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            CheckpointError,
            match=rf"^another ooc train is checkpointing into {tmp_path / 'ck'}; wait for it to end, or pass "
            r"another --checkpoint-dir$",
        ):
            Checkpointer(tmp_path / "ck", {}, every=0)
    finally:
        holder.kill()
        holder.wait()
    Checkpointer(tmp_path / "ck", {}, every=0)  # free again once the other run has ended


def test_resume_refuses_a_store_converted_again(tmp_path):
    path, ckpt = tmp_path / "zarr", tmp_path / "ckpt"
    ooc.convert(path, format="zarr", source=MNIST, limit=300, chunk_size=64)
    train(ooc.open_store(path), **dict(RUN, epochs=1), checkpoint_dir=ckpt)
    ooc.convert(
        path, format="zarr", source=MNIST, limit=300, chunk_size=32, overwrite=True
    )  # same count, other chunks: another plan
    raises(
        CheckpointError,
        f"cannot resume from {ckpt}: {path} was re-converted since (its options changed); drop --resume to "
        "start afresh",
        train,
        ooc.open_store(path),
        **dict(RUN, epochs=1),
        checkpoint_dir=ckpt,
        resume=True,
    )


def stochastic_net(input_shape, task):
    """A user's model with random and stateful layers: Dropout draws numbers every step, BatchNorm
    keeps moving statistics; --resume must end bit for bit where an uninterrupted run ends."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(task.outputs, activation=task.activation),
        ],
        name="stochastic",
    )


@pytest.mark.any_backend
def test_any_model_resumes_bit_for_bit(hdf5_store, tmp_path):
    run = {**RUN, "model": stochastic_net}
    reference = train(hdf5_store, **run, model_path=tmp_path / "reference.keras")
    with pytest.raises(KeyboardInterrupt):
        train(
            hdf5_store,
            **run,
            checkpoint_dir=tmp_path / "ckpt",
            checkpoint_every=3,
            after_batch=recorder([], kill_at=(1, 5)),
        )
    assert (
        json.loads((tmp_path / "ckpt" / "state.json").read_text())["rng"] != []
    )  # Dropout's generator is saved
    resumed = train(
        hdf5_store,
        **run,
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=3,
        resume=True,
        model_path=tmp_path / "resumed.keras",
    )
    assert same_model(tmp_path / "reference.keras", tmp_path / "resumed.keras")
    assert resumed["test"] == reference["test"] and resumed["model"]["name"] == "stochastic"
