"""Training checkpoints: what ``ooc train --resume`` needs to continue a killed run exactly.

A checkpoint directory holds

- ``model-NNNNNN.keras``: the model and its optimizer state, by ``model.save`` (Adam's moments and
  ``iterations``, which is also the step of the learning-rate schedule);
- ``state.json``: the run's config, its position (the epoch in progress and the batches of it done),
  the epoch's running loss/accuracy sums and skip count, the history so far, the state of the
  model's random generators, and the name of the model file that goes with it.

The batch order needs no saved state: an epoch's plan is a function of (seed, epoch), so a resumed
run draws it again and starts at the saved batch; the validation split is a function of the seed.
The LeNets draw no random numbers while training (no dropout or noise layers): their generator
state is an empty list, saved anyway so a model that gains dropout resumes exactly too.

Writes are ordered so that a kill at any moment leaves a usable checkpoint: the model goes to a new
file, then ``state.json`` is replaced atomically (temporary file, fsync, ``os.replace``) and only
then is the previous model file deleted. ``state.json`` is the commit point.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shlex
import shutil
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ooc.errors import CheckpointError, WriteError
from ooc.remote import is_url

STATE_NAME = "state.json"
CHECKPOINT_VERSION = 1

# The config a checkpoint must share with the run resuming it, and the option that sets each entry.
OPTIONS = {
    "format": "--store",
    "store": "--path",
    "model": "--model",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "val_fraction": "--val-fraction",
    "learning_rate": "--learning-rate",
    "lr_schedule": "--lr-schedule",
    "shuffle": "--shuffle",
    "loop": "--loop",
}


@dataclass
class Progress:
    """Where a run is: ``epoch`` in progress (0-based, = epochs done), ``batch`` batches of it done,
    the epoch's running sums, and the records of the finished epochs."""

    epoch: int = 0
    batch: int = 0
    seen: int = 0
    loss_sum: float = 0.0
    correct_sum: float = 0.0
    skipped: int = 0
    first_skip: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def store_identity(store) -> dict[str, Any]:
    """The store part of a checkpoint's config: format, absolute path, train samples, options, source checksum."""

    path = store.path if is_url(store.path) else Path(store.path)  # a URL stays as it is
    return {
        "format": store.format_name,
        "store": str(path.resolve()) if isinstance(path, Path) and path.is_dir() else str(path),
        "train_samples": store.num_samples("train"),
        "store_options": store.options,
        "source_sha256": store.manifest.get("source", {}).get("sha256"),
    }


class Checkpointer:
    """Writes one run's checkpoints into ``directory``: every ``every`` batches (0: at epoch ends only)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        config: dict[str, Any],
        *,
        every: int,
        resume: bool = False,
        resume_command: str | None = None,
    ):
        self.directory = Path(directory)
        self.config = config
        self.every = every
        self.resume_command = resume_command or "run it again with resume=True"
        self.has_own = resume  # whether state.json is this run's (resumed from, or written since)
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"--checkpoint-dir {self.directory} is a file; pass a directory")
        self._lock = _lock(self.directory)
        try:  # never reuse the name of the model file the current state.json names
            self._sequence = int(json.loads((self.directory / STATE_NAME).read_text())["sequence"])
        except (OSError, ValueError, KeyError, TypeError):
            self._sequence = 0

    def exists(self) -> bool:
        return (self.directory / STATE_NAME).is_file()

    def due(self, batch: int, batches_per_epoch: int) -> bool:
        """Whether to checkpoint after ``batch`` batches of an epoch (its end has its own checkpoint)."""
        return bool(self.every) and batch % self.every == 0 and batch < batches_per_epoch

    def save(self, net, progress: Progress) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        model_file = f"model-{self._sequence:06d}.keras"
        save_model(net, self.directory / model_file, what="the checkpoint", kept=self.kept)
        state = {
            "ooc_checkpoint_version": CHECKPOINT_VERSION,
            "sequence": self._sequence,
            "model_file": model_file,
            "config": self.config,
            "optimizer_iterations": int(net.optimizer.iterations.numpy()),
            "rng": rng_state(net),
            "backend_rng": backend_rng_state(),
            **asdict(progress),
        }
        tmp, had_own = self.directory / (STATE_NAME + ".tmp"), self.has_own
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            self.has_own = True  # before the rename: a Ctrl-C right after it must find it ours
            os.replace(tmp, self.directory / STATE_NAME)
        except OSError as e:  # the previous state.json, and its model, stay the checkpoint
            self.has_own = had_own
            tmp.unlink(missing_ok=True)
            (self.directory / model_file).unlink(missing_ok=True)
            raise write_error(tmp.with_suffix(""), "the checkpoint", e, self.kept()) from None
        _fsync(self.directory)
        for old in self.directory.glob("model-*.keras"):
            if old.name != model_file:
                old.unlink(missing_ok=True)

    def kept(self) -> str:
        """What a stopped run leaves: where its last checkpoint is and the command that resumes it."""
        state = {}
        if self.has_own:
            try:
                state = json.loads((self.directory / STATE_NAME).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        if not state:
            return f"no checkpoint of this run was written yet ({self.directory}); run it again to start over"
        epochs = self.config.get("epochs")
        where = (
            f"epoch {state.get('epoch', 0) + 1} of {epochs}, after {state['batch']} "
            + ("batch" if state["batch"] == 1 else "batches")
            if state.get("batch")
            else f"{state.get('epoch', 0)} of {epochs} epochs done"
        )
        return (
            f"the last checkpoint ({where}) is kept in {self.directory}: resume with `{self.resume_command}`"
        )

    def load(self):
        """The checkpointed model (compiled, optimizer state restored) and the run's ``Progress``."""
        import keras

        path = self.directory / STATE_NAME
        if not path.is_file():
            raise CheckpointError(
                f"nothing to resume: {self.directory} holds no checkpoint ({STATE_NAME}); drop --resume to "
                "start the run afresh"
            )
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            version, model_file, saved = state["ooc_checkpoint_version"], state["model_file"], state["config"]
            progress = Progress(**{f.name: state[f.name] for f in fields(Progress)})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); drop --resume to start the "
                "run afresh"
            ) from None
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint version {version!r}; this ooc resumes version {CHECKPOINT_VERSION}: "
                "drop --resume to start the run afresh"
            )
        self._check_config(saved)
        model_path = self.directory / model_file
        try:
            net = keras.saving.load_model(model_path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"{model_path}: cannot load the checkpoint's model ({type(e).__name__}: {e}); drop --resume "
                "to start the run afresh"
            ) from None
        if int(net.optimizer.iterations.numpy()) != state.get("optimizer_iterations"):
            raise CheckpointError(
                f"{model_path} holds an optimizer at step {int(net.optimizer.iterations.numpy())}, {path} "
                f"says {state.get('optimizer_iterations')}; drop --resume to start the run afresh"
            )
        restore_rng(net, state.get("rng", []))
        restore_backend_rng(state.get("backend_rng"))
        return net, progress

    def _check_config(self, saved: dict[str, Any]) -> None:
        where = f"cannot resume from {self.directory}"
        for key, option in OPTIONS.items():
            if saved.get(key) != self.config.get(key):
                was = f"{option} {saved.get(key)}"
                raise CheckpointError(
                    f"{where}: it was made with {was}, not {option} {self.config.get(key)}; pass {was} or "
                    "drop --resume to start afresh"
                )
        if saved.get("train_samples") != self.config.get("train_samples"):
            raise CheckpointError(
                f"{where}: it was made on {saved.get('train_samples')} train samples, {self.config['store']} "
                f"now has {self.config.get('train_samples')}; drop --resume to start afresh"
            )
        for key, what in (("store_options", "options"), ("source_sha256", "source (sha256)")):
            if key in saved and saved[key] != self.config.get(key):
                raise CheckpointError(
                    f"{where}: {self.config['store']} was re-converted since (its {what} changed); drop "
                    "--resume to start afresh"
                )


def save_model(net, path: Path, *, what: str, kept) -> None:
    """``net.save`` to a temporary name beside ``path``, then ``os.replace``: a failed or killed write
    never leaves a half-written model under the final name. ``kept()`` says what is left instead."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")  # Keras wants the .keras suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        net.save(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, what, e, kept()) from None
        raise


def free_space(directory: Path) -> str:
    """The free space of the filesystem holding ``directory``, for humans."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:,.0f} {unit} free" if unit == "bytes" else f"{free:,.1f} {unit} free"
        free /= 1024
    raise AssertionError("unreachable")


def write_error(path: Path, what: str, error: OSError, kept: str) -> WriteError:
    """One line: the file, what it was, why it failed (disk full: the free space), what is kept."""
    why = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        why += f", {free_space(path.parent)} in {path.parent}"
    return WriteError(f"{path}: cannot write {what} ({why}); {kept}")


def resume_command(argv: list[str]) -> str:
    """The command line that resumes ``ooc train`` run as ``argv`` (its arguments)."""
    return shlex.join(["ooc", *argv, *([] if "--resume" in argv else ["--resume"])])


def rng_state(net) -> list[list[int]]:
    """The state of every random generator of the model's layers (e.g. dropout's), in layer order."""
    return [np.asarray(v).tolist() for v in net.variables if "seed_generator" in v.path]


def backend_rng_state() -> str | None:
    """PyTorch's global generator, base64: on that backend an unseeded Dropout draws from it, not
    from a seed-generator variable of the model."""
    import keras

    if keras.backend.backend() != "torch":
        return None
    import torch

    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")


def reseed_backend_for_epoch(seed: int | None, epoch: int) -> None:
    """On PyTorch, Keras' fit draws from the global generator whenever it starts an epoch's data
    loader, so a fit resumed mid-run draws other numbers than one never stopped; reseeding it from
    (seed, epoch) at each epoch's start gives both the same dropout masks from there on."""
    import keras

    if seed is None or keras.backend.backend() != "torch":
        return
    import torch

    torch.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def restore_backend_rng(state: str | None) -> None:
    if state is None:
        return
    import torch

    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state), dtype=np.uint8).copy()))


def restore_rng(net, state: list[list[int]]) -> None:
    generators = [v for v in net.variables if "seed_generator" in v.path]
    if len(generators) != len(state):
        raise CheckpointError(
            f"the checkpoint holds {len(state)} random generator states, the model has {len(generators)}; "
            "drop --resume to start the run afresh"
        )
    for variable, value in zip(generators, state):
        variable.assign(np.asarray(value, dtype=variable.dtype))


_HELD_LOCKS: dict[str, int] = {}


def _lock(directory: Path) -> int:
    """An exclusive lock on the directory for as long as this process runs: two runs checkpointing
    into one directory would replace each other's state and model files. Runs one after the other in
    one process (a run, then its --resume) share the lock."""
    import fcntl

    key = str(directory.resolve())
    if key in _HELD_LOCKS:
        return _HELD_LOCKS[key]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(
            f"--checkpoint-dir {directory}: cannot use it ({e.strerror}); pass another --checkpoint-dir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(
            f"another ooc train is checkpointing into {directory}; wait for it to end, or pass another "
            "--checkpoint-dir"
        ) from None
    _HELD_LOCKS[key] = fd
    return fd


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') bytes to the disk, so a rename after it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
