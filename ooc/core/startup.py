"""Importing TensorFlow without its native start-up logs on the terminal."""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow_quietly(needed: bool = False) -> None:
    """TensorFlow's native start-up logs (oneDNN, CUDA probing) reach fd 2 before any log level
    applies; hide them so errors stay one line, but replay them if the import itself fails. Under
    another Keras backend TensorFlow is imported only where it is ``needed`` (TFRecord)."""
    if not needed and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device probing logs now, not mid-run
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
