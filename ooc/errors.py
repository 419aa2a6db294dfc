"""The project's own errors.

Each also inherits the builtin a caller would already catch, so ``except FileNotFoundError`` keeps
working. The CLI prints ``str(error)`` as one line: messages name the file or option that was wrong
and say how to fix it.
"""


class OocError(Exception):
    """Base of every error ooc raises on purpose (bad input, bad store, bad option)."""


class OptionError(OocError, ValueError):
    """An option value that is not allowed."""


class UnknownFormatError(OptionError):
    """A format name that is not in ``ooc.formats.FORMATS``."""


class SourceError(OocError, ValueError):
    """A dataset source that is missing, unreadable or not shaped like MNIST."""


class StoreNotFoundError(OocError, FileNotFoundError):
    """A path that holds no (complete) ooc store."""


class StoreExistsError(OocError, FileExistsError):
    """Output that already exists and may not be replaced."""


class StoreBusyError(OocError, BlockingIOError):
    """Output that another running ``ooc convert`` is writing (it holds the directory's lock)."""


class FormatMismatchError(OocError, ValueError):
    """A store of another format than the caller asked for."""


class CorruptStoreError(OocError, ValueError):
    """A store whose files do not match its manifest (wrong size, wrong value count, unreadable).

    Raised while reading samples, it carries ``split`` and ``indices`` (the samples it concerns), so
    a caller may skip them."""

    split: str | None = None
    indices = None


class StoreRewrittenError(OocError, RuntimeError):
    """A store converted again (``ooc convert --overwrite``) while it was open for reading: its batches
    would mix two stores. Not a ``CorruptStoreError``: no sample may be skipped, the reader starts again."""


class CheckpointError(OocError, ValueError):
    """A training checkpoint that is missing, unreadable, or made with other options than the run resuming it."""


class WriteError(OocError, OSError):
    """A store file that could not be written (disk full, no permission): the message names the file;
    what was committed is kept, and running the same conversion again resumes it."""


class ConversionInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``ooc.convert``. Still a KeyboardInterrupt (callers that stop on one
    still do); its message says how far the conversion got and how to resume it."""


class TrainingDiverged(OocError, FloatingPointError):
    """A training loss that is not finite (nan, inf): the run stops before checkpointing the weights
    that produced it, so the last checkpoint stays a good one."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``ooc.train.train``. Still a KeyboardInterrupt; its message says where
    the last checkpoint is and how to resume from it."""
