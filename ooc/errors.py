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


class FormatMismatchError(OocError, ValueError):
    """A store of another format than the caller asked for."""


class CorruptStoreError(OocError, ValueError):
    """A store whose files do not match its manifest (wrong size, wrong value count, unreadable)."""
